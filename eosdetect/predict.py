"""Image -> detections: rescale, U-Net (whole or tiled), watershed, optional helper classifier.

All array functions; no file I/O. Detections are returned in pixels of the
input image.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .dataset import axis_factors, resize
from .models.config import ModelConfig, Thresholds
from .models.helper_cnn import extract_crops, helper_view
from .postprocess import Detections, detections_from_labels, segment
from .tiling import predict_tiled, predict_whole

log = logging.getLogger(__name__)


@dataclass
class Result:
    """What :func:`detect` found in one image.

    Attributes
    ----------
    detections : Detections
        The counted cells (input-image pixels).
    candidates : Detections
        Every object the U-Net segmented, counted or not; ``score`` is the
        helper's probability in two-stage models, the U-Net's otherwise.
    labels : (m, n) ndarray of int32
        Instance labels at model scale; ``candidates.label`` indexes them.
    scale : float
        Model pixels per input pixel.
    image_shape : (int, int)
        Input rows, columns.
    """

    detections: Detections
    candidates: Detections
    labels: np.ndarray
    scale: float
    image_shape: tuple[int, int]
    pixel_size_um: float
    timings: dict = field(default_factory=dict)
    prob: np.ndarray | None = None
    #: Multi-class helpers: the classes, and each candidate's most probable one
    #: (an index into ``class_names``) with the probabilities of all of them.
    class_names: tuple[str, ...] = ()
    candidate_class: np.ndarray | None = None
    class_probs: np.ndarray | None = None

    @property
    def count(self) -> int:
        return len(self.detections)


def assign_classes(class_probs: np.ndarray, counted: int, threshold: float) -> np.ndarray:
    """Each candidate's class: the counted class where its probability reaches
    ``threshold`` (so the differential agrees with the count), else the most
    probable of the other classes.

    Parameters
    ----------
    class_probs : (n, k) ndarray of float
    counted : int
        Column of the counted class.

    Returns
    -------
    (n,) ndarray of int64

    >>> assign_classes(np.array([[0.6, 0.4], [0.3, 0.7], [0.45, 0.55]]), 0, 0.4).tolist()
    [0, 1, 0]
    >>> assign_classes(np.zeros((0, 3)), 0, 0.5).tolist()
    []
    """
    probs = np.array(class_probs, dtype=np.float64, copy=True)
    if probs.ndim != 2:
        raise ValueError(f"class_probs must be (n, k), got shape {probs.shape}")
    counted_p = probs[:, counted].copy()
    probs[:, counted] = -np.inf
    out = np.argmax(probs, axis=1) if probs.shape[1] > 1 else np.zeros(len(probs), np.int64)
    out[counted_p >= threshold] = counted
    return out.astype(np.int64)


def thresholds_in_pixels(thresholds: Thresholds, pixel_size_um: float) -> dict:
    """Keyword arguments for :func:`eosdetect.postprocess.segment` at a pixel size."""
    px = float(pixel_size_um)
    return dict(
        prob_threshold=thresholds.prob_threshold,
        min_distance=thresholds.min_distance_um / px,
        smooth=thresholds.smooth_um / px,
        seed_h=thresholds.seed_h_um / px,
        min_area=thresholds.min_area_um2 / px**2,
        max_area=thresholds.max_area_um2 / px**2,
    )


def predict_probability(predict_fn, image_model: np.ndarray, config: ModelConfig, *, progress=None) -> np.ndarray:
    """U-Net probability map of an image already at model scale.

    Whole-image pass when the image has at most ``config.tile_whole_max_pixels``
    pixels, tiled otherwise; both give the same map (see :mod:`eosdetect.tiling`).

    Parameters
    ----------
    image_model : (M, N, 3) ndarray of uint8
    """
    x = image_model.astype(np.float32) / 255.0
    margin = config.tile_margin()
    if image_model.shape[0] * image_model.shape[1] <= config.tile_whole_max_pixels:
        return predict_whole(x, predict_fn, margin=margin, align=config.align)
    return predict_tiled(
        x, predict_fn, tile_size=config.tile_size, margin=margin, align=config.align,
        batch_size=config.tile_batch_size, progress=progress,
    )


def detect(
    model,
    image: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    thresholds: Thresholds | None = None,
    keep_prob: bool = False,
    helper_gains=None,
) -> Result:
    """Find cells in one image.

    Parameters
    ----------
    model : eosdetect.models.store.Model
    image : (M, N, 3) ndarray of uint8
        RGB image (see :func:`eosdetect.io.read_image`).
    pixel_size_um : float, optional
        Input pixel size; default the model's ``input_pixel_size_um``.
    thresholds : Thresholds, optional
        Overrides the model's fitted thresholds.
    keep_prob : bool
        Keep the probability map in the result.
    helper_gains : (3,) array, optional
        White-balance gains for a helper with ``helper_white_balance``
        (default: measured on this image; a slide passes one set for all its
        blocks).

    Returns
    -------
    Result
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (M, N, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    cfg = model.config
    thr = thresholds if thresholds is not None else model.thresholds
    t0 = time.perf_counter()
    scale = cfg.scale_for(pixel_size_um)
    image_model = resize(image, scale)
    t1 = time.perf_counter()
    prob = predict_probability(model.predict_fn, image_model, cfg)
    t2 = time.perf_counter()
    labels = segment(prob, **thresholds_in_pixels(thr, cfg.pixel_size_um))
    cands_model = detections_from_labels(labels, prob)
    # back to input pixels, using the actual resize ratio per axis
    candidates = cands_model.rescaled(axis_factors(image.shape, image_model.shape))
    t3 = time.perf_counter()
    multiclass = cfg.multiclass
    class_probs = np.zeros((0, len(cfg.helper_classes)), np.float32) if multiclass else None
    if cfg.helper_enabled and len(candidates):
        image_helper = helper_view(image, cfg, pixel_size_um, model_view=image_model, gains=helper_gains)
        xy_h = (candidates.xy + 0.5) / np.array(axis_factors(image.shape, image_helper.shape)) - 0.5
        crops = extract_crops(image_helper, xy_h, cfg.helper_crop_size).astype(np.float32) / 255.0
        if multiclass:
            class_probs = model.class_probs_fn(crops)
            p = class_probs[:, cfg.counted_class_index]
        else:
            p = model.classify_fn(crops)
        candidates = candidates.with_score(p)
        detections = candidates.subset(p >= thr.helper_threshold)
    else:
        detections = candidates
    t4 = time.perf_counter()
    timings = {"resize": t1 - t0, "unet": t2 - t1, "watershed": t3 - t2, "helper": t4 - t3}
    used_px = cfg.input_pixel_size_um if pixel_size_um is None else float(pixel_size_um)
    return Result(
        detections=detections,
        candidates=candidates,
        labels=labels,
        scale=scale,
        image_shape=image.shape[:2],
        pixel_size_um=used_px,
        timings=timings,
        prob=prob if keep_prob else None,
        class_names=tuple(cfg.helper_classes) if multiclass else (),
        candidate_class=assign_classes(class_probs, cfg.counted_class_index, thr.helper_threshold) if multiclass else None,
        class_probs=class_probs,
    )
