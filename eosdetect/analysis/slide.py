"""What a whole slide holds: its cells over the tissue, the densest field, the overlay and the heatmap.

:func:`analyse_slide` counts a slide block by block
(:meth:`eosdetect.Model.detect_slide`) and adds the clinical figures over
its tissue; ``eosdetect count`` runs it for slide files, and it takes any
array too large for memory as well (NumPy, zarr, dask).

Examples
--------
>>> import numpy as np
>>> from eosdetect.models.config import ModelConfig, Thresholds
>>> from eosdetect.models.model import Model
>>> model = Model.from_functions(
...     ModelConfig(unet_depth=2, tile_size=64, pixel_size_um=1.0, input_pixel_size_um=1.0),
...     Thresholds(min_distance_um=3, smooth_um=0.5, seed_h_um=0.5, min_area_um2=5),
...     lambda batch: (batch.mean(axis=-1) < 0.6).astype(np.float32))
>>> slide = np.full((200, 300, 3), 240, np.uint8)
>>> yy, xx = np.mgrid[:200, :300]
>>> for r, c in ((30, 40), (100, 150), (170, 260)):
...     slide[(yy - r) ** 2 + (xx - c) ** 2 <= 36] = (120, 40, 160)
>>> s = analyse_slide(model, slide, pixel_size_um=1.0, block_px=64)
>>> s.count, (s.width, s.height), s.slide.blocks
(3, (300, 200), 20)
>>> s.hpf.peak_count, s.hpf.per_hpf_basis  # 0.06 mm², a quarter of a field: no peak, an estimate
(None, 'estimate')
>>> s.per_hpf == round(s.density_per_mm2 * 0.24, 1)  # from the density over its tissue (the discs)
True
>>> s.overlay().ndim, s.heatmap().ndim
(3, 3)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eosdetect.analysis.heatmap import density_heatmap
from eosdetect.analysis.image import basis_caption, peak_caption
from eosdetect.analysis.overlay import draw_overlay
from eosdetect.core.clinical import DEFAULT_HPF_AREA_MM2, HpfSummary, default_flag_threshold, hpf_summary
from eosdetect.core.differential import Differential
from eosdetect.core.postprocess import Detections
from eosdetect.models.config import ModelConfig, Thresholds
from eosdetect.models.slides import SlideCount


@dataclass(frozen=True, eq=False)
class SlideAnalysis:
    """What :func:`analyse_slide` found.

    Attributes
    ----------
    slide : SlideCount
        The block-by-block count (detections in level-0 pixels, the thumbnail, the tissue).
    pixel_size_um : float or None
        The pixel size given or read from the slide's metadata (None: the
        model's was assumed, no densities).
    hpf : HpfSummary or None
        The densest high-power field, or for a slide smaller than one field
        an estimate from its density (None without a pixel size).
    flag_threshold : float or None
    hpf_area_mm2 : float
    source : str
        The slide's name on the overlay.
    config : ModelConfig
    thresholds : Thresholds
        The thresholds used.
    warnings : tuple of str
        Reasons to doubt the count, one line each.
    """

    slide: SlideCount = field(repr=False)
    pixel_size_um: float | None
    hpf: HpfSummary | None
    flag_threshold: float | None
    hpf_area_mm2: float
    source: str
    config: ModelConfig = field(repr=False)
    thresholds: Thresholds = field(repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """Number of counted cells."""
        return len(self.slide.detections)

    @property
    def detections(self) -> Detections:
        """The counted cells (level-0 pixels)."""
        return self.slide.detections

    @property
    def candidates(self) -> int:
        """Objects the U-Net segmented, counted or not."""
        return self.slide.candidates

    @property
    def width(self) -> int:
        return self.slide.shape[1]

    @property
    def height(self) -> int:
        return self.slide.shape[0]

    @property
    def differential(self) -> Differential | None:
        """The white-cell differential (multi-class helpers only)."""
        return self.slide.differential

    @property
    def area_mm2(self) -> float | None:
        """The tissue's area (None without a pixel size)."""
        return None if self.pixel_size_um is None else self.slide.tissue_area_mm2

    @property
    def density_per_mm2(self) -> float | None:
        """Counted cells per mm² of tissue (0 without tissue; None without a pixel size)."""
        area = self.area_mm2
        if area is None:
            return None
        return self.count / area if area else 0.0

    @property
    def peak_hpf_count(self) -> int | None:
        """Cells in the densest field (None without a pixel size, or on a slide smaller than a field)."""
        return None if self.hpf is None else self.hpf.peak_count

    @property
    def per_hpf(self) -> float | None:
        """The per-HPF figure the flag judges: the peak, or an estimate (:attr:`HpfSummary.per_hpf`)."""
        return None if self.hpf is None else self.hpf.per_hpf

    @property
    def hpf_flag(self) -> bool | None:
        return None if self.hpf is None else self.hpf.flag

    def _caption(self) -> list[str]:
        """The overlay's lines under its title: blocks, differential, density and peak."""
        sc = self.slide
        lines = [f"whole slide {self.width}x{self.height} px, "
                 f"{sc.blocks_with_tissue} of {sc.blocks} blocks with tissue"]
        if self.differential is not None:
            lines.append(self.differential.line())
        if self.hpf is not None:
            density = round(self.density_per_mm2, 2)  # the figure counts.csv shows
            lines.append(f"{density:.1f}/mm2 of tissue ({self.area_mm2:.2f} mm2), "
                         + peak_caption(self.hpf, self.flag_threshold))
            lines.append(basis_caption(self.hpf))
        return lines

    def overlay(self) -> np.ndarray:
        """The thumbnail with every counted cell marked, and the densest field framed.

        Returns
        -------
        (m + h, max(n, 400), 3) ndarray of uint8
        """
        sc = self.slide
        f = 1.0 / sc.thumb_factor
        peak_box = None if self.hpf is None else self.hpf.peak_box  # None for an estimate: no field to frame
        box = None if peak_box is None else tuple(int(round(v * f)) for v in peak_box)
        return draw_overlay(sc.thumbnail, self.detections.rescaled(f),
                            title=f"{self.config.class_name}: {self.count}   {self.source}",
                            lines=self._caption(), highlight_box=box)

    def heatmap(self) -> np.ndarray:
        """Cells per mm² in bins of a quarter of a high-power field's side, over the thumbnail
        (:func:`eosdetect.analysis.heatmap.density_heatmap`)."""
        side_um = math.sqrt(self.hpf_area_mm2) * 1000.0
        return density_heatmap(self.slide, bin_um=side_um / 4, class_name=self.config.class_name,
                               peak_box=None if self.hpf is None else self.hpf.peak_box)


