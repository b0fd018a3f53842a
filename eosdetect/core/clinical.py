"""Clinical summary: density per mm^2 and the peak count per high-power field (HPF).

Pathologists report eosinophils per HPF and decide on the densest one (e.g.
>= 15 eosinophils per HPF for eosinophilic oesophagitis). An HPF is about
0.24 mm^2 for a 40x objective with a 22 mm eyepiece field; microscopes differ,
so the area is a parameter. Nothing here guesses a pixel size: without one,
densities are reported as unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_HPF_AREA_MM2 = 0.24
DEFAULT_THRESHOLD = 15


def default_flag_threshold(class_name: str) -> float | None:
    """The per-HPF count that raises the flag by default for a model counting ``class_name``.

    15 for eosinophils (the usual criterion for eosinophilic oesophagitis);
    other cell types have no standard cut-off, so they are not flagged
    unless the user gives one (``--threshold``).

    >>> default_flag_threshold("eosinophil"), default_flag_threshold("nucleus")
    (15, None)
    """
    return DEFAULT_THRESHOLD if class_name.strip().lower() in ("eosinophil", "eosinophils") else None


@dataclass
class HpfSummary:
    """Counts per area for one image.

    ``peak_count`` is the largest number of cells in any square window of
    ``hpf_area_mm2`` (the whole image when it is no larger than one HPF);
    ``peak_box`` is that window (xmin, ymin, xmax, ymax) in input pixels.
    """

    count: int
    area_mm2: float
    density_per_mm2: float
    hpf_area_mm2: float
    n_hpf: float
    peak_count: int
    peak_box: tuple[int, int, int, int]
    threshold: float | None
    flag: bool | None  # None: no threshold, nothing judged
    whole_image_is_one_hpf: bool

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "area_mm2": round(self.area_mm2, 5),
            "density_per_mm2": round(self.density_per_mm2, 2),
            "hpf_area_mm2": self.hpf_area_mm2,
            "n_hpf": round(self.n_hpf, 3),
            "peak_hpf_count": self.peak_count,
            "peak_hpf_box": list(self.peak_box),
            "threshold": self.threshold,
            "flag": self.flag,
            "whole_image_is_one_hpf": self.whole_image_is_one_hpf,
        }


def hpf_summary(
    xy: np.ndarray,
    image_shape: tuple[int, int],
    pixel_size_um: float,
    *,
    hpf_area_mm2: float = DEFAULT_HPF_AREA_MM2,
    threshold: float | None = DEFAULT_THRESHOLD,
    step_fraction: float = 1 / 32,
) -> HpfSummary:
    """Density and peak per-HPF count of cells at ``xy`` in an image.

    Parameters
    ----------
    xy : (n, 2) array_like
        Cell centres (x, y) in pixels.
    image_shape : (rows, cols)
    pixel_size_um : float
        Micrometres per pixel of the image.
    hpf_area_mm2 : float
        Area of one high-power field.
    threshold : float or None
        ``flag`` is ``peak_count >= threshold`` (``None`` without a threshold).
    step_fraction : float
        With more than :data:`EXACT_PEAK_MAX_CELLS` cells, the square HPF
        window slides in steps of this fraction of its side; with fewer, the
        peak is exact (the best window anywhere).

    Examples
    --------
    >>> s = hpf_summary([[10, 10], [20, 10]], (100, 100), pixel_size_um=1.0, hpf_area_mm2=0.24)
    >>> s.peak_count, s.whole_image_is_one_hpf, s.density_per_mm2
    (2, True, 200.0)
    """
    if pixel_size_um is None or pixel_size_um <= 0:
        raise ValueError("a positive pixel size is needed for densities")
    if hpf_area_mm2 <= 0:
        raise ValueError("hpf_area_mm2 must be > 0")
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    rows, cols = (int(v) for v in image_shape)
    mm_per_px = pixel_size_um / 1000.0
    area = rows * cols * mm_per_px**2
    n = len(xy)
    side = np.sqrt(hpf_area_mm2) / mm_per_px  # window side, pixels
    one_hpf = rows <= side and cols <= side  # a long strip of small area is still several fields long
    if one_hpf:
        peak, box = n, (0, 0, cols, rows)
    elif n <= EXACT_PEAK_MAX_CELLS:
        peak, box = _exact_peak(xy, rows, cols, side)
    else:
        peak, box = _sliding_peak(xy, rows, cols, side, step_fraction)
    return HpfSummary(
        count=n,
        area_mm2=area,
        density_per_mm2=n / area if area > 0 else 0.0,
        hpf_area_mm2=hpf_area_mm2,
        n_hpf=area / hpf_area_mm2,
        peak_count=int(peak),
        peak_box=box,
        threshold=threshold,
        flag=None if threshold is None else bool(peak >= threshold),
        whole_image_is_one_hpf=bool(one_hpf),
    )


#: Up to this many cells the peak HPF count is exact; beyond, a window sliding on a fine grid.
EXACT_PEAK_MAX_CELLS = 5000


def _exact_peak(xy, rows, cols, side):
    """The most cells in any square window ``[x, x + side) x [y, y + side)``: a best window can
    be moved until its left and top edges touch cells, so only those windows are tried."""
    if not len(xy):
        return 0, (0, 0, int(min(cols, side)), int(min(rows, side)))
    order = np.argsort(xy[:, 0], kind="stable")
    xs, ys = xy[order, 0], xy[order, 1]
    first = np.searchsorted(xs, xs, side="left")
    last = np.searchsorted(xs, xs + side, side="left")
    best, corner = 0, (0.0, 0.0)
    for i in range(len(xs)):
        y = np.sort(ys[first[i]:last[i]])
        counts = np.searchsorted(y, y + side, side="left") - np.arange(len(y))
        k = int(np.argmax(counts))
        if counts[k] > best:
            best, corner = int(counts[k]), (xs[i], y[k])
    x0 = int(np.clip(np.floor(corner[0]), 0, max(0, cols - side)))  # the window on the image, holding those cells
    y0 = int(np.clip(np.floor(corner[1]), 0, max(0, rows - side)))
    return best, (x0, y0, int(min(cols, x0 + side)), int(min(rows, y0 + side)))


def _sliding_peak(xy, rows, cols, side, step_fraction):
    """Max count in a square window of ``side`` px (clipped to the image) sliding on a grid."""
    step = max(1.0, side * step_fraction)
    w = max(1, int(round(side / step)))  # window size in grid cells (one, for a window under a pixel)
    gr = int(np.ceil(rows / step))
    gc = int(np.ceil(cols / step))
    hist = np.zeros((gr, gc), dtype=np.int64)
    if len(xy):
        r = np.clip((xy[:, 1] // step).astype(int), 0, gr - 1)
        c = np.clip((xy[:, 0] // step).astype(int), 0, gc - 1)
        np.add.at(hist, (r, c), 1)
    wr, wc = min(w, gr), min(w, gc)
    sat = np.zeros((gr + 1, gc + 1), dtype=np.int64)
    sat[1:, 1:] = hist.cumsum(0).cumsum(1)
    sums = sat[wr:, wc:] - sat[:-wr, wc:] - sat[wr:, :-wc] + sat[:-wr, :-wc]
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    x0, y0 = int(j * step), int(i * step)
    box = (x0, y0, int(min(cols, x0 + side)), int(min(rows, y0 + side)))
    return int(sums[i, j]), box
