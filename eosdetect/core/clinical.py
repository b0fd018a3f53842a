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


# --------------------------------------------------------------------------- many images

#: Images smaller than this fraction of a high-power field: their peak is a count per image, not per field.
SMALL_IMAGE_HPF_FRACTION = 0.5


@dataclass(frozen=True)
class ImageFigures:
    """What the clinical summary of many images needs of each one.

    ``area_mm2`` is the measured area (a slide's tissue alone; None or 0 when
    unknown); ``frame_mm2`` the area its whole picture covers (default
    ``area_mm2``); ``peak_hpf_count`` is None without a pixel size.
    """

    image: str
    count: int
    peak_hpf_count: int | None = None
    area_mm2: float | None = None
    frame_mm2: float | None = None


@dataclass(frozen=True)
class ClinicalAggregate:
    """The clinical summary of many images (:func:`clinical_aggregate`).

    ``density_per_mm2`` counts only the images whose area is known (None when
    none is); ``peak_hpf_count`` is the highest peak of any image, the first
    such in ``peak_hpf_image``; ``largest_frame_mm2`` is the largest picture
    among the images of known area.
    """

    total_area_mm2: float
    density_per_mm2: float | None
    images_with_area: int
    peak_hpf_count: int
    peak_hpf_image: str
    hpf_area_mm2: float
    threshold: float | None
    flag: bool | None  # None: no threshold, nothing judged
    largest_frame_mm2: float | None

    @property
    def density_per_hpf(self) -> float | None:
        """The density times the HPF area: the per-field figure when the images are smaller than a field."""
        return None if self.density_per_mm2 is None else self.density_per_mm2 * self.hpf_area_mm2

    @property
    def every_image_under_half_hpf(self) -> bool:
        """Every image of known area is smaller than :data:`SMALL_IMAGE_HPF_FRACTION` of a field,
        so the peak is a count per image rather than per field."""
        largest = self.largest_frame_mm2
        return largest is not None and largest < SMALL_IMAGE_HPF_FRACTION * self.hpf_area_mm2


def clinical_aggregate(images, *, hpf_area_mm2: float = DEFAULT_HPF_AREA_MM2,
                       threshold: float | None = DEFAULT_THRESHOLD) -> ClinicalAggregate | None:
    """The density and peak per-HPF count over many images.

    Parameters
    ----------
    images : iterable of ImageFigures
    hpf_area_mm2 : float
    threshold : float or None
        ``flag`` is ``peak_hpf_count >= threshold`` (None without a threshold).

    Returns
    -------
    ClinicalAggregate or None
        None when no image has a peak count (no pixel size known).

    Examples
    --------
    >>> agg = clinical_aggregate([ImageFigures("a", 30, 12, 0.5), ImageFigures("b", 10, 16, 0.5),
    ...                           ImageFigures("c", 5)], hpf_area_mm2=0.25, threshold=15)
    >>> agg.density_per_mm2, agg.density_per_hpf, agg.peak_hpf_count, agg.peak_hpf_image, agg.flag
    (40.0, 10.0, 16, 'b', True)
    >>> clinical_aggregate([ImageFigures("c", 5)]) is None
    True
    """
    images = list(images)
    peaks = [(im.peak_hpf_count, im.image) for im in images if im.peak_hpf_count is not None]
    if not peaks:
        return None
    measured = [im for im in images if im.area_mm2]
    area = sum(float(im.area_mm2) for im in measured)
    best = max(peaks, key=lambda pk: pk[0])  # the first image of the highest peak
    frames = [im.area_mm2 if im.frame_mm2 is None else im.frame_mm2 for im in measured]
    return ClinicalAggregate(
        total_area_mm2=area,
        density_per_mm2=sum(int(im.count) for im in measured) / area if area else None,
        images_with_area=len(measured),
        peak_hpf_count=best[0],
        peak_hpf_image=best[1],
        hpf_area_mm2=hpf_area_mm2,
        threshold=threshold,
        flag=None if threshold is None else bool(best[0] >= threshold),
        largest_frame_mm2=max(frames) if frames else None,
    )
