"""What one image holds: its cells, their density, the differential, warnings and the overlay.

:func:`analyse` is the analysis researchers call from a notebook, and the one
every front end runs (``eosdetect count``, its Dask workers, the web
service), so that they all give the same answer for an image. It returns an
:class:`ImageAnalysis`: typed figures, no table rows; the applications render
those into ``counts.csv``, ``summary.json`` or a JSON answer.

Examples
--------
A stand-in model whose 'U-Net' calls every dark pixel a cell, on an image of
two dark discs:

>>> import numpy as np
>>> from eosdetect.models.config import ModelConfig, Thresholds
>>> from eosdetect.models.model import Model
>>> model = Model.from_functions(
...     ModelConfig(unet_depth=2, tile_size=64, pixel_size_um=1.0, input_pixel_size_um=1.0),
...     Thresholds(min_distance_um=3, smooth_um=0.5, seed_h_um=0.5, min_area_um2=5),
...     lambda batch: (batch.mean(axis=-1) < 0.6).astype(np.float32))
>>> image = np.full((64, 80, 3), 230, np.uint8)
>>> yy, xx = np.mgrid[:64, :80]
>>> for r, c in ((20, 20), (40, 52)):
...     image[(yy - r) ** 2 + (xx - c) ** 2 <= 36] = (120, 40, 160)
>>> a = analyse(model, image, pixel_size_um=1.0)
>>> a.count, (a.width, a.height), a.warnings
(2, (80, 64), ())
>>> round(a.density_per_mm2, 1)  # cells per mm² (an image of 0.00512 mm²)
390.6
>>> a.peak_hpf_count, a.per_hpf, a.hpf.per_hpf_basis  # 0.021 of a field: no peak, an estimate
(None, 93.8, 'estimate')
>>> a.overlay().shape  # a caption band on top, narrow images padded for it
(110, 400, 3)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eosdetect.analysis.overlay import class_colours, draw_overlay
from eosdetect.core.clinical import DEFAULT_HPF_AREA_MM2, HpfSummary, default_flag_threshold, hpf_summary, per_hpf_text
from eosdetect.core.differential import Differential, differential_of
from eosdetect.core.postprocess import Detections
from eosdetect.errors import InputError
from eosdetect.io import is_grey
from eosdetect.models.config import ModelConfig, Thresholds
from eosdetect.models.model import Result

#: Images narrower or shorter than this many pixels are refused.
MIN_SIDE = 8
#: The overlay's caption line for a grey image (see :func:`grey_warning`).
GREY_CAPTION = "grey image: colour model, cells may be missed"
#: The overlay's caption line when the densest field is framed.
PEAK_FRAME_CAPTION = "orange frame: the densest high-power field"


@dataclass(frozen=True, eq=False)
class ImageAnalysis:
    """What :func:`analyse` found in one image.

    Attributes
    ----------
    result : Result
        The detection result (:meth:`eosdetect.Model.detect`).
    width, height : int
        The image's size, pixels.
    pixel_size_um : float or None
        The pixel size given (None: the model's assumed, no densities).
    hpf : HpfSummary or None
        Density and the per-HPF figure: the densest high-power field, or in an
        image smaller than a field an estimate from its density (None without
        a pixel size).
    differential : Differential or None
        The white-cell differential (multi-class helpers only).
    warnings : tuple of str
        Reasons to doubt the count, one line each.
    flag_threshold : float or None
        The per-HPF count that raises the flag.
    source : str
        The image's name in messages and on the overlay (a path, a file name).
    config : ModelConfig
        The model's configuration (what the overlay names and outlines).
    thresholds : Thresholds
        The thresholds used.
    grey : bool
        Every pixel is grey (a colour model sees no stain).
    image : ndarray
        The image itself (not copied), for :meth:`overlay`.

    Two analyses are equal only when they are the same object.
    """

    result: Result
    width: int
    height: int
    pixel_size_um: float | None
    hpf: HpfSummary | None
    differential: Differential | None
    warnings: tuple[str, ...]
    flag_threshold: float | None
    source: str
    config: ModelConfig = field(repr=False)
    thresholds: Thresholds = field(repr=False)
    grey: bool = False
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        """Number of counted cells."""
        return len(self.result.detections)

    @property
    def detections(self) -> Detections:
        """The counted cells (pixels of the image)."""
        return self.result.detections

    @property
    def candidates(self) -> Detections:
        """Every object the U-Net segmented, counted or not."""
        return self.result.candidates

    @property
    def area_mm2(self) -> float | None:
        """The image's area (None without a pixel size)."""
        return None if self.hpf is None else self.hpf.area_mm2

    @property
    def density_per_mm2(self) -> float | None:
        """Counted cells per mm² (None without a pixel size)."""
        return None if self.hpf is None else self.hpf.density_per_mm2

    @property
    def peak_hpf_count(self) -> int | None:
        """Cells in the densest high-power field (None without a pixel size, or in an image smaller than a field)."""
        return None if self.hpf is None else self.hpf.peak_count

    @property
    def per_hpf(self) -> float | None:
        """The per-HPF figure: the peak, or in an image smaller than a field an estimate from its
        density (:attr:`HpfSummary.per_hpf`; None without a pixel size)."""
        return None if self.hpf is None else self.hpf.per_hpf

    @property
    def hpf_flag(self) -> bool | None:
        """:attr:`per_hpf` reaches :attr:`flag_threshold` (None without a pixel size or a threshold)."""
        return None if self.hpf is None else self.hpf.flag

    def overlay(self) -> np.ndarray:
        """The overlay picture ``eosdetect count`` writes: every counted cell outlined and
        numbered, the others by class or in grey, a caption band with the figures.

        Drawn on each call (keep the result to use it twice).

        Returns
        -------
        (M + h, max(N, 400), 3) ndarray of uint8
        """
        res, cfg = self.result, self.config
        caption = [GREY_CAPTION] if self.grey else []
        peak_box = None
        if self.hpf is not None:
            caption.append(f"{self.hpf.density_per_mm2:.1f}/mm2, " + peak_caption(self.hpf, self.flag_threshold))
            caption.append(basis_caption(self.hpf))
            peak_box = self.hpf.peak_box  # None for an estimate: no field to frame
        rejected = classified = legend = None
        if self.differential is not None:
            classified, legend = _class_layers(res, cfg.class_name, self.differential)
            caption.append(f"{self.differential.white_cells} white cells; outline colour = class:")
        elif cfg.helper_enabled:
            rejected = res.candidates.subset(res.candidates.score < self.thresholds.helper_threshold)
            caption.append(f"grey outline: {cfg.unet_class_name} not counted ({len(rejected)})")
        return draw_overlay(self.image, res.detections, labels=res.labels, rejected=rejected, classified=classified,
                            legend=legend, title=f"{cfg.class_name}: {self.count}   {Path(self.source).name}",
                            lines=caption, highlight_box=peak_box)


def analyse(
    model,
    image: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    thresholds: Thresholds | None = None,
    hpf_area_mm2: float = DEFAULT_HPF_AREA_MM2,
    flag_threshold: float | None = None,
    source="image",
    **overrides,
) -> ImageAnalysis:
    """Count the cells in one RGB image, with the clinical figures when its pixel size is known.

    Parameters
    ----------
    model : eosdetect.Model
    image : (M, N, 3) ndarray of uint8
        RGB image (see :func:`eosdetect.read_image`).
    pixel_size_um : float, optional
        Micrometres per pixel: densities and the per-HPF peak need it.
    thresholds : Thresholds, optional
        Replaces the model's fitted thresholds.
    hpf_area_mm2 : float
        Area of one high-power field.
    flag_threshold : float, optional
        The per-HPF count that raises the flag; default the model's
        (:func:`eosdetect.core.clinical.default_flag_threshold`).
    source : str or path
        Names the image in errors and on the overlay.
    **overrides
        Single thresholds for this call (fields of
        :class:`~eosdetect.models.config.Thresholds`).

    Returns
    -------
    ImageAnalysis

    Raises
    ------
    InputError
        An image smaller than :data:`MIN_SIDE` pixels on a side.
    """
    cfg = model.config
    if flag_threshold is None:
        flag_threshold = default_flag_threshold(cfg.class_name)
    rows, cols = image.shape[:2]
    if rows < MIN_SIDE or cols < MIN_SIDE:
        raise InputError(source, f"image of {cols}x{rows} px is too small (at least {MIN_SIDE}x{MIN_SIDE})")
    thr = model.thresholds_for(thresholds, **overrides)
    res = model.detect(image, pixel_size_um=pixel_size_um, thresholds=thr)
    grey = is_grey(image)
    hpf = None
    if pixel_size_um:
        hpf = hpf_summary(res.detections.xy, (rows, cols), pixel_size_um, hpf_area_mm2=hpf_area_mm2,
                          threshold=flag_threshold)
    return ImageAnalysis(
        result=res, width=cols, height=rows, pixel_size_um=pixel_size_um, hpf=hpf,
        differential=differential_of(res, cfg), warnings=(grey_warning(cfg.name),) if grey else (),
        flag_threshold=flag_threshold, source=str(source), config=cfg, thresholds=thr, grey=grey, image=image,
    )


def grey_warning(model_name: str) -> str:
    """The warning for a grey image: a stain model sees no stain, and a low count would look like a true one."""
    return f"a grey image, but {model_name} was trained on stained colour images: cells may be missed"


def peak_caption(hpf: HpfSummary, flag_threshold: float | None) -> str:
    """The overlay's words for the per-HPF figure: ``peak 7/HPF``, or in an image smaller than a
    field ``~52.1/HPF, estimated from density``, and the threshold when it is reached."""
    return (per_hpf_text(hpf.per_hpf, hpf.per_hpf_basis, unit="/HPF")
            + (f"  >= {flag_threshold:g}" if hpf.flag else ""))


def basis_caption(hpf: HpfSummary) -> str:
    """The overlay's line under :func:`peak_caption`: what frames the peak (:data:`PEAK_FRAME_CAPTION`),
    or why an estimate has none (``no peak: the image covers 0.05 of a high-power field``)."""
    if hpf.per_hpf_is_estimate:
        return f"no peak: the image covers {hpf.n_hpf:.2g} of a high-power field"
    return PEAK_FRAME_CAPTION


def _class_layers(res: Result, counted: str, diff: Differential) -> tuple[list, list]:
    """For the overlay of a multi-class helper: the candidates of each class but the counted one,
    each group with its colour (thin outlines), and the legend entries (class and count, colour)."""
    colours = class_colours(res.class_names, counted)
    groups = [(res.candidates.subset(res.candidate_class == k), colours[name])
              for k, name in enumerate(res.class_names) if name != counted]
    legend = [(f"{name} {n}", colours[name]) for name, n in diff.counts.items()]
    return groups, legend
