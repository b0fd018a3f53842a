"""Model folders: find, load and save them.

A model is a folder::

    config.json          ModelConfig (architecture, pixel size, tiles, classes, version)
    weights.weights.h5   U-Net weights
    helper.weights.h5    helper classifier weights (two-stage models only)
    unet.tflite, helper.tflite, litert.json
                         the same networks converted to LiteRT (see eosdetect.models.runtime)
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
from typing import TYPE_CHECKING

from eosdetect.errors import ConfigError, InputError, ModelError
from eosdetect.io import atomic_write_text, read_json, write_json
from eosdetect.models.config import ModelConfig, Thresholds

if TYPE_CHECKING:
    from eosdetect.models.model import Model

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_MODEL = "eosinophil-smear"


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


def read_config(name_or_path: str | os.PathLike | None = None) -> ModelConfig:
    """A model's configuration alone (:func:`resolve_model_dir`, then its ``config.json``): what an
    application checks its settings against before anything heavy is imported or loaded.

    Raises
    ------
    ModelError
        As :func:`load_model`.

    >>> read_config("nuclei-he").class_name
    'nucleus'
    """
    path = resolve_model_dir(name_or_path)
    try:
        return ModelConfig.from_dict(read_json(path / "config.json"), source=str(path / "config.json"))
    except (InputError, ConfigError) as exc:
        raise ModelError(str(exc)) from None


def load_model(name_or_path: str | os.PathLike | None = None, *, runtime: str = "auto") -> Model:
    """Load a bundled model by name, or a model folder by path.

    Parameters
    ----------
    name_or_path : str or path-like, optional
        A bundled model's name (:func:`bundled_names`) or a model folder;
        default :data:`DEFAULT_MODEL`.
    runtime : {"auto", "litert", "keras"}
        What runs its networks (:mod:`eosdetect.models.runtime`): by default
        LiteRT, which needs no TensorFlow, where the folder has a current
        conversion.

    Returns
    -------
    Model
        Its networks are read on first use.

    Raises
    ------
    ModelError
        For an unknown name (the message lists the bundled ones), a folder
        that is not a model, or a damaged model file.

    Examples
    --------
    >>> model = load_model("nuclei-he")
    >>> model.config.class_name, model.config.pixel_size_um
    ('nucleus', 0.5)
    >>> load_model("nuclei")
    Traceback (most recent call last):
    ...
    eosdetect.errors.ModelError: unknown model 'nuclei'; bundled models: eosinophil-smear, nuclei-he (or give the path of a model folder)
    """
    from eosdetect.models.model import Model
    from eosdetect.models.runtime import RUNTIMES

    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    path = resolve_model_dir(name_or_path)
    config = read_config(path)
    try:
        thr_path = path / "thresholds.json"
        if not thr_path.is_file():  # built-in defaults would count differently, and silently
            raise ModelError(f"{thr_path}: missing; a model folder needs the thresholds fitted with its weights")
        thresholds = Thresholds.from_dict(read_json(thr_path), source=str(thr_path))
        metrics = read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    except (InputError, ConfigError) as exc:
        raise ModelError(str(exc)) from None
    card_path = path / "MODEL_CARD.md"
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    return Model(path, config, thresholds, metrics, card, runtime=runtime)


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
    built networks, so the files stay small and load into :func:`load_model`;
    then they are converted to LiteRT (:func:`eosdetect.models.export.export_litert`),
    so that the folder counts without TensorFlow.
    """
    from eosdetect.models.helper_cnn import build_helper
    from eosdetect.models.model import HELPER_LITERT, HELPER_WEIGHTS, UNET_WEIGHTS
    from eosdetect.models.unet import build_unet

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    clean = build_unet(config)
    clean.set_weights(unet.get_weights())
    _save_weights(clean, path / UNET_WEIGHTS)
    clean_helper = None
    if helper is not None:
        clean_helper = build_helper(config)
        clean_helper.set_weights(helper.get_weights())
        _save_weights(clean_helper, path / HELPER_WEIGHTS)
    else:  # left by a two-stage model this one replaces
        for stale in (HELPER_WEIGHTS, HELPER_LITERT):
            if (path / stale).is_file():
                (path / stale).unlink()
    write_json(path / "config.json", config.to_dict())
    write_json(path / "thresholds.json", thresholds.to_dict())
    if metrics is not None:
        write_json(path / "metrics.json", metrics)
    if card is not None:
        atomic_write_text(path / "MODEL_CARD.md", card)
    from eosdetect.models.export import export_litert

    export_litert(path, config, clean, clean_helper)
    return path


def _save_weights(network, target: Path) -> None:
    tmp = target.with_name(f".{target.stem}.tmp.weights.h5")
    network.save_weights(str(tmp))
    shutil.move(str(tmp), str(target))


def with_helper_of(base: Model, other: Model) -> Model:
    """``base``'s U-Net and thresholds with ``other``'s helper, its crop
    settings, class name and counting threshold."""
    import dataclasses

    from eosdetect.models.model import Model

    if not other.config.helper_enabled:
        raise ModelError(f"{other.path}: has no helper (not a two-stage model)")
    helper_fields = {f.name: getattr(other.config, f.name) for f in dataclasses.fields(other.config)
                     if f.name.startswith("helper_")}
    config = dataclasses.replace(base.config, class_name=other.config.class_name, **helper_fields)
    thresholds = base.thresholds.replace(helper_threshold=other.thresholds.helper_threshold)
    model = Model.combined(config, thresholds, unet_of=base, helper_of=other)
    digests = (base.digest(), other.digest())
    if None not in digests:
        model._digest = hashlib.sha1(":".join(digests).encode()).hexdigest()[:16]
    return model
