"""Clinical summary: density per mm^2 and the count per high-power field (HPF).

Pathologists report eosinophils per HPF and decide on the densest one (e.g.
>= 15 eosinophils per HPF for eosinophilic oesophagitis). An HPF is about
0.24 mm^2 for a 40x objective with a 22 mm eyepiece field; microscopes differ,
so the area is a parameter. Nothing here guesses a pixel size: without one,
densities are reported as unavailable.

Each image has one per-HPF figure, the one its flag judges: the peak (the
densest field) in an image of at least one field, and in an image smaller
than a field, which holds no whole field, an estimate from its density
(:func:`smaller_than_field`, :func:`estimated_per_hpf`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_HPF_AREA_MM2 = 0.24
DEFAULT_THRESHOLD = 15
#: The two kinds of per-HPF figure: the densest field's count, or an estimate from the density.
PEAK, ESTIMATE = "peak", "estimate"
#: Decimals of a per-HPF estimate (the figure shown is the one judged).
ESTIMATE_DECIMALS = 1


def smaller_than_field(area_mm2: float, hpf_area_mm2: float) -> bool:
    """Whether an image of ``area_mm2`` is smaller than one high-power field: the rule for every
    per-HPF figure.

    Such an image holds no whole field, so it has no peak; its per-HPF
    figure is estimated from its density (:func:`estimated_per_hpf`).

    An image of exactly one field (to rounding) is not smaller.

    >>> smaller_than_field(0.012, 0.24), smaller_than_field(0.24, 0.24), smaller_than_field(490 * 490 * 1e-3 ** 2, 0.2401)
    (True, False, False)
    """
    return area_mm2 < hpf_area_mm2 * (1 - 1e-9)


def estimated_per_hpf(count: int, area_mm2: float, hpf_area_mm2: float) -> float:
    """The per-HPF figure of an image smaller than a field: ``count`` times the field's area over
    the image's (its density times the HPF area, the usual correction when a camera's field is
    smaller than the eyepiece's), to :data:`ESTIMATE_DECIMALS` decimals.

    >>> estimated_per_hpf(13, 0.0144, 0.24)
    216.7
    """
    return round(count * hpf_area_mm2 / area_mm2, ESTIMATE_DECIMALS) if area_mm2 > 0 else 0.0


def per_hpf_text(value: float, basis: str, fraction: float | None = None, *, unit: str = " per HPF") -> str:
    """A per-HPF figure in words: ``peak 17 per HPF``, or for an estimate
    ``~216.7 per HPF, estimated from density: the image covers 0.06 of a field``.

    ``fraction`` is the part of a field the image covers (an estimate's
    basis, left out when None).

    >>> per_hpf_text(17, PEAK), per_hpf_text(216.7, ESTIMATE, 0.06)
    ('peak 17 per HPF', '~216.7 per HPF, estimated from density: the image covers 0.06 of a field')
    """
    if basis != ESTIMATE:
        return f"peak {value:g}{unit}"
    covers = "" if fraction is None else f": the image covers {fraction:.2g} of a field"
    return f"~{value:g}{unit}, estimated from density{covers}"


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

    ``per_hpf`` is the image's per-HPF figure, the one ``flag`` judges. In
    an image of at least one field it is ``peak_count``, the largest number
    of cells in any square window of ``hpf_area_mm2``, and ``peak_box`` is
    that window (xmin, ymin, xmax, ymax) in input pixels. An image smaller
    than a field (:func:`smaller_than_field`) holds no whole field: it has no
    peak (``peak_count`` and ``peak_box`` are None) and ``per_hpf`` is
    estimated from its density (:func:`estimated_per_hpf`). ``area_mm2`` is
    the picture's area, ``n_hpf`` the number of fields it covers (under 1:
    the fraction of one); ``density_per_mm2`` is per the area measured (a
    slide's tissue; the picture's for a photo).
    """

    count: int
    area_mm2: float
    density_per_mm2: float
    hpf_area_mm2: float
    n_hpf: float
    peak_count: int | None  # None: smaller than a field, no peak
    peak_box: tuple[int, int, int, int] | None
    per_hpf: float
    threshold: float | None
    flag: bool | None  # None: no threshold, nothing judged

    @property
    def per_hpf_is_estimate(self) -> bool:
        """``per_hpf`` is estimated from the density: the image is smaller than a field."""
        return smaller_than_field(self.area_mm2, self.hpf_area_mm2)

    @property
    def per_hpf_basis(self) -> str:
        """What ``per_hpf`` is: :data:`PEAK` or :data:`ESTIMATE`."""
        return ESTIMATE if self.per_hpf_is_estimate else PEAK

    @property
    def caveat(self) -> str | None:
        """For an estimate, one line saying so and why (the web service's warning); None for a peak."""
        if not self.per_hpf_is_estimate:
            return None
        return (f"the image covers {self.n_hpf:.2g} of a high-power field ({self.hpf_area_mm2:g} mm2): no whole "
                f"field, so no peak; its per-HPF figure (~{self.per_hpf:g}) is estimated from its density")

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "area_mm2": round(self.area_mm2, 5),
            "density_per_mm2": round(self.density_per_mm2, 2),
            "hpf_area_mm2": self.hpf_area_mm2,
            "n_hpf": round(self.n_hpf, 3),
            "per_hpf": self.per_hpf,
            "per_hpf_basis": self.per_hpf_basis,
            "peak_hpf_count": self.peak_count,
            "peak_hpf_box": None if self.peak_box is None else list(self.peak_box),
            "threshold": self.threshold,
            "flag": self.flag,
        }


