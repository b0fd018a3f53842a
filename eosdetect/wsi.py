"""Whole-slide images: counted block by block in bounded memory.

A slide (pyramidal TIFF, SVS, NDPI... or any TIFF too large to read whole) is
never loaded whole. :class:`SlideReader` reads regions through tifffile's
Zarr view, which decodes only the TIFF tiles a region touches (OpenSlide is
used instead, where its Python binding is installed, for formats tifffile
cannot read). :func:`count_slide`:

1. reads a thumbnail from a low pyramid level and finds tissue there
   (:func:`tissue_mask`: stained or dark pixels; bare glass is skipped);
2. cuts the slide into square *core* blocks (``block_px`` pixels at the
   model's scale) and skips those without tissue;
3. reads each block with a *halo* around it (the U-Net's context plus one and
   a half cell diameters), runs the ordinary :func:`eosdetect.predict.detect`
   on it, and keeps only the cells whose centre lies in the core. The cores
   tile the slide without overlap, and a cell near a core's edge lies whole
   inside the halo, so every cell is counted exactly once: by the block that
   holds its centre;
4. writes the usual outputs, an overlay of the thumbnail with the cells and
   the densest high-power field, and a density heatmap.

Block origins are aligned to the resize ratio, so each block sees exactly
the model-scale pixels a whole-image pass would.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .differential import Differential, differential_of
from .errors import EosdetectError, InputError
from .io import MAX_IMAGE_PIXELS, colour_axes, tiff_colour_mode, to_rgb_uint8

#: Formats that are whole-slide images whatever their size.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".mrxs", ".vms", ".qptiff")
#: A pyramidal TIFF above this many pixels is counted as a slide (block by block).
SLIDE_MIN_PIXELS = 64_000_000
THUMB_MAX_SIDE = 2048


def slide_size(path: str | Path) -> tuple[int, int, int] | None:
    """``(rows, cols, levels)`` of a TIFF-like file, or None when tifffile cannot read it."""
    import tifffile

    from .io import named_warnings

    try:
        with named_warnings(path), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            levels = series.levels or [series]
            shape = dict(zip(levels[0].axes, levels[0].shape))
            return int(shape.get("Y", 0)), int(shape.get("X", 0)), len(levels)
    except Exception:  # noqa: BLE001 - not a readable TIFF: read_image reports why
        return None


def is_slide(path: str | Path, min_pixels: int = SLIDE_MIN_PIXELS) -> bool:
    """Whether ``path`` should be counted block by block rather than read whole."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in (".tif", ".tiff"):
        return False
    size = slide_size(path)
    if size is None:
        return False
    rows, cols, levels = size
    return rows * cols > MAX_IMAGE_PIXELS or (levels > 1 and rows * cols > min_pixels)


# --------------------------------------------------------------------------- reading


