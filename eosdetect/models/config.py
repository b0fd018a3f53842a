"""Model configuration and fitted thresholds, saved as JSON beside the weights.

One flat dataclass per concern with prefixed fields (``unet_*``, ``helper_*``,
``tile_*``), a ``config_version``, and loading that rejects unknown keys and
migrates older versions (the StarDist/CSBDeep convention).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from eosdetect.errors import ConfigError, ModelError

#: Version of the ``config.json`` layout written by this eosdetect.
CONFIG_VERSION = 1

#: Functions that lift a config dict from version ``v`` to ``v + 1``.
#: Version 0 is the layout of the 0.0.x development snapshots, which called the
#: pixel size ``um_per_px`` and had no ``config_version`` key.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {
    0: lambda d: {
        **{k: v for k, v in d.items() if k != "um_per_px"},
        **({"pixel_size_um": d["um_per_px"]} if "um_per_px" in d else {}),
        "config_version": 1,
    },
}


#: Input pixels may be resized by at most these factors per axis to reach a model's pixel size
#: (a wrong --pixel-size would otherwise ask for a terabyte-sized image, or shrink it to nothing).
MIN_SCALE = 1 / 64
MAX_SCALE = 8.0

#: What the second stage of a two-stage model can be (see :mod:`eosdetect.models.helper_cnn`).
HELPER_KINDS = ("cnn", "colour")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and run it on a new image.

    Scale: the network works at ``pixel_size_um`` micrometres per pixel. An
    input image of pixel size ``p`` (``--pixel-size``, else
    ``input_pixel_size_um``, the pixel size of the images the model was trained
    on) is resized by ``p / pixel_size_um`` before prediction; detections are
    reported back in input pixels.
    """

    config_version: int = CONFIG_VERSION
    name: str = "unnamed"
    version: str = "0.1.0"
    #: What one detection is (the counted class), e.g. ``"eosinophil"``.
    class_name: str = "cell"
    #: What the U-Net segments; differs from ``class_name`` in two-stage models
    #: (U-Net finds white cells, the helper says which are eosinophils).
    unet_class_name: str = "cell"
    description: str = ""

    # -- scale
    pixel_size_um: float = 0.5
    input_pixel_size_um: float = 0.5
    #: False when the pixel size of the training images was estimated, not published.
    pixel_size_measured: bool = True
    #: Typical diameter of one object, micrometres.
    cell_diameter_um: float = 10.0

    # -- U-Net
    unet_depth: int = 3
    unet_base_filters: int = 16
    unet_convs_per_level: int = 2
    unet_batchnorm: bool = True
    unet_activation: str = "relu"
    #: Average the map over the 8 flips/rotations of the input (8x slower, smoother).
    unet_tta: bool = False

    # -- tiled prediction
    #: Tile edge in model pixels (rounded to a multiple of ``2 ** unet_depth``).
    tile_size: int = 512
    #: Predict the whole image in one pass when it has at most this many model pixels.
    tile_whole_max_pixels: int = 4_000_000
    tile_batch_size: int = 4

    # -- optional second stage
    helper_enabled: bool = False
    #: ``"cnn"``: a small convolutional network on the crop. ``"colour"``: a logistic
    #: regression on 11 colour statistics of the crop's centre (12 weights;
    #: generalises better when only a few dozen positives are labelled).
    helper_kind: str = "cnn"
    #: White-balance the image the helper crops from, so that its unstained background
    #: is neutral grey (:func:`~eosdetect.models.helper_cnn.background_gains`): colour
    #: decisions then survive another camera's or lamp's colour cast.
    helper_white_balance: bool = False
    helper_pixel_size_um: float = 0.5
    helper_crop_size: int = 64
    helper_base_filters: int = 16
    helper_depth: int = 3
    #: Classes of a multi-class helper (softmax over them), e.g. PBC's white-cell classes;
    #: ``class_name`` must be one of them (the counted one). Empty: a one-output helper
    #: that scores ``class_name`` alone.
    helper_classes: list = field(default_factory=list)
    #: Classes left out of the white-cell differential's percentages (e.g. ``platelet``,
    #: ``other``: objects that are not white cells). Their counts are still reported.
    helper_not_in_differential: list = field(default_factory=list)

    # -- provenance
    training: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` if a value is out of range."""
        checks = [
            (self.pixel_size_um > 0, "pixel_size_um must be > 0"),
            (self.input_pixel_size_um > 0, "input_pixel_size_um must be > 0"),
            (self.cell_diameter_um > 0, "cell_diameter_um must be > 0"),
            (1 <= self.unet_depth <= 6, "unet_depth must be in 1..6"),
            (1 <= self.unet_base_filters <= 256, "unet_base_filters must be in 1..256"),
            (1 <= self.unet_convs_per_level <= 4, "unet_convs_per_level must be in 1..4"),
            (self.unet_activation in ("relu", "elu", "swish"), "unet_activation must be relu, elu or swish"),
            (self.tile_size >= 2 ** self.unet_depth * 4, "tile_size too small for unet_depth"),
            (self.tile_batch_size >= 1, "tile_batch_size must be >= 1"),
            (self.helper_crop_size >= 16, "helper_crop_size must be >= 16"),
            (1 <= self.helper_depth <= 5, "helper_depth must be in 1..5"),
            (self.helper_kind in HELPER_KINDS, f"helper_kind must be one of {', '.join(HELPER_KINDS)}"),
            (all(isinstance(c, str) and c for c in self.helper_classes)
             and len(set(self.helper_classes)) == len(self.helper_classes),
             "helper_classes must be distinct, non-empty names"),
            (not self.helper_classes or self.class_name in self.helper_classes,
             f"class_name {self.class_name!r} must be one of helper_classes {self.helper_classes}"),
            (not self.helper_classes or self.helper_kind == "cnn", "helper_classes needs helper_kind: cnn"),
            (set(self.helper_not_in_differential) <= set(self.helper_classes),
             "helper_not_in_differential must name classes of helper_classes"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    # ----------------------------------------------------------------- derived
    @property
    def align(self) -> int:
        """Tile origins and padded sizes are multiples of this (the pooling stride)."""
        return 2 ** self.unet_depth

    @property
    def multiclass(self) -> bool:
        """True when the helper tells several classes apart (``helper_classes``)."""
        return self.helper_enabled and bool(self.helper_classes)

    @property
    def counted_class_index(self) -> int:
        """Index of ``class_name`` among ``helper_classes`` (0 for a one-output helper)."""
        return self.helper_classes.index(self.class_name) if self.helper_classes else 0

    @property
    def cell_diameter_px(self) -> float:
        """Typical object diameter in model pixels."""
        return self.cell_diameter_um / self.pixel_size_um

    def receptive_field(self) -> int:
        """Receptive field of one output pixel of the U-Net, in model pixels."""
        return unet_receptive_field(self.unet_depth, self.unet_convs_per_level)

    def tile_margin(self) -> int:
        """Context kept around each tile's trusted centre: half the receptive
        field, rounded up to a multiple of :attr:`align`."""
        half = (self.receptive_field() + 1) // 2
        return int(math.ceil(half / self.align) * self.align)

    @property
    def sizes_in_pixels(self) -> bool:
        """True for a model trained without a pixel size (``eosdetect train``
        without ``--pixel-size``): its "micrometres" are pixels of its training
        images, so another pixel size cannot be converted to its scale."""
        return (not self.pixel_size_measured and self.input_pixel_size_um == 1.0
                and not self.training.get("recipe"))

    def input_pixel_size(self, given: float | None) -> float:
        """The pixel size, in this model's size unit, of an input said to be
        ``given`` um/px: ``given``, or the training images' pixel size when
        none is given or the model's sizes are in pixels (a real pixel size
        then serves densities only)."""
        return self.input_pixel_size_um if given is None or self.sizes_in_pixels else given

    def scale_for(self, input_pixel_size_um: float | None) -> float:
        """Resize factor from input pixels to model pixels."""
        p = self.input_pixel_size(input_pixel_size_um)
        if not p > 0:
            raise ConfigError(f"pixel size must be > 0, got {p}")
        scale = p / self.pixel_size_um
        if not MIN_SCALE <= scale <= MAX_SCALE:
            raise ConfigError(
                f"pixel size {p:g} um/px is {scale:.3g} times this model's {self.pixel_size_um:g} um/px; "
                f"it must be between {self.pixel_size_um * MIN_SCALE:.3g} and {self.pixel_size_um * MAX_SCALE:.3g} "
                "um/px (check the pixel size: cells would be far too small or too large to see)"
            )
        return scale

    # --------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> ModelConfig:
        """Build from a dict, migrating old versions and rejecting unknown keys."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.get("config_version", 0)
        if not isinstance(version, int):
            raise ConfigError(f"{source}: config_version must be an integer, got {version!r}")
        if version > CONFIG_VERSION:
            raise ModelError(
                f"{source}: config_version {version} is newer than this eosdetect "
                f"supports ({CONFIG_VERSION}); upgrade eosdetect to use this model"
            )
        while version < CONFIG_VERSION:
            if version not in MIGRATIONS:
                raise ModelError(f"{source}: config_version {version} can no longer be read")
            data = MIGRATIONS[version](data)
            version = data["config_version"]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config keys {unknown}")
        defaults = cls()
        for key, value in data.items():
            want = type(getattr(defaults, key))  # the type of the key's default
            ok = isinstance(value, want) and (want is bool or not isinstance(value, bool))
            if want is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok:
                kind = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
                        dict: "a mapping", list: "a list"}.get(want, want.__name__)
                raise ConfigError(f"{source}: {key} must be {kind}, got {value!r}")
        try:
            return cls(**data)
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"{source}: {exc}") from None


def unet_receptive_field(depth: int, convs_per_level: int = 2, kernel: int = 3) -> int:
    """Receptive field (pixels) of one output pixel of :func:`~eosdetect.models.unet.build_unet`.

    Follows the deepest path: ``convs_per_level`` 3x3 convolutions at every
    level going down and coming up, 2x2 max-pooling between levels, 2x2
    stride-2 transposed convolutions (which do not widen the field) going up.

    >>> unet_receptive_field(1, 2)
    18
    """
    rf, jump = 1, 1
    for _ in range(depth):  # encoder
        rf += convs_per_level * (kernel - 1) * jump
        rf += (2 - 1) * jump  # pooling
        jump *= 2
    rf += convs_per_level * (kernel - 1) * jump  # bottleneck
    for _ in range(depth):  # decoder
        jump //= 2
        rf += convs_per_level * (kernel - 1) * jump
    return rf


@dataclass
class Thresholds:
    """Post-processing parameters, fitted on validation images after training.

    Distances and areas are in micrometres so that they stay valid whatever the
    input pixel size.
    """

    #: U-Net probability above which a pixel belongs to a cell.
    prob_threshold: float = 0.5
    #: Smallest distance between two cell centres (watershed seeds), micrometres.
    min_distance_um: float = 3.0
    #: Gaussian smoothing of the distance map before seed detection, micrometres.
    smooth_um: float = 0.5
    #: Seeds must stand this far (micrometres) above the saddle to their neighbour (h-maxima).
    seed_h_um: float = 0.5
    #: Objects outside this area range (square micrometres) are dropped.
    min_area_um2: float = 5.0
    max_area_um2: float = 1.0e9
    #: Helper CNN probability above which a candidate counts (two-stage models).
    helper_threshold: float = 0.5

    def __post_init__(self):
        for name in ("min_distance_um", "smooth_um", "seed_h_um", "min_area_um2", "max_area_um2"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        for name in ("prob_threshold", "helper_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1]")
        if self.max_area_um2 < self.min_area_um2:
            raise ConfigError("max_area_um2 must be >= min_area_um2")

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "thresholds") -> Thresholds:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown threshold keys {unknown}")
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        try:
            return cls(**{k: float(v) for k, v in data.items()})
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def replace(self, **overrides) -> Thresholds:
        """Copy with the given (non-None) fields replaced."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