def analyse_slide(
    model,
    source,
    *,
    pixel_size_um: float | None = None,
    thresholds: Thresholds | None = None,
    hpf_area_mm2: float = DEFAULT_HPF_AREA_MM2,
    flag_threshold: float | None = None,
    block_px: int = 1024,
    progress=None,
    stop=None,
    name: str | None = None,
    **overrides,
) -> SlideAnalysis:
    """Count the cells of a whole slide, with the clinical figures over its tissue.

    Parameters
    ----------
    model : eosdetect.Model
    source : path, SlideReader or (M, N, 3) array_like of uint8
        See :meth:`eosdetect.Model.detect_slide`.
    pixel_size_um : float, optional
        Default: the slide's metadata; without either, no densities.
    thresholds : Thresholds, optional
    hpf_area_mm2 : float
    flag_threshold : float, optional
        Default the model's (:func:`eosdetect.core.clinical.default_flag_threshold`).
    block_px : int
        Block side at the model's scale.
    progress, stop : callable, optional
        See :meth:`eosdetect.Model.detect_slide`.
    name : str, optional
        The slide's name on the overlay; default the file's name (``"slide"`` for an array).
    **overrides
        Single thresholds for this call.

    Returns
    -------
    SlideAnalysis
    """
    if flag_threshold is None:
        flag_threshold = default_flag_threshold(model.config.class_name)
    thr = model.thresholds_for(thresholds, **overrides)
    sc = model.detect_slide(source, pixel_size_um=pixel_size_um, thresholds=thr, block_px=block_px,
                            progress=progress, stop=stop)
    known_px = sc.pixel_size_known
    hpf = None
    if known_px:
        hpf = hpf_summary(sc.detections.xy, sc.shape, sc.pixel_size_um, hpf_area_mm2=hpf_area_mm2,
                          threshold=flag_threshold, measured_area_mm2=sc.tissue_area_mm2)
    return SlideAnalysis(
        slide=sc, pixel_size_um=sc.pixel_size_um if known_px else None, hpf=hpf, flag_threshold=flag_threshold,
        hpf_area_mm2=hpf_area_mm2, source=name or _name_of(source), config=model.config, thresholds=thr,
    )


def _name_of(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    path = getattr(source, "path", None)  # an open SlideReader
    return Path(path).name if path else "slide"
