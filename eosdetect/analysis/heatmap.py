"""Pictures of a whole-slide count: the density heatmap."""

from __future__ import annotations

import math

import numpy as np

from eosdetect.models.slides import SlideCount


def density_heatmap(sc: SlideCount, *, bin_um: float, class_name: str, peak_box=None) -> np.ndarray:
    """RGB picture: the thumbnail with cells per mm² in square bins of
    ``bin_um`` micrometres laid over it, a colour bar, and the peak HPF framed."""
    import io

    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from PIL import Image

    rows, cols = sc.shape
    bin_px = max(1.0, bin_um / sc.pixel_size_um)
    gr, gc = int(math.ceil(rows / bin_px)), int(math.ceil(cols / bin_px))
    hist = np.zeros((gr, gc))
    xy = sc.detections.xy
    if len(xy):
        r = np.clip((xy[:, 1] // bin_px).astype(int), 0, gr - 1)
        c = np.clip((xy[:, 0] // bin_px).astype(int), 0, gc - 1)
        np.add.at(hist, (r, c), 1)
    density = hist / (bin_um / 1000.0) ** 2
    th, tw = sc.thumbnail.shape[:2]
    # bins that are mostly glass stay see-through; tissue without cells shows as zero
    if sc.tissue is not None:
        rr = np.minimum((np.arange(th) * sc.thumb_factor // bin_px).astype(int), gr - 1)
        cc = np.minimum((np.arange(tw) * sc.thumb_factor // bin_px).astype(int), gc - 1)
        frac = np.zeros((gr, gc))
        np.add.at(frac, (rr[:, None], cc[None, :]), sc.tissue.astype(float))
        px_per_bin = np.zeros((gr, gc))
        np.add.at(px_per_bin, (rr[:, None], cc[None, :]), 1.0)
        glass = frac < 0.05 * np.maximum(px_per_bin, 1)
    else:
        glass = np.zeros((gr, gc), bool)
    fig_w = 9.0
    fig = Figure(figsize=(fig_w, fig_w * th / tw * 0.95 + 0.6), dpi=110)  # no pyplot: the caller's backend is left alone
    ax = fig.subplots()
    ax.imshow(sc.thumbnail, extent=(0, cols, rows, 0))
    shown = np.ma.masked_where(glass & (hist == 0), density)
    im = ax.imshow(shown, extent=(0, gc * bin_px, gr * bin_px, 0), cmap="viridis", alpha=0.6,
                   interpolation="nearest", vmin=0)
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    if peak_box is not None:
        x0, y0, x1, y1 = peak_box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#ff3b30", linewidth=2))
        ax.text(x0, y0, " peak HPF", color="#ff3b30", va="bottom", fontsize=9, fontweight="bold")
    ax.set_axis_off()
    cb = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.01)
    cb.set_label(f"{class_name}s per mm² (bins of {bin_um:.0f} µm)")
    ax.set_title(f"{len(xy)} {class_name}s in {sc.tissue_area_mm2:.3g} mm² of tissue", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
