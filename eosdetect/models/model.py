"""The model object and its pipeline: image -> probability map -> cells -> classes.

Every front end (the count and prelabel commands, slides, evaluation,
threshold fitting, training callbacks, the web service, Dask workers) runs
a model through these methods, so the steps exist once:

1. :meth:`Model.predict_prob`: the image resized to the model's pixel size,
   the U-Net's probability map (whole or tiled, see
   :mod:`eosdetect.core.tiling`) and, for two-stage models, the helper's
   view of the image (:func:`~eosdetect.models.crops.helper_view`);
2. :meth:`Model.segment`: watershed into instances, mapped back to input
   pixels;
3. :meth:`Model.classify`: each candidate's crop scored by the helper;
4. :meth:`Model.detect_from`: the three above with the thresholds applied.

:meth:`Model.detect` does all of it for one image; :meth:`Model.detect_slide`
does it block by block for images too large for memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eosdetect.core.geometry import axis_factors, resize
from eosdetect.core.postprocess import Detections, detections_from_labels, segment
from eosdetect.core.tiling import predict_tiled, predict_whole
from eosdetect.errors import ModelError
from eosdetect.io import folder_digest
from eosdetect.models.config import ModelConfig, Thresholds
from eosdetect.models.crops import HelperView, helper_crops, helper_view
from eosdetect.models.runtime import HELPER_LITERT, HELPER_WEIGHTS, MANIFEST, UNET_LITERT, UNET_WEIGHTS

#: Files of a model folder that do not change what it finds (left out of :meth:`Model.digest`):
#: its description, and the LiteRT conversion of its weights (equal results, tested).
DESCRIPTION_FILES = ("MODEL_CARD.md", "metrics.json", UNET_LITERT, HELPER_LITERT, MANIFEST)


@dataclass
class Result:
    """What :meth:`Model.detect` found in one image.

    Attributes
    ----------
    detections : Detections
        The counted cells (input-image pixels).
    candidates : Detections
        Every object the U-Net segmented, counted or not; ``score`` is the
        helper's probability of the counted class in two-stage models, the
        U-Net's otherwise.
    labels : (m, n) ndarray of int32
        Instance labels at model scale; ``candidates.label`` indexes them.
    scale : float
        Model pixels per input pixel.
    image_shape : (int, int)
        Input rows, columns.
    pixel_size_um : float
        The input pixel size the image was taken to have.
    timings : dict
        Seconds per step.
    prob : (m, n) ndarray of float32 or None
        The U-Net's probability map (model scale), when asked for.
    class_names : tuple of str
        Multi-class helpers: the classes (empty otherwise).
    candidate_class : (n,) ndarray of int64 or None
        Each candidate's class, an index into ``class_names``
        (:func:`assign_classes`).
    class_probs : (n, k) ndarray of float32 or None
        Each candidate's probability of every class.
    """

    detections: Detections
    candidates: Detections
    labels: np.ndarray
    scale: float
    image_shape: tuple[int, int]
    pixel_size_um: float
    timings: dict = field(default_factory=dict)
    prob: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    candidate_class: np.ndarray | None = None
    class_probs: np.ndarray | None = None

    @property
    def count(self) -> int:
        """Number of counted cells."""
        return len(self.detections)


@dataclass(frozen=True)
class ProbabilityMap:
    """The U-Net's view of one image (:meth:`Model.predict_prob`).

    ``np.asarray(pmap)`` is the probability map itself.

    Attributes
    ----------
    prob : (m, n) ndarray of float32
        Probability of the U-Net's class per pixel, at the model's scale.
    image_shape : (int, int)
        Input rows, columns.
    pixel_size_um : float
        The input pixel size given (default the model's; a model sized in
        pixels keeps a given one for densities, see ``ModelConfig.sizes_in_pixels``).
    scale : float
        Model pixels per input pixel.
    helper : HelperView or None
        The helper's picture of the image (two-stage models).
    seconds : float
        Time taken (resizing and the U-Net).
    """

    prob: np.ndarray
    image_shape: tuple[int, int]
    pixel_size_um: float
    scale: float
    helper: HelperView | None = None
    seconds: float = 0.0

    @property
    def factors(self) -> tuple[float, float]:
        """Input pixels per model pixel, ``(fx, fy)``."""
        return axis_factors(self.image_shape, self.prob.shape)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.prob, dtype=dtype)


def assign_classes(class_probs: np.ndarray, counted: int, threshold: float) -> np.ndarray:
    """Each candidate's class: the counted class where its probability reaches
    ``threshold`` (so the differential agrees with the count), else the most
    probable of the other classes.

    Parameters
    ----------
    class_probs : (n, k) ndarray of float
    counted : int
        Column of the counted class.
    threshold : float

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
    """Keyword arguments for :func:`eosdetect.core.postprocess.segment` at a pixel size."""
    px = float(pixel_size_um)
    return dict(
        prob_threshold=thresholds.prob_threshold,
        min_distance=thresholds.min_distance_um / px,
        smooth=thresholds.smooth_um / px,
        seed_h=thresholds.seed_h_um / px,
        min_area=thresholds.min_area_um2 / px**2,
        max_area=thresholds.max_area_um2 / px**2,
    )