class SlideReader:
    """Region reads from a (pyramidal) slide, level 0 = full resolution."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.mpp: float | None = None
        self._openslide = None
        try:
            self._open_tifffile()
        except Exception as exc:  # noqa: BLE001
            if not self._open_openslide():
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                hint = "" if self.path.suffix.lower() in (".tif", ".tiff", ".svs") else \
                    " (for this format install OpenSlide and openslide-python)"
                raise InputError(self.path, f"cannot read as a slide: {text}{hint}") from None

    # ------------------------------------------------------------------ backends
    def _open_tifffile(self) -> None:
        import tifffile
        import zarr

        from .io import named_warnings

        with named_warnings(self.path):  # an odd tag is reported naming the slide, once
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
        levels = series.levels or [series]
        self._axes = colour_axes(levels[0].axes, levels[0].shape)
        if "Y" not in self._axes or "X" not in self._axes:
            raise ValueError(f"no image plane in axes {self._axes}")
        group = zarr.open(series.aszarr(), mode="r")
        if hasattr(group, "shape"):
            self._arrays = [group]
        else:
            self._arrays = [group[str(i)] for i in range(len(levels))]
        self.shapes = []
        for a in self._arrays:
            d = dict(zip(self._axes, a.shape))
            self.shapes.append((int(d["Y"]), int(d["X"])))
        self.mpp = _tiff_mpp(self._tif)
        page = self._tif.pages[0]
        self._photometric, self._colormap, self._bits = int(page.photometric), page.colormap, int(page.bitspersample)
        self._white = self._white_value(page)

    def _white_value(self, page) -> int | None:
        """One white for every block of a slide of more than 8 bits (a guess per block would make a
        block of dark tissue brighter than the same tissue beside glass): the bit depth implied by
        the largest value of the smallest pyramid level, or by the file's tags."""
        import tifffile

        from .io import bit_depth_max

        dtype = np.dtype(self._arrays[0].dtype)
        if not np.issubdtype(dtype, np.integer) or dtype.itemsize == 1 or self._colormap is not None:
            return None
        if self._photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            return (1 << self._bits) - 1
        smallest = min(range(len(self.shapes)), key=lambda i: self.shapes[i][0] * self.shapes[i][1])
        if self.shapes[smallest][0] * self.shapes[smallest][1] <= 16e6:
            top = int(np.asarray(self._arrays[smallest]).max())
        else:
            tag = page.tags.get("SMaxSampleValue")
            top = int(np.max(tag.value)) if tag is not None else (1 << self._bits) - 1
        return bit_depth_max(top, dtype)

    def _open_openslide(self) -> bool:
        try:
            import openslide
        except ImportError:
            return False
        try:
            self._openslide = openslide.OpenSlide(str(self.path))
        except Exception:  # noqa: BLE001
            return False
        self.shapes = [(int(h), int(w)) for w, h in self._openslide.level_dimensions]
        mpp = self._openslide.properties.get("openslide.mpp-x")
        self.mpp = float(mpp) if mpp else None
        return True

    # ------------------------------------------------------------------ reads
    @property
    def shape(self) -> tuple[int, int]:
        """Rows and columns at full resolution."""
        return self.shapes[0]

    def read(self, r0: int, r1: int, c0: int, c1: int, level: int = 0) -> np.ndarray:
        """RGB uint8 pixels ``[r0:r1, c0:c1]`` of a level (clipped to the slide)."""
        rows, cols = self.shapes[level]
        r0, c0 = max(0, int(r0)), max(0, int(c0))
        r1, c1 = min(rows, int(r1)), min(cols, int(c1))
        try:
            return self._read(r0, r1, c0, c1, level)
        except (EosdetectError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged tile: this slide fails, the run goes on
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(self.path, f"damaged slide: cannot decode rows {r0}-{r1}, columns {c0}-{c1}"
                             f" (level {level}): {text}") from None

    def _read(self, r0: int, r1: int, c0: int, c1: int, level: int) -> np.ndarray:
        if self._openslide is not None:
            f = self._openslide.level_downsamples[level]
            im = self._openslide.read_region((int(c0 * f), int(r0 * f)), level, (c1 - c0, r1 - r0))
            return to_rgb_uint8(np.asarray(im))
        index = []
        for ax in self._axes:
            index.append(slice(r0, r1) if ax == "Y" else slice(c0, c1) if ax == "X" else
                         slice(None) if ax == "S" else 0)
        arr = np.asarray(self._arrays[level][tuple(index)])
        kept = [ax for ax in self._axes if ax in "YXS"]
        if "S" in kept and kept.index("S") < kept.index("Y"):
            arr = np.moveaxis(arr, kept.index("S"), -1)
        return to_rgb_uint8(tiff_colour_mode(arr, self._photometric, self._colormap, self._bits), self._white)

    def thumbnail(self, max_side: int = THUMB_MAX_SIDE, *, whole_limit: float = 160e6) -> tuple[np.ndarray, float]:
        """A small picture of the whole slide, and level-0 pixels per thumbnail pixel.

        Taken from the smallest pyramid level still ``max_side`` across; a level
        over ``whole_limit`` pixels (a flat TIFF has no smaller one) is read in
        strips of bounded size and shrunk strip by strip."""
        import cv2

        order = sorted(range(len(self.shapes)), key=lambda i: max(self.shapes[i]))
        level = next((i for i in order if max(self.shapes[i]) >= max_side), order[-1])
        rows, cols = self.shapes[level]
        f = min(1.0, max_side / max(rows, cols))
        size = (max(1, round(cols * f)), max(1, round(rows * f)))
        if rows * cols > whole_limit:
            img = self._strip_thumbnail(level, size)
        else:
            img = self.read(0, rows, 0, cols, level)
            if f < 1:
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        return img, self.shape[1] / img.shape[1]

    def _strip_thumbnail(self, level: int, size: tuple[int, int], strip_pixels: float = 32e6) -> np.ndarray:
        """Shrink a level to ``size`` (width, height) reading about ``strip_pixels`` at a time."""
        import cv2

        rows, cols = self.shapes[level]
        out_w, out_h = size
        # whole output rows per strip, so that strips join without seams
        out_rows_per_strip = max(1, int(strip_pixels / cols * out_h / rows))
        parts = []
        for o0 in range(0, out_h, out_rows_per_strip):
            o1 = min(out_h, o0 + out_rows_per_strip)
            r0, r1 = int(o0 * rows / out_h), int(round(o1 * rows / out_h))
            strip = self.read(r0, r1, 0, cols, level)
            parts.append(cv2.resize(strip, (out_w, o1 - o0), interpolation=cv2.INTER_AREA))
        return np.concatenate(parts, axis=0)

    def close(self) -> None:
        if self._openslide is not None:
            self._openslide.close()
        else:
            self._tif.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _tiff_mpp(tif) -> float | None:
    """Micrometres per pixel from an SVS description ("MPP = 0.25") or the
    resolution tags (only when their unit is centimetre or inch)."""
    import re

    page = tif.pages[0]
    desc = page.description or ""
    m = re.search(r"MPP\s*=\s*([0-9.]+)", desc)
    if m:
        return float(m.group(1))
    try:
        unit = int(page.tags["ResolutionUnit"].value)
        num, den = page.tags["XResolution"].value
    except (KeyError, TypeError, ValueError):
        return None
    if not num or not den or unit not in (2, 3):
        return None
    per_unit = num / den  # pixels per inch or per centimetre
    mpp = (25400.0 if unit == 2 else 10000.0) / per_unit
    return mpp if 0.01 <= mpp <= 50 else None  # 72 dpi and such defaults are no pixel size


# --------------------------------------------------------------------------- tissue


def tissue_mask(thumb: np.ndarray, *, min_saturation: float = 0.07, max_gray: int = 215) -> np.ndarray:
    """Where the thumbnail shows stained material rather than bare glass.

    A pixel is tissue when it is coloured (HSV saturation above
    ``min_saturation``) or dark (grey level below ``max_gray``); specks are
    removed and the mask is dilated by two thumbnail pixels, so that cells at
    the tissue's edge are not cut off.
    """
    import cv2
    from scipy import ndimage as ndi

    rgb = thumb.astype(np.float32)
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    sat = (mx - mn) / np.maximum(mx, 1.0)
    gray = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY)
    mask = (sat > min_saturation) | (gray < max_gray)
    mask = ndi.binary_opening(mask, iterations=1)
    return ndi.binary_dilation(mask, iterations=2)


