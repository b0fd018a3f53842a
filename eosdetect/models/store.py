"""Model folders: find, load and save them.

A model is a folder::

    config.json          ModelConfig (architecture, pixel size, tiles, classes, version)
    weights.weights.h5   U-Net weights
    helper.weights.h5    helper classifier weights (two-stage models only)
    thresholds.json      post-processing parameters fitted on validation data
    metrics.json         what it scored, on what data, how measured
    MODEL_CARD.md        training data, licence, intended use, limits

Bundled models live in ``eosdetect/models/bundled/<name>/`` and ship with the
package. A name that is neither a bundled model nor a folder is an error
that lists the known names; there is no silent fallback.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from ..errors import ConfigError, InputError, ModelError
from ..io import atomic_write_text, read_json, write_json
from .config import ModelConfig, Thresholds

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_MODEL = "eosinophil-smear"
UNET_WEIGHTS = "weights.weights.h5"
HELPER_WEIGHTS = "helper.weights.h5"


def folder_digest(folder: Path, skip: tuple[str, ...] = ()) -> str:
    """A short hash of the names and bytes of the files in ``folder`` (but ``skip``)."""
    digest = hashlib.sha1()
    for p in sorted(Path(folder).iterdir()):
        if p.is_file() and p.name not in skip:
            digest.update(os.fsencode(p.name) + b"\0")
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def bundled_names() -> list[str]:
    """Names of the models shipped with the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model_dir(name_or_path: str | os.PathLike | None = None) -> Path:
    """Turn a bundled model name or a folder path into the model's folder.

    Raises
    ------
    ModelError
        For an unknown name (the message lists the bundled names) or a folder
        without ``config.json``.
    """
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    names = bundled_names()
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            if text in names:  # a plain folder of that name (e.g. `-o nuclei-he`) does not hide the model
                return BUNDLED_DIR / text
            raise ModelError(f"{candidate}: not a model folder (config.json is missing)")
        return candidate
    if text in names:
        return BUNDLED_DIR / text
    looks_like_path = os.sep in text or "/" in text or text.startswith(".")
    if looks_like_path or candidate.exists():
        raise ModelError(f"{candidate}: no such model folder")
    raise ModelError(
        f"unknown model {text!r}; bundled models: {', '.join(names) or '(none)'} "
        "(or give the path of a model folder)"
    )


class Model:
    """A loaded model folder. Networks are built and their weights read on first use."""

    def __init__(self, path: Path, config: ModelConfig, thresholds: Thresholds,
                 metrics: dict | None = None, card: str = ""):
        self.path = Path(path)
        self.config = config
        self.thresholds = thresholds
        self.metrics = metrics or {}
        self.card = card
        self._unet = None
        self._helper = None
        self._predict_fn = None
        self._classify_fn = None
        self._class_probs_fn = None
        self._digest = None

    @classmethod
    def in_memory(cls, config: ModelConfig, thresholds: Thresholds, unet, helper=None) -> Model:
        """A model around networks that are already built (e.g. just trained)."""
        model = cls(Path("<in memory>"), config, thresholds)
        model._unet = unet
        model._helper = helper
        return model

    @property
    def name(self) -> str:
        return self.config.name

    def digest(self) -> str | None:
        """A hash of the model folder's files (weights included); None for a model only in memory.
        Resume records keep it, so that results of other weights are not taken as done."""
        if self._digest is None and self.path.is_dir():
            self._digest = folder_digest(self.path, skip=("MODEL_CARD.md", "metrics.json"))
        return self._digest

    def __repr__(self) -> str:
        return f"Model({self.config.name!r} v{self.config.version}, {self.path})"

    # ------------------------------------------------------------------ networks
    @property
    def unet(self):
        if self._unet is None:
            from .unet import build_unet

            self._unet = build_unet(self.config)
            _load_weights(self._unet, self.path / UNET_WEIGHTS)
        return self._unet

    @property
    def helper(self):
        if not self.config.helper_enabled:
            return None
        if self._helper is None:
            from .helper_cnn import build_helper

            self._helper = build_helper(self.config)
            _load_weights(self._helper, self.path / HELPER_WEIGHTS)
        return self._helper

    @property
    def predict_fn(self):
        """``(n, M, N, 3) float32 -> (n, M, N)`` U-Net probabilities."""
        if self._predict_fn is None:
            from .unet import make_predict_fn

            self._predict_fn = make_predict_fn(self.unet, tta=self.config.unet_tta)
        return self._predict_fn

    @property
    def class_probs_fn(self):
        """``(n, S, S, 3) float32 -> (n, k)`` helper probabilities (one column per
        ``helper_classes``, or a single one), or None without a helper."""
        if self._class_probs_fn is None and self.config.helper_enabled:
            from .helper_cnn import make_classify_fn

            self._class_probs_fn = make_classify_fn(self.helper, self.config.helper_kind)
        return self._class_probs_fn

    @property
    def classify_fn(self):
        """``(n, S, S, 3) float32 -> (n,)`` helper probabilities of the counted class, or None."""
        if self._classify_fn is None and self.config.helper_enabled:
            probs_fn, column = self.class_probs_fn, self.config.counted_class_index

            def classify(batch):
                return probs_fn(batch)[:, column]

            self._classify_fn = classify
        return self._classify_fn

    def summary(self) -> dict:
        """Name, version, classes and headline metrics (for listings and summary.json)."""
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


