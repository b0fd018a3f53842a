"""Counting an image too large for memory, block by block, with any model.

:func:`detect_slide` (also :meth:`eosdetect.Model.detect_slide`):

1. reads a thumbnail (a low pyramid level) and finds tissue there
   (:func:`eosdetect.core.colour.tissue_mask`: stained or dark pixels; bare
   glass is skipped);
2. cuts the slide into square *core* blocks (``block_px`` pixels at the
   model's scale) and skips those without tissue;
3. reads each block with a *halo* around it (the U-Net's context plus one and
   a half cell diameters), runs the model's ordinary
   :meth:`~eosdetect.models.model.Model.detect` on it, and keeps only the
   cells whose centre lies in the core. The cores tile the slide without
   overlap, and a cell near a core's edge lies whole inside the halo, so
   every cell is counted exactly once: by the block that holds its centre.

Block origins are aligned to the resize ratio, so each block sees exactly
the model-scale pixels a whole-image pass would.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from eosdetect.core.colour import background_gains, tissue_mask
from eosdetect.core.differential import Differential, differential_of
from eosdetect.core.postprocess import Detections
from eosdetect.slideio import open_slide

#: ``SlideCount.pixel_size_source`` when neither the caller nor the slide gave a pixel size.
ASSUMED_PIXEL_SIZE = "not given; the model's training pixel size"


class SlideStopped(Exception):
    """Raised by :func:`detect_slide` when its ``stop`` callable asks it to stop."""


@dataclass
class SlideCount:
    """What :func:`detect_slide` found."""

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

    @property
    def pixel_size_known(self) -> bool:
        """Whether the pixel size was given or read from the slide (not assumed from the model)."""
        return self.pixel_size_source != ASSUMED_PIXEL_SIZE


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


def detect_slide(model, source, *, pixel_size_um: float | None = None, thresholds=None, block_px: int = 1024,
                 progress=None, stop=None) -> SlideCount:
    """Count the cells of a whole slide block by block (see the module docstring).

    Parameters
    ----------
    model : eosdetect.Model
    source : path, RegionSource or array_like
        See :func:`eosdetect.slideio.open_slide`.
    pixel_size_um : float, optional
        The slide's micrometres per pixel; default the one in its metadata,
        else the model's training pixel size.
    thresholds : Thresholds, optional
    block_px : int
        Block side at the model's scale.
    progress : callable, optional
        Called with ``(blocks done, blocks to do)``.
    stop : callable, optional
        Checked before each block: True stops with :class:`SlideStopped`.

    Returns
    -------
    SlideCount
    """
    t0 = time.perf_counter()
    reader = open_slide(source)
    opened_here = reader is not source
    try:
        if pixel_size_um:
            px, source_of_px = float(pixel_size_um), "given"
        elif reader.mpp:
            px, source_of_px = float(reader.mpp), "slide metadata"
        else:
            px, source_of_px = model.config.input_pixel_size_um, ASSUMED_PIXEL_SIZE
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
            if stop is not None and stop():
                raise SlideStopped(str(reader.path))
            R0, C0 = max(0, r0 - halo), max(0, c0 - halo)
            block = reader.read(R0, r0 + core + halo, C0, c0 + core + halo)
            res = model.detect(block, pixel_size_um=px, thresholds=thresholds, helper_gains=gains)

            det = res.detections.shifted(C0, R0)
            parts.append(det.subset(_in_core(det, r0, c0, core)))
            in_core = _in_core(res.candidates.shifted(C0, R0), r0, c0, core)
            n_cands += int(in_core.sum())
            if diff is not None:  # each candidate's class, counted by the block holding its centre
                diff = diff + differential_of(res, model.config, keep=in_core)
            del block, res
            if progress is not None:
                progress(i + 1, len(todo))
    finally:
        if opened_here:
            reader.close()
    tissue_mm2 = float(mask.sum()) * (tf * px / 1000.0) ** 2
    return SlideCount(
        detections=Detections.concatenate(parts), candidates=n_cands, shape=(rows, cols), pixel_size_um=px,
        pixel_size_source=source_of_px, tissue_area_mm2=tissue_mm2, blocks=n_blocks, blocks_with_tissue=len(todo),
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