# --------------------------------------------------------------------------- counting


@dataclass
class SlideCount:
    """What :func:`count_slide` found."""

    detections: object  # Detections, level-0 pixels
    candidates: int
    shape: tuple[int, int]
    pixel_size_um: float
    pixel_size_source: str
    tissue_area_mm2: float
    blocks: int
    blocks_with_tissue: int
    thumbnail: np.ndarray
    thumb_factor: float
    seconds: float
    tissue: np.ndarray | None = None  # the tissue mask, at thumbnail size
    gains: np.ndarray | None = None  # the helper's white balance (slide_gains), when it has one
    #: The white-cell differential of the candidates counted (multi-class helpers; None otherwise).
    differential: Differential | None = None


def block_geometry(model, pixel_size_um: float, block_px: int) -> tuple[int, int]:
    """``(core, halo)`` in slide pixels for a model and pixel size.

    Both are multiples of the resize step times the U-Net's alignment (its
    pooling grid), so every block sees the model-scale pixels, and the
    pooling phase, of a whole-image pass: the probability maps agree. The
    halo holds the U-Net's context and one and a half cell diameters: a cell
    whose centre is in the core lies whole inside its block."""
    cfg = model.config
    scale = cfg.scale_for(pixel_size_um)
    inv = 1 / scale
    step = max(1, round(inv)) if abs(inv - round(inv)) < 1e-6 else 1  # exact only for whole-number ratios
    unit = step * cfg.align
    core = max(unit, int(round(block_px / scale)) // unit * unit)
    halo_px = cfg.tile_margin() / scale + 1.5 * cfg.cell_diameter_um / cfg.input_pixel_size(pixel_size_um)
    halo = int(math.ceil(halo_px / unit) * unit)
    return core, halo


def count_slide(model, path, *, pixel_size_um: float | None = None, thresholds=None, block_px: int = 1024,
                progress=None) -> SlideCount:
    """Count the cells of a whole slide block by block (see the module docstring).

    ``pixel_size_um``: the slide's micrometres per pixel; default the one in
    its metadata, else the model's training pixel size. ``progress`` is
    called with ``(blocks done, blocks to do)``.
    """
    from .postprocess import Detections
    from .predict import detect

    t0 = time.perf_counter()
    with SlideReader(path) as reader:
        if pixel_size_um:
            px, source = float(pixel_size_um), "--pixel-size"
        elif reader.mpp:
            px, source = float(reader.mpp), "slide metadata"
        else:
            px, source = model.config.input_pixel_size_um, "not given; the model's training pixel size"
        rows, cols = reader.shape
        core, halo = block_geometry(model, px, block_px)
        thumb, tf = reader.thumbnail()
        mask = tissue_mask(thumb)
        todo = []
        n_blocks = 0
        for r0 in range(0, rows, core):
            for c0 in range(0, cols, core):
                n_blocks += 1
                tr0, tr1 = int(r0 / tf), int(math.ceil(min(rows, r0 + core) / tf))
                tc0, tc1 = int(c0 / tf), int(math.ceil(min(cols, c0 + core) / tf))
                if mask[tr0 : max(tr1, tr0 + 1), tc0 : max(tc1, tc0 + 1)].any():
                    todo.append((r0, c0))
        # one white balance for the whole slide (helpers that ask for it), so blocks agree with a whole-image pass
        gains = slide_gains(reader, mask, tf) if model.config.helper_white_balance else None
        parts, n_cands = [], 0
        diff = Differential.empty(model.config) if model.config.multiclass else None
        if progress is not None:
            progress(0, len(todo))
        for i, (r0, c0) in enumerate(todo):
            R0, C0 = max(0, r0 - halo), max(0, c0 - halo)
            block = reader.read(R0, r0 + core + halo, C0, c0 + core + halo)
            res = detect(model, block, pixel_size_um=px, thresholds=thresholds, helper_gains=gains)

            det = res.detections.shifted(C0, R0)
            parts.append(det.subset(_in_core(det, r0, c0, core)))
            in_core = _in_core(res.candidates.shifted(C0, R0), r0, c0, core)
            n_cands += int(in_core.sum())
            if diff is not None:  # each candidate's class, counted by the block holding its centre
                diff = diff + differential_of(res, model.config, keep=in_core)
            del block, res
            if progress is not None:
                progress(i + 1, len(todo))
    tissue_mm2 = float(mask.sum()) * (tf * px / 1000.0) ** 2
    return SlideCount(
        detections=Detections.concatenate(parts), candidates=n_cands, shape=(rows, cols), pixel_size_um=px,
        pixel_size_source=source, tissue_area_mm2=tissue_mm2, blocks=n_blocks, blocks_with_tissue=len(todo),
        thumbnail=thumb, thumb_factor=tf, seconds=time.perf_counter() - t0, tissue=mask, gains=gains,
        differential=diff,
    )


def slide_gains(reader, mask: np.ndarray, thumb_factor: float, *, n: int = 8, window: int = 1024) -> np.ndarray:
    """White-balance gains for a whole slide, from its tissue.

    A helper that white-balances (``helper_white_balance``) was trained on
    photos balanced on the pale plasma between their cells. On a slide the
    pale pixels of the whole picture are mostly bare glass, brighter than
    plasma, and balancing on them shifts every cell's colour. So the gains
    are the median of :func:`~eosdetect.models.helper_cnn.background_gains`
    over up to ``n`` windows of ``window`` slide pixels square, spread over
    the slide among those the thumbnail's tissue ``mask`` covers most (all
    of them where it can). A slide that is all tissue gets the gains of its
    photo-sized parts, as a photo would; one without tissue, the thumbnail's.
    """
    from .models.helper_cnn import background_gains

    rows, cols = reader.shape
    side = max(1, int(round(min(window, rows, cols) / thumb_factor)))  # in thumbnail pixels
    th, tw = mask.shape
    starts = [(r, c) for r in range(0, max(1, th - side + 1), side) for c in range(0, max(1, tw - side + 1), side)]
    cover = np.array([mask[r : r + side, c : c + side].mean() for r, c in starts])
    if not len(cover) or cover.max() == 0:
        return background_gains(reader.thumbnail()[0])
    best = np.flatnonzero(cover >= min(0.98, cover.max()))
    picked = sorted(set(best[np.linspace(0, len(best) - 1, min(n, len(best))).round().astype(int)].tolist()))
    gains = []
    for i in picked:
        r0, c0 = int(starts[i][0] * thumb_factor), int(starts[i][1] * thumb_factor)
        gains.append(background_gains(reader.read(r0, min(rows, r0 + window), c0, min(cols, c0 + window))))
    return np.median(gains, axis=0).astype(np.float32)


def _in_core(d, r0: int, c0: int, core: int) -> np.ndarray:
    """Cells whose centre lies in the core block ``[r0, r0 + core) x [c0, c0 + core)``."""
    return (d.x >= c0) & (d.x < c0 + core) & (d.y >= r0) & (d.y < r0 + core)


# --------------------------------------------------------------------------- pictures


def density_heatmap(sc: SlideCount, *, bin_um: float, class_name: str, peak_box=None) -> np.ndarray:
    """RGB picture: the thumbnail with cells per mm² in square bins of
    ``bin_um`` micrometres laid over it, a colour bar, and the peak HPF framed."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    fig, ax = plt.subplots(figsize=(fig_w, fig_w * th / tw * 0.95 + 0.6), dpi=110)
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
    plt.close(fig)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