def hpf_summary(
    xy: np.ndarray,
    image_shape: tuple[int, int],
    pixel_size_um: float,
    *,
    hpf_area_mm2: float = DEFAULT_HPF_AREA_MM2,
    threshold: float | None = DEFAULT_THRESHOLD,
    step_fraction: float = 1 / 32,
    measured_area_mm2: float | None = None,
) -> HpfSummary:
    """Density and per-HPF figure (the peak, or an estimate) of cells at ``xy`` in an image.

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
        ``flag`` is ``per_hpf >= threshold`` (``None`` without a threshold).
    step_fraction : float
        With more than :data:`EXACT_PEAK_MAX_CELLS` cells, the square HPF
        window slides in steps of this fraction of its side; with fewer, the
        peak is exact (the best window anywhere).
    measured_area_mm2 : float, optional
        The area the cells were counted in, when less than the picture (a
        slide's tissue): the density, and an estimate from it, are per this
        area. Default the picture's. Whether the image is smaller than a
        field is a matter of the picture's area.

    Examples
    --------
    An image of 0.01 mm², smaller than a field of 0.24 mm²: no peak, an estimate.

    >>> s = hpf_summary([[10, 10], [20, 10]], (100, 100), pixel_size_um=1.0, hpf_area_mm2=0.24)
    >>> s.peak_count, s.density_per_mm2, s.per_hpf, s.per_hpf_basis, round(s.n_hpf, 3)
    (None, 200.0, 48.0, 'estimate', 0.042)

    The same cells in a field of 0.0025 mm² (50 x 50 px): the densest holds both.

    >>> s = hpf_summary([[10, 10], [20, 10]], (100, 100), pixel_size_um=1.0, hpf_area_mm2=0.0025)
    >>> s.peak_count, s.peak_box, s.per_hpf, s.per_hpf_basis
    (2, (10, 10, 60, 60), 2, 'peak')
    """
    if pixel_size_um is None or pixel_size_um <= 0:
        raise ValueError("a positive pixel size is needed for densities")
    if hpf_area_mm2 <= 0:
        raise ValueError("hpf_area_mm2 must be > 0")
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    rows, cols = (int(v) for v in image_shape)
    mm_per_px = pixel_size_um / 1000.0
    area = rows * cols * mm_per_px**2
    measured = area if measured_area_mm2 is None else float(measured_area_mm2)
    n = len(xy)
    side = np.sqrt(hpf_area_mm2) / mm_per_px  # window side, pixels
    if smaller_than_field(area, hpf_area_mm2):  # no whole field in it: no peak
        peak, box = None, None
        per_hpf = estimated_per_hpf(n, measured, hpf_area_mm2)
    else:
        peak, box = (_exact_peak(xy, rows, cols, side) if n <= EXACT_PEAK_MAX_CELLS
                     else _sliding_peak(xy, rows, cols, side, step_fraction))
        per_hpf = peak = int(peak)
    return HpfSummary(
        count=n,
        area_mm2=area,
        density_per_mm2=n / measured if measured > 0 else 0.0,
        hpf_area_mm2=hpf_area_mm2,
        n_hpf=area / hpf_area_mm2,
        peak_count=peak,
        peak_box=box,
        per_hpf=per_hpf,
        threshold=threshold,
        flag=None if threshold is None else bool(per_hpf >= threshold),
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

@dataclass(frozen=True)
class ImageFigures:
    """What the clinical summary of many images needs of each one.

    ``area_mm2`` is the measured area (a slide's tissue alone; None or 0 when
    unknown); ``frame_mm2`` the area its whole picture covers (default
    ``area_mm2``); ``per_hpf`` its per-HPF figure (:attr:`HpfSummary.per_hpf`),
    an estimate from its density when ``per_hpf_is_estimate``;
    ``peak_hpf_count`` its peak (None for an image smaller than a field).
    Both are None without a pixel size. Figures without ``per_hpf`` (records
    of older versions) take it from the peak and the frame by the same rule
    (:func:`smaller_than_field`).
    """

    image: str
    count: int
    peak_hpf_count: int | None = None
    area_mm2: float | None = None
    frame_mm2: float | None = None
    per_hpf: float | None = None
    per_hpf_is_estimate: bool = False

    def fields(self, hpf_area_mm2: float) -> float | None:
        """The high-power fields the image's picture covers (under 1: the fraction of one; None when unknown)."""
        frame = self.area_mm2 if self.frame_mm2 is None else self.frame_mm2
        return frame / hpf_area_mm2 if frame else None

    def figure(self, hpf_area_mm2: float) -> tuple[float, bool] | None:
        """The image's per-HPF figure and whether it is an estimate (None without one)."""
        if self.per_hpf is not None:
            return self.per_hpf, bool(self.per_hpf_is_estimate)
        if self.peak_hpf_count is None:
            return None
        frame = self.area_mm2 if self.frame_mm2 is None else self.frame_mm2
        if frame and smaller_than_field(frame, hpf_area_mm2):  # an old record's peak is a part-field count
            return estimated_per_hpf(self.count, self.area_mm2 or 0.0, hpf_area_mm2), True
        return self.peak_hpf_count, False


@dataclass(frozen=True)
class ClinicalAggregate:
    """The clinical summary of many images (:func:`clinical_aggregate`).

    ``density_per_mm2`` counts only the images whose area is known (None when
    none is). ``per_hpf`` is the highest per-HPF figure of any image, the one
    ``flag`` judges, the first such in ``per_hpf_image``; an estimate from
    that image's density when ``per_hpf_is_estimate`` (it is smaller than a
    field, ``per_hpf_image_fields`` of one), else its peak. ``peak_hpf_count`` is the highest peak of the
    images of at least one field, in ``peak_hpf_image`` (None when every
    image is smaller); ``images_estimated`` of the ``images_with_per_hpf``
    images with a figure are smaller than a field; ``largest_frame_mm2`` is
    the largest picture among the images of known area.
    """

    total_area_mm2: float
    density_per_mm2: float | None
    images_with_area: int
    per_hpf: float
    per_hpf_image: str
    per_hpf_is_estimate: bool
    peak_hpf_count: int | None
    peak_hpf_image: str | None
    per_hpf_image_fields: float | None
    images_with_per_hpf: int
    images_estimated: int
    hpf_area_mm2: float
    threshold: float | None
    flag: bool | None  # None: no threshold, nothing judged
    largest_frame_mm2: float | None

    @property
    def density_per_hpf(self) -> float | None:
        """The density of all the images times the HPF area (their mean count per field)."""
        return None if self.density_per_mm2 is None else self.density_per_mm2 * self.hpf_area_mm2

    @property
    def per_hpf_basis(self) -> str:
        """What ``per_hpf`` is: :data:`PEAK` or :data:`ESTIMATE`."""
        return ESTIMATE if self.per_hpf_is_estimate else PEAK

    @property
    def every_image_smaller_than_field(self) -> bool:
        """Every image with a per-HPF figure is smaller than a field: every figure is an estimate."""
        return self.images_estimated == self.images_with_per_hpf


def clinical_aggregate(images, *, hpf_area_mm2: float = DEFAULT_HPF_AREA_MM2,
                       threshold: float | None = DEFAULT_THRESHOLD) -> ClinicalAggregate | None:
    """The density and the highest per-HPF figure over many images.

    Parameters
    ----------
    images : iterable of ImageFigures
    hpf_area_mm2 : float
    threshold : float or None
        ``flag`` is ``per_hpf >= threshold`` (None without a threshold).

    Returns
    -------
    ClinicalAggregate or None
        None when no image has a per-HPF figure (no pixel size known).

    Examples
    --------
    >>> agg = clinical_aggregate([ImageFigures("a", 30, 12, 0.5), ImageFigures("b", 10, 16, 0.5),
    ...                           ImageFigures("c", 5)], hpf_area_mm2=0.25, threshold=15)
    >>> agg.density_per_mm2, agg.density_per_hpf, agg.per_hpf, agg.per_hpf_image, agg.per_hpf_basis, agg.flag
    (40.0, 10.0, 16, 'b', 'peak', True)

    A photo smaller than a field whose estimate is higher than the other's peak:

    >>> agg = clinical_aggregate([ImageFigures("a", 30, 12, 0.5),
    ...                           ImageFigures("d", 3, area_mm2=0.05, per_hpf=15.0, per_hpf_is_estimate=True)],
    ...                          hpf_area_mm2=0.25, threshold=15)
    >>> agg.per_hpf, agg.per_hpf_image, agg.per_hpf_basis, agg.flag, agg.peak_hpf_count, agg.images_estimated
    (15.0, 'd', 'estimate', True, 12, 1)
    >>> clinical_aggregate([ImageFigures("c", 5)]) is None
    True
    """
    images = list(images)
    figures = [(im, fig) for im in images if (fig := im.figure(hpf_area_mm2)) is not None]
    if not figures:
        return None
    measured = [im for im in images if im.area_mm2]
    area = sum(float(im.area_mm2) for im in measured)
    best_im, (best, estimate) = max(figures, key=lambda f: f[1][0])  # the first image of the highest figure
    peaks = [(fig[0], im.image) for im, fig in figures if not fig[1]]
    peak = max(peaks, key=lambda pk: pk[0]) if peaks else (None, None)
    frames = [im.area_mm2 if im.frame_mm2 is None else im.frame_mm2 for im in measured]
    return ClinicalAggregate(
        total_area_mm2=area,
        density_per_mm2=sum(int(im.count) for im in measured) / area if area else None,
        images_with_area=len(measured),
        per_hpf=best,
        per_hpf_image=best_im.image,
        per_hpf_is_estimate=estimate,
        peak_hpf_count=peak[0],
        peak_hpf_image=peak[1],
        per_hpf_image_fields=best_im.fields(hpf_area_mm2),
        images_with_per_hpf=len(figures),
        images_estimated=sum(fig[1] for _, fig in figures),
        hpf_area_mm2=hpf_area_mm2,
        threshold=threshold,
        flag=None if threshold is None else bool(best >= threshold),
        largest_frame_mm2=max(frames) if frames else None,
    )