def _check_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (M, N, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return image


class Model:
    """A model: its config, fitted thresholds and networks, and the pipeline that runs them.

    Load one with :func:`eosdetect.load_model`; networks are built and their
    weights read on first use.

    Attributes
    ----------
    path : pathlib.Path
        The model folder (``<in memory>`` for a model built in this process).
    config : ModelConfig
    thresholds : Thresholds
        Fitted post-processing thresholds; every method takes others per call.
    metrics : dict
        What the model scored (its ``metrics.json``).
    card : str
        Its ``MODEL_CARD.md``.
    runtime : str
        What runs its networks: ``"auto"``, ``"litert"`` or ``"keras"`` (see
        :mod:`eosdetect.models.runtime`); :attr:`runtime_used` says which did.
    """

    def __init__(self, path: Path, config: ModelConfig, thresholds: Thresholds,
                 metrics: dict | None = None, card: str = "", *, runtime: str = "auto"):
        self.path = Path(path)
        self.config = config
        self.thresholds = thresholds
        self.metrics = metrics or {}
        self.card = card
        self.runtime = runtime
        self._runtime_used = None
        self._unet = None
        self._helper = None
        self._predict_fn = None
        self._class_probs_fn = None
        self._digest = None
        self._unet_of = self._helper_of = None

    @classmethod
    def in_memory(cls, config: ModelConfig, thresholds: Thresholds, unet, helper=None) -> Model:
        """A model around networks that are already built (e.g. being trained)."""
        model = cls(Path("<in memory>"), config, thresholds)
        model._unet = unet
        model._helper = helper
        return model

    @classmethod
    def from_functions(cls, config: ModelConfig, thresholds: Thresholds, predict_fn, class_probs_fn=None) -> Model:
        """A model around plain functions instead of networks (a network being
        trained, another runtime, or a stand-in in tests).

        Parameters
        ----------
        predict_fn : callable
            ``(n, M, N, 3) float32 -> (n, M, N)`` probabilities.
        class_probs_fn : callable, optional
            ``(n, S, S, 3) float32 -> (n, k)`` helper probabilities (two-stage configs).
        """
        model = cls(Path("<in memory>"), config, thresholds)
        model._predict_fn = predict_fn
        model._class_probs_fn = class_probs_fn
        return model

    @classmethod
    def combined(cls, config: ModelConfig, thresholds: Thresholds, unet_of: Model, helper_of: Model) -> Model:
        """A model that runs the U-Net of ``unet_of`` and the helper of ``helper_of``
        (each on its own runtime), with ``config`` and ``thresholds``."""
        model = cls(unet_of.path, config, thresholds, runtime=unet_of.runtime)
        model._unet_of, model._helper_of = unet_of, helper_of
        return model

    def digest(self) -> str | None:
        """A hash of the model folder's files (weights included; None for a model
        only in memory). Resume records keep it, so that results of other weights
        are not taken as done."""
        if self._digest is None and self.path.is_dir():
            self._digest = folder_digest(self.path, skip=DESCRIPTION_FILES)
        return self._digest

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"Model({self.config.name!r} v{self.config.version}, {self.path})"

    # ------------------------------------------------------------------ networks
    @property
    def runtime_used(self) -> str:
        """``"litert"`` or ``"keras"``: what runs this model's networks (decided on first use)."""
        if self._runtime_used is None:
            if self._unet_of is not None:
                self._runtime_used = self._unet_of.runtime_used
            elif self._unet is not None or self._predict_fn is not None or not self.path.is_dir():
                self._runtime_used = "keras"  # networks built in this process
            else:
                from eosdetect.models.runtime import choose_runtime

                self._runtime_used = choose_runtime(self.path, self.config, self.runtime)
        return self._runtime_used

    @property
    def unet(self):
        """The U-Net (a Keras model; needs TensorFlow)."""
        if self._unet is None:
            if self._unet_of is not None:
                return self._unet_of.unet
            from eosdetect.models.runtime import import_tensorflow
            from eosdetect.models.unet import build_unet

            import_tensorflow(f"the Keras networks of {self.path}")
            self._unet = build_unet(self.config)
            load_weights(self._unet, self.path / UNET_WEIGHTS)
        return self._unet

    @property
    def helper(self):
        """The helper classifier (a Keras model; needs TensorFlow), or None for a one-stage model."""
        if not self.config.helper_enabled:
            return None
        if self._helper is None:
            if self._helper_of is not None:
                return self._helper_of.helper
            from eosdetect.models.helper_cnn import build_helper
            from eosdetect.models.runtime import import_tensorflow

            import_tensorflow(f"the Keras networks of {self.path}")
            self._helper = build_helper(self.config)
            load_weights(self._helper, self.path / HELPER_WEIGHTS)
        return self._helper

    @property
    def predict_fn(self):
        """``(n, M, N, 3) float32 -> (n, M, N)`` U-Net probabilities."""
        if self._predict_fn is None:
            if self._unet_of is not None:
                self._predict_fn = self._unet_of.predict_fn
            elif self.runtime_used == "litert":
                from eosdetect.models.litert import make_predict_fn

                self._predict_fn = make_predict_fn(self.path / UNET_LITERT, tta=self.config.unet_tta)
            else:
                from eosdetect.models.unet import make_predict_fn

                self._predict_fn = make_predict_fn(self.unet, tta=self.config.unet_tta)
        return self._predict_fn

    @property
    def class_probs_fn(self):
        """``(n, S, S, 3) float32 -> (n, k)`` helper probabilities (one column per
        ``helper_classes``, or a single one), or None without a helper."""
        if self._class_probs_fn is None and self.config.helper_enabled:
            if self._helper_of is not None:
                self._class_probs_fn = self._helper_of.class_probs_fn
            elif self.runtime_used == "litert":
                from eosdetect.models.litert import make_classify_fn

                self._class_probs_fn = make_classify_fn(self.path / HELPER_LITERT, self.config.helper_kind)
            else:
                from eosdetect.models.helper_cnn import make_classify_fn

                self._class_probs_fn = make_classify_fn(self.helper, self.config.helper_kind)
        return self._class_probs_fn

    # ------------------------------------------------------------------ pipeline
    def thresholds_for(self, thresholds: Thresholds | None = None, **overrides) -> Thresholds:
        """The thresholds a call uses: ``thresholds`` (default the model's), with
        ``overrides`` (fields of :class:`~eosdetect.models.config.Thresholds`) replaced."""
        base = self.thresholds if thresholds is None else thresholds
        return base.replace(**overrides) if overrides else base

    def predict_prob(self, image: np.ndarray, *, pixel_size_um: float | None = None, helper_gains=None,
                     progress=None) -> ProbabilityMap:
        """The U-Net's probability map of an image (and the helper's view of it).

        Parameters
        ----------
        image : (M, N, 3) ndarray of uint8
            RGB image.
        pixel_size_um : float, optional
            Its pixel size; default the model's ``input_pixel_size_um``.
        helper_gains : (3,) array_like, optional
            White balance for a helper with ``helper_white_balance`` (default:
            measured on this image).
        progress : callable, optional
            Called after each batch of tiles (tiled images only).

        Returns
        -------
        ProbabilityMap
        """
        image = _check_rgb(image)
        cfg = self.config
        t0 = time.perf_counter()
        scale = cfg.scale_for(pixel_size_um)
        image_model = resize(image, scale)
        x = image_model.astype(np.float32) / 255.0
        margin = cfg.tile_margin()
        if image_model.shape[0] * image_model.shape[1] <= cfg.tile_whole_max_pixels:
            prob = predict_whole(x, self.predict_fn, margin=margin, align=cfg.align)
        else:
            prob = predict_tiled(x, self.predict_fn, tile_size=cfg.tile_size, margin=margin, align=cfg.align,
                                 batch_size=cfg.tile_batch_size, progress=progress)
        view = (helper_view(image, cfg, pixel_size_um, model_view=image_model, gains=helper_gains)
                if cfg.helper_enabled else None)
        given_px = cfg.input_pixel_size_um if pixel_size_um is None else float(pixel_size_um)
        return ProbabilityMap(prob, image.shape[:2], given_px, scale, view, time.perf_counter() - t0)

    def segment(self, pmap: ProbabilityMap, thresholds: Thresholds | None = None) -> tuple[np.ndarray, Detections]:
        """Instances of a probability map: ``(labels, candidates)``.

        ``labels`` is the instance image at model scale; ``candidates`` the
        instances in input pixels, scored by the U-Net.
        """
        thr = self.thresholds_for(thresholds)
        labels = segment(pmap.prob, **thresholds_in_pixels(thr, self.config.pixel_size_um))
        return labels, detections_from_labels(labels, pmap.prob).rescaled(pmap.factors)

    def classify(self, view: HelperView, xy) -> np.ndarray:
        """The helper's class probabilities of the cells at ``xy`` (x, y; input pixels).

        Returns
        -------
        (n, k) ndarray of float32
            One column per ``helper_classes`` (one column for a one-class helper).
        """
        cfg = self.config
        if not cfg.helper_enabled:
            raise ValueError(f"model {cfg.name!r} has no helper classifier")
        crops = view.crops(xy, cfg.helper_crop_size)
        return self.class_probs_fn(crops.astype(np.float32) / 255.0)

    def helper_crops(self, image: np.ndarray, xy, *, pixel_size_um: float | None = None, extra: int = 0,
                     gains=None) -> np.ndarray:
        """Crops around ``xy`` (input pixels) as this model's helper sees them
        (see :func:`eosdetect.models.crops.helper_crops`)."""
        return helper_crops(image, self.config, xy, pixel_size_um, extra=extra, gains=gains)

    def candidates(self, pmap: ProbabilityMap, thresholds: Thresholds | None = None
                   ) -> tuple[np.ndarray, Detections, np.ndarray | None]:
        """``(labels, candidates, class_probs)``: :meth:`segment`, then, for
        two-stage models, each candidate scored by the helper (its ``score``
        becomes the probability of the counted class; ``class_probs`` holds
        all classes, None for a one-stage model)."""
        labels, cands = self.segment(pmap, thresholds)
        return (labels, *self._scored(pmap, cands))

    def _scored(self, pmap: ProbabilityMap, cands: Detections) -> tuple[Detections, np.ndarray | None]:
        """``cands`` with the helper's score of the counted class, and every class's probability
        (unchanged, and None, for a one-stage model)."""
        cfg = self.config
        if not cfg.helper_enabled:
            return cands, None
        if len(cands):
            probs = self.classify(pmap.helper, cands.xy)
        else:
            probs = np.zeros((0, len(cfg.helper_classes) or 1), np.float32)
        return cands.with_score(probs[:, cfg.counted_class_index]), probs

    def counted(self, candidates: Detections, thresholds: Thresholds | None = None) -> Detections:
        """The candidates that are counted: all for a one-stage model, those
        whose helper score reaches ``helper_threshold`` otherwise."""
        if not self.config.helper_enabled:
            return candidates
        return candidates.subset(candidates.score >= self.thresholds_for(thresholds).helper_threshold)

    def detect_from(self, pmap: ProbabilityMap, thresholds: Thresholds | None = None, *,
                    keep_prob: bool = False) -> Result:
        """Cells of an image from its :meth:`predict_prob` (thresholds can change, the map is reused)."""
        cfg = self.config
        thr = self.thresholds_for(thresholds)
        t0 = time.perf_counter()
        labels, cands = self.segment(pmap, thr)
        t1 = time.perf_counter()
        cands, probs = self._scored(pmap, cands)
        t2 = time.perf_counter()
        multiclass = cfg.multiclass
        return Result(
            detections=self.counted(cands, thr),
            candidates=cands,
            labels=labels,
            scale=pmap.scale,
            image_shape=pmap.image_shape,
            pixel_size_um=pmap.pixel_size_um,
            timings={"unet": pmap.seconds, "watershed": t1 - t0, "helper": t2 - t1},
            prob=pmap.prob if keep_prob else None,
            class_names=tuple(cfg.helper_classes) if multiclass else (),
            candidate_class=(assign_classes(probs, cfg.counted_class_index, thr.helper_threshold)
                             if multiclass else None),
            class_probs=probs if multiclass else None,
        )

    def detect(self, image: np.ndarray, *, pixel_size_um: float | None = None, thresholds: Thresholds | None = None,
               keep_prob: bool = False, helper_gains=None, **overrides) -> Result:
        """Find the cells in one image.

        Parameters
        ----------
        image : (M, N, 3) ndarray of uint8
            RGB image (see :func:`eosdetect.read_image`).
        pixel_size_um : float, optional
            Its pixel size in micrometres; default the model's
            ``input_pixel_size_um``.
        thresholds : Thresholds, optional
            Replaces the model's fitted thresholds.
        keep_prob : bool
            Keep the U-Net's probability map in the result.
        helper_gains : (3,) array_like, optional
            White balance for the helper (default: measured on this image).
        **overrides
            Single thresholds for this call, e.g. ``prob_threshold=0.6`` or
            ``helper_threshold=0.5`` (fields of
            :class:`~eosdetect.models.config.Thresholds`).

        Returns
        -------
        Result
            Coordinates in pixels of ``image``.
        """
        thr = self.thresholds_for(thresholds, **overrides)
        return self.detect_from(self.predict_prob(image, pixel_size_um=pixel_size_um, helper_gains=helper_gains),
                                thr, keep_prob=keep_prob)

    def detect_slide(self, source, *, pixel_size_um: float | None = None, thresholds: Thresholds | None = None,
                     block_px: int = 1024, progress=None, stop=None, **overrides):
        """Find the cells of an image too large for memory, block by block.

        Parameters
        ----------
        source : path, SlideReader or (M, N, 3) array_like of uint8
            A whole-slide file, an open :class:`eosdetect.slideio.SlideReader`,
            or any array with NumPy slicing (NumPy, zarr, dask).
        pixel_size_um : float, optional
            Default: the slide's metadata, else the model's input pixel size.
        block_px : int
            Block side at the model's scale.
        progress : callable, optional
            Called with ``(blocks done, blocks to do)``.
        stop : callable, optional
            Checked before each block; when it returns True the slide stops
            with :class:`~eosdetect.models.slides.SlideStopped`.

        Returns
        -------
        SlideCount
        """
        from eosdetect.models.slides import detect_slide

        return detect_slide(self, source, pixel_size_um=pixel_size_um,
                            thresholds=self.thresholds_for(thresholds, **overrides), block_px=block_px,
                            progress=progress, stop=stop)

    # ------------------------------------------------------------------ description
    def summary(self) -> dict:
        """Name, version, classes and pixel sizes (for listings and summary.json)."""
        return {
            "name": self.config.name,
            "version": self.config.version,
            "class_name": self.config.class_name,
            "path": str(self.path),
            "pixel_size_um": self.config.pixel_size_um,
            "input_pixel_size_um": self.config.input_pixel_size_um,
            "two_stage": self.config.helper_enabled,
            "classes": list(self.config.helper_classes) if self.config.multiclass else [self.config.class_name],
        }


def load_weights(network, path: Path) -> None:
    """Read a network's weights file; a missing or unreadable one is a :class:`ModelError`."""
    if not path.is_file():
        raise ModelError(f"{path}: weights file is missing")
    try:
        network.load_weights(str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot load weights ({str(exc).splitlines()[0]})") from None