def _load_weights(network, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"{path}: weights file is missing")
    try:
        network.load_weights(str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot load weights ({str(exc).splitlines()[0]})") from None


def load_model(name_or_path: str | os.PathLike | None = None) -> Model:
    """Load a bundled model by name, or a model folder by path (default: the bundled default)."""
    path = resolve_model_dir(name_or_path)
    try:
        config = ModelConfig.from_dict(read_json(path / "config.json"), source=str(path / "config.json"))
        thr_path = path / "thresholds.json"
        if not thr_path.is_file():  # built-in defaults would count differently, and silently
            raise ModelError(f"{thr_path}: missing; a model folder needs the thresholds fitted with its weights")
        thresholds = Thresholds.from_dict(read_json(thr_path), source=str(thr_path))
        metrics = read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    except (InputError, ConfigError) as exc:
        raise ModelError(str(exc)) from None
    card_path = path / "MODEL_CARD.md"
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    return Model(path, config, thresholds, metrics, card)


def save_model(
    path: str | os.PathLike,
    config: ModelConfig,
    thresholds: Thresholds,
    unet,
    helper=None,
    *,
    metrics: dict | None = None,
    card: str | None = None,
) -> Path:
    """Write a complete model folder. Weights go through a temporary file first.

    Only the networks' weights are stored (no optimizer state), in freshly
    built networks, so the files stay small and load into :func:`load_model`.
    """
    from .helper_cnn import build_helper
    from .unet import build_unet

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    clean = build_unet(config)
    clean.set_weights(unet.get_weights())
    _save_weights(clean, path / UNET_WEIGHTS)
    if helper is not None:
        clean_helper = build_helper(config)
        clean_helper.set_weights(helper.get_weights())
        _save_weights(clean_helper, path / HELPER_WEIGHTS)
    elif (path / HELPER_WEIGHTS).is_file():  # left by a two-stage model this one replaces
        (path / HELPER_WEIGHTS).unlink()
    write_json(path / "config.json", config.to_dict())
    write_json(path / "thresholds.json", thresholds.to_dict())
    if metrics is not None:
        write_json(path / "metrics.json", metrics)
    if card is not None:
        atomic_write_text(path / "MODEL_CARD.md", card)
    return path


def _save_weights(network, target: Path) -> None:
    tmp = target.with_name(f".{target.stem}.tmp.weights.h5")
    network.save_weights(str(tmp))
    shutil.move(str(tmp), str(target))


def with_helper_of(base: Model, other: Model) -> Model:
    """``base``'s U-Net and thresholds with ``other``'s helper, its crop
    settings, class name and counting threshold."""
    import dataclasses

    if not other.config.helper_enabled:
        raise ModelError(f"{other.path}: has no helper (not a two-stage model)")
    helper_fields = {f.name: getattr(other.config, f.name) for f in dataclasses.fields(other.config)
                     if f.name.startswith("helper_")}
    config = dataclasses.replace(base.config, class_name=other.config.class_name, **helper_fields)
    thresholds = base.thresholds.replace(helper_threshold=other.thresholds.helper_threshold)
    model = Model.in_memory(config, thresholds, base.unet, other.helper)
    model.path = base.path
    digests = (base.digest(), other.digest())
    if None not in digests:
        model._digest = hashlib.sha1(":".join(digests).encode()).hexdigest()[:16]
    return model
