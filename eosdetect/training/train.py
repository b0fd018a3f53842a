"""Training the U-Net and the helper classifier (CNN or colour statistics).

Losses suited to small sparse objects (binary cross-entropy + soft Dice, with
a per-pixel weight map), Adam with cosine decay, early stopping on the
validation loss, best and last weights, a CSV log of every epoch and a fixed
seed. With TensorFlow on one inter-op thread (:func:`reproducible_threads`,
which the training commands and scripts call first thing; the library
leaves the process's threads as they are) the same data and seed give the
same weights bit for bit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from eosdetect.errors import ConfigError
from eosdetect.models.config import ModelConfig
from eosdetect.training.dataset import AugmentSettings, PatchSampler, fixed_patches

log = logging.getLogger(__name__)


def reproducible_threads() -> bool:
    """Make TensorFlow run one op at a time (intra-op threads are kept).

    With several inter-op threads, independent ops of a training step (batch
    normalisation's moving statistics, optimizer updates) race, and the
    helper CNN's weights differed from run to run on CPU even with
    ``tf.config.experimental.enable_op_determinism``; with one thread they
    are identical. This must run before TensorFlow executes its first op:
    the training commands call it first thing. Returns whether the setting
    is in force.
    """
    import tensorflow as tf

    if tf.config.threading.get_inter_op_parallelism_threads() == 1:
        return True
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process
        log.info("TensorFlow already running with several inter-op threads: training may not repeat bit for bit")
        return False
    return True


@dataclass
class TrainConfig:
    """Training settings (the ``train:`` section of a config file)."""

    train_seed: int = 0
    train_epochs: int = 30
    train_steps_per_epoch: int = 50
    train_batch_size: int = 8
    train_patch_size: int = 128
    train_learning_rate: float = 2e-3
    train_fg_fraction: float = 0.5
    train_dice_weight: float = 1.0
    train_patience: int = 8
    train_scale_jitter: float = 0.1
    train_hed_strength: float = 0.05
    train_hed_shift: float = 0.01
    train_brightness: float = 0.05
    train_contrast: float = 0.1
    # helper CNN
    helper_epochs: int = 40
    helper_batch_size: int = 32
    helper_learning_rate: float = 1e-3
    helper_patience: int = 10
    helper_jitter_px: float = 4.0
    #: At least this many optimizer steps per epoch (small crop sets are resampled), so that batch
    #: normalisation's moving statistics settle even on a few dozen labelled cells.
    helper_min_steps_per_epoch: int = 10
    #: Colour helper (``helper_kind: colour``): L2 penalty of its logistic regression (on
    #: standardised features), and how many shifted, stain-jittered copies of each training
    #: crop join the originals (augmentation; the fit itself is exact, no epochs).
    helper_l2: float = 1.0
    helper_augment_copies: int = 4
    #: Multi-class helper CNN (``helper_classes``): crop augmentation strengths
    #: (:func:`eosdetect.training.augment.crop_augment`): scale change, HED stain jitter, blur.
    helper_scale_jitter: float = 0.2
    helper_hed_strength: float = 0.2
    helper_hed_shift: float = 0.03
    helper_blur_sigma: float = 1.5
    #: Two-lab training of the bundled smear helper: after training on the first lab (PBC),
    #: this many epochs of fine-tuning on both labs, the second lab's (BCCD's) crops repeated
    #: ``helper_second_lab_repeat`` times per pass.
    helper_finetune_epochs: int = 4
    helper_finetune_learning_rate: float = 5e-4
    helper_second_lab_repeat: int = 4
    helper_finetune_steps_per_epoch: int = 60

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "train") -> TrainConfig:
        """Build from a config section, checking every key's type and range (one-line ConfigError)."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of training keys, got {data!r}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown training keys {unknown}")
        for key, value in data.items():
            want_int = isinstance(getattr(cls, key), int)
            ok_type = isinstance(value, int) if want_int else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok_type or (not want_int and not math.isfinite(value)):
                raise ConfigError(f"{source}: {key} must be {'a whole number' if want_int else 'a number'}, "
                                  f"got {value!r}")
            if key in _POSITIVE and value <= 0:
                raise ConfigError(f"{source}: {key} must be > 0, got {value!r}")
            low, high = _TRAIN_RANGES.get(key, (0, None))
            if value < low or (high is not None and value > high):
                rng = f"between {low} and {high}" if high is not None else f">= {low}"
                raise ConfigError(f"{source}: {key} must be {rng}, got {value!r}")
        return cls(**data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def augment(self) -> AugmentSettings:
        return AugmentSettings(
            flips=True, scale_jitter=self.train_scale_jitter, hed_strength=self.train_hed_strength,
            hed_shift=self.train_hed_shift, brightness=self.train_brightness, contrast=self.train_contrast,
        )


#: Allowed ranges of training keys (others: >= 0); keys in _POSITIVE must be > 0.
_TRAIN_RANGES = {
    "train_epochs": (1, None), "train_steps_per_epoch": (1, None), "train_batch_size": (1, None),
    "train_patch_size": (8, None), "helper_epochs": (1, None), "helper_batch_size": (1, None),
    "helper_min_steps_per_epoch": (1, None), "helper_finetune_epochs": (1, None), "helper_finetune_steps_per_epoch": (1, None),
    "helper_second_lab_repeat": (1, None), "helper_scale_jitter": (0, 0.5), "train_fg_fraction": (0, 1), "helper_augment_copies": (0, None),
}
_POSITIVE = {"train_learning_rate", "helper_learning_rate", "helper_finetune_learning_rate"}


def threshold_grid(data, *, source: str = "threshold_grid") -> dict[str, list[float]]:
    """A checked ``threshold_grid`` section: known threshold names, each with a non-empty list of numbers."""
    from eosdetect.models.config import Thresholds

    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: expected a mapping of threshold names to lists of values, got {data!r}")
    known = {f.name for f in fields(Thresholds)}
    out = {}
    for key, values in data.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown threshold {key!r}; known: {', '.join(sorted(known))}")
        if not isinstance(values, list) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ConfigError(f"{source}: {key} must be a non-empty list of numbers, e.g. [0.4, 0.5], got {values!r}")
        out[key] = [float(v) for v in values]
        for v in out[key]:
            try:
                Thresholds(**{key: v})  # the same range checks as a model's thresholds.json
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc} (got {v:g})") from None
    return out


#: Keys of a config's ``data`` section: recipe, val_fold and unet_from are read by scripts/train_bundled.py
#: (``unet_from``: a model folder whose U-Net is kept rather than trained again).
DATA_KEYS = {"gap_weight": (int, float), "recipe": (str,), "val_fold": (int,), "unet_from": (str,)}


def check_data_section(data: dict, *, source: str = "data") -> None:
    """Known keys, of the right type; ``gap_weight`` (the loss weight of the gaps between touching
    cells) positive."""
    unknown = sorted(set(data) - set(DATA_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown keys {unknown}; known: {', '.join(sorted(DATA_KEYS))}")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, DATA_KEYS[key]):
            raise ConfigError(f"{source}: {key} has the wrong type: {value!r}")
    gap = data.get("gap_weight", 1.0)
    if not (math.isfinite(gap) and gap > 0):
        raise ConfigError(f"{source}: gap_weight must be > 0, got {gap!r}")


def check_patch_size(tcfg: TrainConfig, config, *, source: str = "train") -> None:
    """Training patches must be a whole number of the U-Net's pooling steps."""
    if tcfg.train_patch_size % config.align:
        raise ConfigError(f"{source}: train_patch_size must be a multiple of {config.align} "
                          f"(2 ** unet_depth), got {tcfg.train_patch_size}")


def load_config_file(path: str | os.PathLike) -> tuple[dict, dict, dict]:
    """Read a YAML training config: returns its ``model``, ``thresholds`` and ``train`` sections."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(data) - {"model", "thresholds", "threshold_grid", "train", "data"})
    if unknown:
        raise ConfigError(f"{path}: unknown sections {unknown}")
    for section in ("model", "thresholds", "train", "data"):
        if section in data and data[section] is None:
            data[section] = {}  # "train:" with nothing under it
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{path}: the {section} section must be a mapping (key: value lines), "
                              f"got {data[section]!r}")
    # checked now, not after the images are read
    from eosdetect.models.config import ModelConfig, Thresholds

    model = ModelConfig.from_dict(data.get("model", {}), source=f"{path}: model")
    Thresholds.from_dict(data.get("thresholds", {}), source=f"{path}: thresholds")
    train = TrainConfig.from_dict(data.get("train", {}), source=f"{path}: train")
    check_data_section(data.get("data", {}), source=f"{path}: data")
    check_patch_size(train, model, source=f"{path}: train")
    if data.get("threshold_grid") is not None:
        data["threshold_grid"] = threshold_grid(data["threshold_grid"], source=f"{path}: threshold_grid")
    return data


def bce_dice_loss(dice_weight: float = 1.0):
    """Weighted binary cross-entropy + ``dice_weight`` x soft Dice loss.

    ``y_true[..., 0]`` is the target, ``y_true[..., 1]`` the per-pixel weight
    (0 ignores a pixel).
    """
    from keras import ops

    def loss(y_true, y_pred):
        target = y_true[..., 0:1]
        weight = y_true[..., 1:2]
        p = ops.clip(y_pred, 1e-6, 1.0 - 1e-6)
        bce = -(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))
        bce = ops.sum(bce * weight) / (ops.sum(weight) + 1e-6)
        inter = ops.sum(weight * target * p)
        denom = ops.sum(weight * target) + ops.sum(weight * p)
        dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)
        return bce + dice_weight * dice

    return loss


#: The probability thresholds at which the U-Net's validation F1 is measured each epoch (the best one counts).
EPOCH_PROB_THRESHOLDS = (0.4, 0.5, 0.6, 0.7)


def detection_f1_callback(config: ModelConfig, items, prob_thresholds=EPOCH_PROB_THRESHOLDS, thresholds=None):
    """A Keras callback that logs ``val_f1``, detection F1 of the U-Net on ``items``,
    and ``val_score``, the same minus 0.001 x the validation loss (a tie-break).

    Each epoch the validation images are predicted whole, segmented with the
    thresholds (the best of ``prob_thresholds``) and matched one-to-one to
    their true cells; this, not the pixel loss, is what training should
    maximise, and it is robust to the network's calibration drifting.
    """
    import dataclasses

    import keras

    from eosdetect.core.metrics import summarize
    from eosdetect.models.config import Thresholds
    from eosdetect.models.model import Model
    from eosdetect.models.unet import make_predict_fn

    thr = thresholds or Thresholds()
    unet_config = dataclasses.replace(config, helper_enabled=False)  # the U-Net alone is being trained

    class DetectionF1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model = Model.from_functions(unet_config, thr, make_predict_fn(self.model))
            maps = [model.predict_prob(it.image) for it in items]
            best = 0.0
            for p in prob_thresholds:
                at_p = thr.replace(prob_threshold=p)
                results = [it.match(model.segment(pmap, at_p)[1].xy) for it, pmap in zip(items, maps)]
                best = max(best, summarize(results)["f1"])
            if logs is not None:
                logs["val_f1"] = best
                # F1 first; between epochs of equal F1 (small or easy validation sets) the lower loss wins
                logs["val_score"] = best - 1e-3 * float(logs.get("val_loss", 0.0))

    return DetectionF1()


def _callbacks(out_dir: Path, prefix: str, patience: int, resume: bool, monitor: str = "val_loss", extra=()):
    import keras

    out_dir.mkdir(parents=True, exist_ok=True)
    mode = "max" if monitor.endswith(("f1", "auc", "score")) else "min"
    if resume:  # epochs logged but not backed up (interrupted in between) are trained again: not logged twice
        _trim_log(out_dir / f"{prefix}_log.csv", out_dir / f"{prefix}_backup")
    # after an interruption, the best epoch so far (from the log) must still be beaten to replace the best weights
    best_so_far = _best_logged(out_dir / f"{prefix}_log.csv", monitor, mode) if resume else None
    cbs = [
        *extra,  # metric callbacks first: the ones below read their logs
        keras.callbacks.CSVLogger(str(out_dir / f"{prefix}_log.csv"), append=resume),
        keras.callbacks.ModelCheckpoint(
            str(out_dir / f"{prefix}_best.weights.h5"), monitor=monitor, mode=mode, save_best_only=True,
            save_weights_only=True, initial_value_threshold=best_so_far,
        ),
        keras.callbacks.ModelCheckpoint(str(out_dir / f"{prefix}_last.weights.h5"), save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True),
        keras.callbacks.BackupAndRestore(str(out_dir / f"{prefix}_backup"), delete_checkpoint=True),
    ]
    return cbs


def _trim_log(log_csv: Path, backup_dir: Path) -> None:
    """Keep the log rows of the epochs the backup holds (Keras resumes after the last of those)."""
    import csv
    import io
    import json

    from eosdetect.io import atomic_write_text

    if not log_csv.is_file():
        return
    try:
        done = int(json.loads((backup_dir / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        done = 0  # no backup: training starts again from the first epoch
    with open(log_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or all(int(r["epoch"]) < done for r in rows):
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))  # the dialect Keras' CSVLogger writes
    writer.writeheader()
    writer.writerows(r for r in rows if int(r["epoch"]) < done)
    atomic_write_text(log_csv, buf.getvalue())


def _best_logged(log_csv: Path, monitor: str, mode: str) -> float | None:
    import csv

    if not log_csv.is_file():
        return None
    with open(log_csv, newline="") as fh:
        values = [float(r[monitor]) for r in csv.DictReader(fh) if r.get(monitor) not in (None, "")]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def _load_best(model, path: Path) -> None:
    """Load the best epoch's weights (also right after a resumed run, whose
    early-stopping state only saw the epochs after the interruption)."""
    if path.is_file():
        model.load_weights(str(path))


def train_unet(config: ModelConfig, tcfg: TrainConfig, train_samples, val_samples, work_dir,
               *, val_items=None, thresholds=None, resume: bool = False, verbose: int = 2, extra_callbacks=(),
               prob_thresholds=EPOCH_PROB_THRESHOLDS):
    """Train a U-Net on samples (see :class:`eosdetect.training.dataset.Sample`).

    Checkpoints, the epoch log and a resumable backup go to ``work_dir``.
    With ``val_items`` (:class:`eosdetect.training.evaluation.EvalItem` of the U-Net's
    own class), epochs are compared by detection F1 on them (``val_f1``),
    otherwise by validation loss. Returns the trained Keras model with the
    best epoch's weights.
    """
    import keras

    from eosdetect.models.unet import build_unet

    work_dir = Path(work_dir)
    keras.utils.set_random_seed(tcfg.train_seed)
    model = build_unet(config, seed=tcfg.train_seed)
    total_steps = tcfg.train_epochs * tcfg.train_steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(tcfg.train_learning_rate, total_steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=bce_dice_loss(tcfg.train_dice_weight))
    check_patch_size(tcfg, config)
    sampler = PatchSampler(train_samples, tcfg.train_patch_size, fg_fraction=tcfg.train_fg_fraction,
                           augment=tcfg.augment(), seed=tcfg.train_seed)
    vx, vy = fixed_patches(val_samples, max(tcfg.train_patch_size, 2 * config.align * 8))
    log.info("U-Net %s: %d parameters, %d training images, %d validation patches",
             model.name, model.count_params(), len(train_samples), len(vx))
    if resume and _finished(work_dir, "unet"):  # interrupted after it: threshold fit or model writing
        log.info("U-Net: training had finished before the interruption; its best epoch is kept")
    else:
        model.fit(
            sampler.dataset(tcfg.train_batch_size),
            steps_per_epoch=tcfg.train_steps_per_epoch,
            epochs=tcfg.train_epochs,
            validation_data=(vx, vy),
            validation_batch_size=4,
            shuffle=False,  # the patch stream is random already
            callbacks=_callbacks(
                work_dir, "unet", tcfg.train_patience, resume,
                monitor="val_score" if val_items else "val_loss",
                extra=[detection_f1_callback(config, val_items, prob_thresholds, thresholds)] if val_items else (),
            ) + list(extra_callbacks),
            verbose=verbose,
        )
        _mark_finished(work_dir, "unet")
    _load_best(model, work_dir / "unet_best.weights.h5")
    return model


def _finished(work_dir: Path, prefix: str) -> bool:
    return (work_dir / f"{prefix}_finished").is_file() and (work_dir / f"{prefix}_best.weights.h5").is_file()


def _mark_finished(work_dir: Path, prefix: str) -> None:
    """Training of ``prefix`` ran to its end (Keras has removed its backup): a resumed run keeps it."""
    from eosdetect.io import atomic_write_text

    atomic_write_text(work_dir / f"{prefix}_finished", "")


def train_helper(config: ModelConfig, tcfg: TrainConfig, train_crops, train_labels, val_crops, val_labels,
                 work_dir, *, resume: bool = False, verbose: int = 2):
    """Train the helper classifier on crops.

    Parameters
    ----------
    train_crops : (n, C, C, 3) uint8
        Crops larger than ``config.helper_crop_size`` (by at least
        ``2 * helper_jitter_px``) so that random shifts stay inside them.
    train_labels : (n,) int 0/1
    val_crops, val_labels : the same for validation (centre-cropped).

    Returns the trained Keras model with the weights of the epoch of best
    validation ROC AUC (the ranking the count threshold is later chosen on).
    Classes are balanced by sample weights. A ``helper_kind: colour`` helper
    is fitted by :func:`train_colour_helper` instead.
    """
    if config.helper_kind == "colour":
        return train_colour_helper(config, tcfg, train_crops, train_labels, val_crops, val_labels, work_dir)
    import keras
    import tensorflow as tf

    from eosdetect.models.helper_cnn import build_helper
    from eosdetect.training import augment

    work_dir = Path(work_dir)
    keras.utils.set_random_seed(tcfg.train_seed)
    S = config.helper_crop_size
    y = np.asarray(train_labels, dtype=np.float32)
    pos = max(float(y.sum()), 1.0)
    neg = max(float(len(y) - y.sum()), 1.0)
    class_w = {0: len(y) / (2 * neg), 1: len(y) / (2 * pos)}
    rng = np.random.default_rng(tcfg.train_seed)
    aug = tcfg.augment()

    def centre(crops):
        c = crops.shape[1]
        o = (c - S) // 2
        return crops[:, o : o + S, o : o + S]

    def gen():
        while True:
            idx = rng.permutation(len(y))
            if len(idx) < tcfg.helper_batch_size:  # fewer crops than one batch: repeat them
                idx = np.resize(idx, tcfg.helper_batch_size)
            for start in range(0, len(idx) - tcfg.helper_batch_size + 1, tcfg.helper_batch_size):
                bx, by, bw = [], [], []
                for i in idx[start : start + tcfg.helper_batch_size]:
                    crop = train_crops[i]
                    c = crop.shape[0]
                    j = int(min(tcfg.helper_jitter_px, (c - S) // 2))
                    o = (c - S) // 2
                    dr, dc = rng.integers(-j, j + 1, size=2) if j > 0 else (0, 0)
                    x = crop[o + dr : o + dr + S, o + dc : o + dc + S].astype(np.float32) / 255.0
                    (x,) = augment.flip_rotate([x], rng)
                    x = augment.colour_augment(x, rng, hed_strength=aug.hed_strength, hed_shift=aug.hed_shift,
                                               brightness=aug.brightness, contrast=aug.contrast)
                    bx.append(x)
                    by.append(y[i])
                    bw.append(class_w[int(y[i])])
                yield np.stack(bx), np.array(by, np.float32)[:, None], np.array(bw, np.float32)

    ds = tf.data.Dataset.from_generator(
        gen,
        output_signature=(
            tf.TensorSpec((tcfg.helper_batch_size, S, S, 3), tf.float32),
            tf.TensorSpec((tcfg.helper_batch_size, 1), tf.float32),
            tf.TensorSpec((tcfg.helper_batch_size,), tf.float32),
        ),
    ).prefetch(2)
    model = build_helper(config, seed=tcfg.train_seed)
    steps = max(1, len(y) // tcfg.helper_batch_size, tcfg.helper_min_steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(tcfg.helper_learning_rate, steps * tcfg.helper_epochs, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")], weighted_metrics=[])
    vx = centre(np.asarray(val_crops)).astype(np.float32) / 255.0
    vy = np.asarray(val_labels, dtype=np.float32)[:, None]
    vw = np.where(vy[:, 0] > 0.5, class_w[1], class_w[0]).astype(np.float32)
    log.info("helper CNN: %d parameters, %d training crops (%d positive)", model.count_params(), len(y), int(y.sum()))
    if resume and _finished(work_dir, "helper"):
        log.info("helper CNN: training had finished before the interruption; its best epoch is kept")
    else:
        model.fit(ds, steps_per_epoch=steps, epochs=tcfg.helper_epochs, validation_data=(vx, vy, vw),
                  shuffle=False, callbacks=_callbacks(work_dir, "helper", tcfg.helper_patience, resume,
                                                      monitor="val_auc"), verbose=verbose)
        _mark_finished(work_dir, "helper")
    _load_best(model, work_dir / "helper_best.weights.h5")
    return model


def _roc_auc(p: np.ndarray, y: np.ndarray) -> float | None:
    pos, neg = p[y > 0.5], p[y <= 0.5]
    if not len(pos) or not len(neg):
        return None
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def train_colour_helper(config: ModelConfig, tcfg: TrainConfig, train_crops, train_labels, val_crops, val_labels,
                        work_dir):
    """Fit a ``helper_kind: colour`` helper: a class-balanced, L2-regularised
    logistic regression on :func:`~eosdetect.models.helper_cnn.colour_features`.

    The training set is each crop's centre plus ``helper_augment_copies``
    copies shifted by up to ``helper_jitter_px`` and stain-jittered like the
    CNN's crops (candidates are not perfectly centred, stains vary). The
    features are standardised on the training set and the fit is exact
    (L-BFGS, convex), so there are no epochs and no early stopping; the
    standardisation is folded into the ``Dense`` unit's weights. The
    validation ROC AUC is logged and written to ``helper_log.csv``.
    """
    from scipy.optimize import minimize

    from eosdetect.core.colour import colour_features
    from eosdetect.models.helper_cnn import build_helper, make_classify_fn
    from eosdetect.training import augment

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    S = config.helper_crop_size
    rng = np.random.default_rng(tcfg.train_seed)
    aug = tcfg.augment()
    crops = np.asarray(train_crops)
    y = np.asarray(train_labels, dtype=np.float64)
    if not len(y):
        raise ConfigError("no crops to train the helper on")

    def centre(batch, dr=0, dc=0):
        o = (batch.shape[1] - S) // 2
        return batch[:, o + dr : o + dr + S, o + dc : o + dc + S]

    feats, labels = [colour_features(centre(crops))], [y]
    j = int(min(tcfg.helper_jitter_px, (crops.shape[1] - S) // 2))
    for _ in range(tcfg.helper_augment_copies):
        copies = []
        for crop in crops:
            dr, dc = rng.integers(-j, j + 1, size=2) if j > 0 else (0, 0)
            x = centre(crop[None], dr, dc)[0].astype(np.float32) / 255.0
            copies.append(augment.colour_augment(x, rng, hed_strength=aug.hed_strength, hed_shift=aug.hed_shift,
                                                 brightness=aug.brightness, contrast=aug.contrast))
        feats.append(colour_features(np.stack(copies)))
        labels.append(y)
    z, t = np.concatenate(feats).astype(np.float64), np.concatenate(labels)
    mu, sd = z.mean(0), z.std(0)
    # a feature (almost) constant in training gets no weight: dividing by its tiny spread would
    # let it swamp every other feature on new images where it varies
    sd = np.where(sd > 1e-3, sd, np.inf)
    zs = (z - mu) / sd
    n_pos, n_neg = max(t.sum(), 1.0), max(len(t) - t.sum(), 1.0)
    sw = np.where(t > 0.5, len(t) / (2 * n_pos), len(t) / (2 * n_neg))
    # the penalty is scaled to the number of distinct crops, so copies do not weaken it
    l2 = tcfg.helper_l2 * len(t) / len(y)

    def loss_and_grad(w):
        logits = zs @ w[1:] + w[0]
        p = 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))
        loss = -(sw * (t * np.log(p + 1e-12) + (1 - t) * np.log(1 - p + 1e-12))).sum() + l2 * (w[1:] ** 2).sum()
        g = sw * (p - t)
        return loss, np.concatenate([[g.sum()], zs.T @ g + 2 * l2 * w[1:]])

    w = minimize(loss_and_grad, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B").x
    kernel = (w[1:] / sd)[:, None]
    bias = np.array([w[0] - float((w[1:] * mu / sd).sum())])
    model = build_helper(config)
    model.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])

    probs = make_classify_fn(model, "colour")

    def classify(batch):
        return probs(batch)[:, 0]

    train_auc = _roc_auc(classify(centre(crops)), y)
    val_auc = _roc_auc(classify(centre(np.asarray(val_crops))), np.asarray(val_labels)) if len(val_labels) else None
    log.info("colour helper: %d weights, %d training crops (%d positive) + %d augmented copies each; "
             "ROC AUC train %s, validation %s", model.count_params(), len(y), int(y.sum()),
             tcfg.helper_augment_copies, _fmt(train_auc), _fmt(val_auc))
    (work_dir / "helper_log.csv").write_text(f"epoch,auc,val_auc\n0,{_fmt(train_auc)},{_fmt(val_auc)}\n")
    return model


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


# --------------------------------------------------------------------------- a model folder from labelled images


def split_items(items, val_fraction: float, seed: int, val_names: list[str] | None = None):
    """Training and validation items: the images named in ``val_names`` (names or
    file names), else the fixed hash split of :func:`eosdetect.training.labelset.split_names`."""
    from eosdetect.training.labelset import split_names

    names = [it.name for it in items]
    if val_names:
        val_set = {n if n in names else Path(n).stem for n in val_names}
        unknown = sorted(val_set - set(names))
        if unknown:
            raise ConfigError(f"validation image {unknown[0]!r} is not among the labelled images")
        if not set(names) - val_set:
            raise ConfigError("every image is in the validation list; none is left to train on")
    else:
        val_set = set(split_names(names, val_fraction, seed)[1])
    return [it for it in items if it.name not in val_set], [it for it in items if it.name in val_set]


def training_record(tcfg: TrainConfig, seconds: dict[str, float], *, command: str | None = None,
                    file_cfg: dict | None = None, grid: dict | None = None) -> dict:
    """metrics.json's ``training``: the command or config file, the settings, seconds per stage
    (rounded to 0.1 s), the machine and the eosdetect version."""
    from eosdetect import __version__

    out = {"command": command} if command is not None else {}
    out["config_file"] = (file_cfg or {}).get("_path", "(built-in defaults)")
    out["train"] = tcfg.to_dict()
    if grid is not None:
        out["threshold_grid"] = grid
    out["seconds"] = {k: round(float(v), 1) for k, v in seconds.items()}
    out.update(machine=machine_description(), eosdetect_version=__version__)
    return out


def machine_description() -> str:
    import platform

    return f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}"


def _check_same_run(path: Path, run: dict) -> None:
    """Record what a training run is made of, or, when resuming, refuse to go on with other
    images, labels (object counts per image) or settings than the interrupted run had."""
    import json

    from eosdetect.io import read_json, write_json

    run = json.loads(json.dumps(run))  # as it reads back from JSON
    if path.is_file():
        before = read_json(path)
        changed = [k for k in run if before.get(k) != run[k]]
        if changed:
            what = ", ".join(k.replace("_", " ") for k in changed)
            details = _differences(before, run, changed)
            raise ConfigError(f"{path.parent}: the interrupted training had other {what} ({details}); resume it "
                              "with the same images, labels and options, or start afresh", option="resume")
    else:
        write_json(path, run)


def _differences(before: dict, now: dict, keys, limit: int = 3) -> str:
    """``train_epochs 6 -> 1``, ``img3: 4 -> 5``, ``img9: (none) -> 2``: the first few settings or
    images that differ between two run records."""
    out = []
    for key in keys:
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            for k in sorted(set(old) | set(new), key=str):
                if old.get(k, "(none)") != new.get(k, "(none)"):
                    out.append(f"{k} {old.get(k, '(none)')} -> {new.get(k, '(none)')}")
        else:
            out.append(f"{key} {old} -> {new}")
    return "; ".join(out[:limit]) + (f"; {len(out) - limit} more" if len(out) > limit else "")


def _keep_log_and_clean(work: Path, log_csv: Path, out_dir: Path) -> None:
    """Keep the epoch log in the model folder as training_log.csv; drop checkpoints."""
    import shutil

    if log_csv.is_file():
        shutil.copyfile(log_csv, out_dir / "training_log.csv")
    shutil.rmtree(work, ignore_errors=True)

#: Without a configured pixel size, the network works at a scale where a typical cell is about this many pixels across.
TARGET_CELL_PX = 20.0


def _round_sig(x: float, digits: int = 2) -> float:
    return float(f"{x:.{digits}g}")


def plan_config(file_cfg: dict, items, *, name: str, class_name: str | None, input_pixel_size_um: float | None,
                cell_diameter_um: float | None) -> tuple[ModelConfig, Any, dict]:
    """The model config, starting thresholds and threshold grid for training on ``items``.

    Precedence: command-line values, then the config file, then what the
    labels tell (the median object size of boxes and masks), then defaults.
    Without a pixel size (``--pixel-size`` or the config's
    ``input_pixel_size_um``) sizes are in input pixels (1 "um" = 1 pixel).
    Without a configured ``pixel_size_um`` the network works at a scale where
    the median cell is about :data:`TARGET_CELL_PX` pixels across (never
    enlarging the images).
    """
    from eosdetect.models.config import Thresholds

    model = dict(file_cfg.get("model", {}))
    model["name"] = name
    if class_name:
        model["class_name"] = model["unet_class_name"] = class_name
    model.setdefault("class_name", "cell")
    model.setdefault("unet_class_name", model["class_name"])
    if model.get("helper_enabled"):
        log.warning("the config's helper_enabled is not used here: eosdetect train trains the U-Net; train its "
                    "helper afterwards with eosdetect train-helper -m %s", name)
    model["helper_enabled"] = False  # `eosdetect train` trains the U-Net; the helper has its own command
    if input_pixel_size_um is not None:
        model["input_pixel_size_um"] = input_pixel_size_um
        model["pixel_size_measured"] = True
    elif "input_pixel_size_um" not in model:
        model["input_pixel_size_um"] = 1.0
        model["pixel_size_measured"] = False
    px = float(model["input_pixel_size_um"])
    if cell_diameter_um is not None:
        model["cell_diameter_um"] = cell_diameter_um
    elif "cell_diameter_um" not in model:
        if not sum(it.n_objects for it in items):
            raise ConfigError("the training images hold no labelled objects")
        d = np.concatenate([it.object_diameters() for it in items])
        if not len(d):
            raise ConfigError("point labels do not tell the cell size: give the cell diameter, in micrometres, "
                              "or in pixels when no pixel size is given", option="cell_diameter_um")
        model["cell_diameter_um"] = _round_sig(float(np.median(d)) * px, 3)
    diameter = float(model["cell_diameter_um"])
    if "pixel_size_um" not in model:
        model["pixel_size_um"] = _round_sig(px * max(1.0, diameter / px / TARGET_CELL_PX))
    model.setdefault("description", f"{model['class_name']} detector trained with eosdetect train")
    config = ModelConfig.from_dict(model, source="model config")

    area = np.pi * diameter ** 2 / 4
    base = {"prob_threshold": 0.5, "min_distance_um": _round_sig(0.4 * diameter),
            "smooth_um": _round_sig(0.1 * diameter), "seed_h_um": _round_sig(0.1 * diameter),
            "min_area_um2": _round_sig(0.1 * area), "max_area_um2": _round_sig(6 * area)}
    base.update(file_cfg.get("thresholds", {}))
    thresholds = Thresholds.from_dict(base, source="thresholds")
    grid = threshold_grid(file_cfg["threshold_grid"]) if file_cfg.get("threshold_grid") else {
        "prob_threshold": [0.3, 0.4, 0.5, 0.6, 0.7],
        "min_distance_um": [_round_sig(f * diameter) for f in (0.25, 0.4, 0.6)],
    }
    return config, thresholds, grid


def train_from_labels(items, out_dir, *, file_cfg: dict | None = None, name: str | None = None,
                      class_name: str | None = None, input_pixel_size_um: float | None = None,
                      cell_diameter_um: float | None = None, epochs: int | None = None,
                      val_fraction: float = 0.2, val_names: list[str] | None = None, resume: bool = False,
                      label_report: dict | None = None, command: str = "", verbose: int = 2,
                      extra_callbacks=()) -> dict:
    """Train a U-Net on labelled images and write a complete model folder.

    ``items`` are :class:`~eosdetect.training.labelset.LabelledImage`. The images are
    split into training and validation by a fixed hash of their names
    (``train_seed``; or the names in ``val_names``), the U-Net is trained
    with epochs chosen by validation detection F1, the thresholds are fitted
    on the validation images, and ``out_dir`` receives config.json, weights,
    thresholds.json, metrics.json, MODEL_CARD.md and training_log.csv.
    Checkpoints live in ``out_dir/.train/`` while training (``resume`` picks
    up from there after an interruption) and are removed at the end.

    Returns the metrics dict written to ``metrics.json``.
    """
    import shutil
    import time

    from eosdetect.models.card import matching_description, model_card, model_metrics
    from eosdetect.models.store import load_model, save_model
    from eosdetect.training.evaluation import fit_thresholds
    from eosdetect.training.labelset import eval_item, training_sample

    file_cfg = file_cfg or {}
    out_dir = Path(out_dir)
    tcfg = TrainConfig.from_dict(file_cfg.get("train", {}), source="config train section")
    if epochs:
        tcfg.train_epochs = int(epochs)
    config, base_thr, grid = plan_config(file_cfg, items, name=name or out_dir.name, class_name=class_name,
                                         input_pixel_size_um=input_pixel_size_um, cell_diameter_um=cell_diameter_um)
    train_items, val_items = split_items(items, val_fraction, tcfg.train_seed, val_names)
    gap_weight = float(file_cfg.get("data", {}).get("gap_weight", 1.0))

    t0 = time.time()
    train_s = [training_sample(it, config, gap_weight=gap_weight) for it in train_items]
    val_s = [training_sample(it, config) for it in val_items]
    radius = config.cell_diameter_um / 2 / config.input_pixel_size_um
    val_eval = [eval_item(it, radius) for it in val_items]
    if not any(len(s.points) for s in train_s):
        raise ConfigError("the training images hold no labelled objects")
    work = out_dir / ".train"
    if work.exists() and not resume:
        shutil.rmtree(work)
    _check_same_run(work / "run.json", {
        "train_images": {it.name: it.n_objects for it in train_items},
        "validation_images": {it.name: it.n_objects for it in val_items},
        "model": {k: v for k, v in config.to_dict().items() if k != "training"},
        "train": tcfg.to_dict(), "thresholds": base_thr.to_dict(), "gap_weight": gap_weight,
    })
    log.info("training %s on %d images, validating on %d; network at %g um/px, cells ~%.0f px",
             config.name, len(train_s), len(val_s), config.pixel_size_um, config.cell_diameter_px)
    t_data = time.time() - t0
    # epochs are compared at every probability threshold the fit may choose afterwards, too
    epoch_probs = sorted({*EPOCH_PROB_THRESHOLDS, *grid.get("prob_threshold", [])})
    unet = train_unet(config, tcfg, train_s, val_s, work / "unet", val_items=val_eval, thresholds=base_thr,
                      resume=resume, verbose=verbose, extra_callbacks=extra_callbacks, prob_thresholds=epoch_probs)
    t_unet = time.time() - t0 - t_data

    # thresholds are fitted on the weights as saved and read back, but in the work folder: the
    # model folder is written once, complete (an interruption here leaves no unfitted model there)
    model = load_model(save_model(work / "unfitted", config, base_thr, unet))
    thr, ev = fit_thresholds(model, val_eval, grid, base=base_thr)
    t_fit = time.time() - t0 - t_data - t_unet
    config.training = {"command": command, "seed": tcfg.train_seed}
    metrics = model_metrics(
        config, validation=ev["summary"], per_image=ev["per_image"],
        data={
            "train_images": [it.name for it in train_items],
            "validation_images": [it.name for it in val_items],
            "objects": {"train": int(sum(it.n_objects for it in train_items)),
                        "validation": int(sum(it.n_objects for it in val_items))},
            "labels": label_report or {},
        },
        matching=matching_description(config),
        thresholds_fitted_on="the validation images (pooled F1 over the threshold grid)",
        training=training_record(tcfg, {"data": t_data, "unet": t_unet, "helper": 0.0, "thresholds": t_fit},
                                 command=command, file_cfg=file_cfg, grid=grid),
    )
    card = model_card(config, metrics)
    save_model(out_dir, config, thr, unet, metrics=metrics, card=card)
    _keep_log_and_clean(work, work / "unet" / "unet_log.csv", out_dir)
    return metrics




# --------------------------------------------------------------------------- a helper from labelled images

HELPER_GRID = [round(v, 2) for v in np.arange(0.1, 0.951, 0.05)]
#: Fewer true cells than this among the validation images: the helper threshold is not fitted.
MIN_VALIDATION_POSITIVES = 5


def helper_crops_from_labels(base, items, config: ModelConfig, *, extra: int = 40):
    """Crops for the helper: positives at the labelled cells, negatives at the
    base model's U-Net candidates that lie on no labelled cell (nor in a
    ``difficult`` box). Returns ``(crops, labels)``."""
    from eosdetect.models.crops import helper_crops

    px = config.input_pixel_size_um  # the U-Net sees the images as the two-stage model will
    radius = config.cell_diameter_um / 2 / px
    crops, labels = [], []
    for it in items:
        cands = base.detect(it.image, pixel_size_um=px).candidates.xy
        neg = []
        for x, y in cands:
            near = len(it.points) and np.min(np.hypot(it.points[:, 0] - x, it.points[:, 1] - y)) <= radius
            inside = any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in
                         np.concatenate([it.boxes if it.boxes is not None else np.zeros((0, 4)), it.ignore_boxes]))
            if not near and not inside:
                neg.append((x, y))
        pts = np.concatenate([it.points.reshape(-1, 2), np.asarray(neg, dtype=float).reshape(-1, 2)])
        if not len(pts):
            continue
        crops.append(helper_crops(it.image, config, pts, px, extra=extra))
        labels += [1] * len(it.points) + [0] * len(neg)
    if not crops:
        raise ConfigError("no labelled cells and no candidates to train the helper on")
    return np.concatenate(crops), np.asarray(labels)


def train_helper_from_labels(base, items, out_dir, *, file_cfg: dict | None = None, name: str | None = None,
                             class_name: str | None = None, input_pixel_size_um: float | None = None,
                             epochs: int | None = None, val_fraction: float = 0.2,
                             val_names: list[str] | None = None, command: str = "", label_report=None,
                             verbose: int = 2) -> dict:
    """Train a helper (CNN or colour, per the config) on labelled images and write a two-stage model folder:
    ``base``'s U-Net finds the cells, the new helper says which are ``class_name``.

    The helper's kind, crop size, pixel size and width come from the ``model``
    section of ``file_cfg`` or else from ``base`` (when it has a helper) or
    the defaults. The counting threshold is fitted on the validation images.
    """
    import dataclasses
    import time

    from eosdetect.models.card import matching_description, model_card, model_metrics
    from eosdetect.models.model import Model
    from eosdetect.models.store import load_model, save_model
    from eosdetect.training.evaluation import evaluate_model, fit_thresholds
    from eosdetect.training.labelset import eval_item

    file_cfg = file_cfg or {}
    out_dir = Path(out_dir)
    tcfg = TrainConfig.from_dict(file_cfg.get("train", {}), source="config train section")
    if epochs:
        tcfg.helper_epochs = int(epochs)
    overrides = {k: v for k, v in file_cfg.get("model", {}).items() if k.startswith("helper_") and k != "helper_enabled"}
    # train-helper trains a one-class helper (the multi-class one is adapted with eosdetect adapt)
    overrides = {"helper_classes": [], "helper_not_in_differential": [], **overrides}
    if overrides["helper_classes"]:
        raise ConfigError("train-helper trains a one-class helper: leave helper_classes out of the config "
                          "(eosdetect adapt fine-tunes a multi-class one)")
    config = dataclasses.replace(
        base.config, name=name or out_dir.name, helper_enabled=True,
        class_name=class_name or base.config.class_name, **overrides,
        training={"command": command, "seed": tcfg.train_seed, "base_model": base.name},
        description=f"{class_name or base.config.class_name} among the {base.config.unet_class_name} objects "
                    f"of {base.name} (helper trained with eosdetect train-helper)",
    )
    if input_pixel_size_um is not None and not base.config.sizes_in_pixels:  # else: densities only
        config = dataclasses.replace(config, input_pixel_size_um=input_pixel_size_um, pixel_size_measured=True)
    train_items, val_items = split_items(items, val_fraction, tcfg.train_seed, val_names)
    t0 = time.time()
    hx, hy = helper_crops_from_labels(base, train_items, config)
    vx, vy = helper_crops_from_labels(base, val_items, config, extra=0)
    if hy.sum() == 0:
        raise ConfigError(f"the training images hold no labelled {config.class_name}")
    if hy.sum() == len(hy):  # a classifier with one class learns "always yes"
        raise ConfigError(
            f"no negative examples: every {base.config.unet_class_name} that {base.name} finds in the training images "
            f"is labelled {config.class_name}; the helper learns to tell them apart only from other "
            f"{base.config.unet_class_name}s, so include images with those, or leave them unlabelled (label "
            f"only the {config.class_name}s)")
    if len(vy) and vy.sum() == len(vy):
        log.warning("the validation images hold no %s other than %s: the helper's precision is not tested there",
                    base.config.unet_class_name, config.class_name)
    t_data = time.time() - t0
    work = out_dir / ".train"
    if work.exists():  # an interrupted earlier run's checkpoints: train-helper always starts afresh
        import shutil

        shutil.rmtree(work)
    helper = train_helper(config, tcfg, hx, hy, vx, vy, work / "helper", verbose=verbose)
    t_helper = time.time() - t0 - t_data
    model = Model.in_memory(config, base.thresholds, base.unet, helper)
    radius = config.cell_diameter_um / 2 / config.input_pixel_size_um
    val_eval = [eval_item(it, radius) for it in val_items]
    if vy.sum() >= MIN_VALIDATION_POSITIVES:
        thr, ev = fit_thresholds(model, val_eval, {"helper_threshold": HELPER_GRID}, base=base.thresholds)
        fitted = "the validation images (helper threshold by pooled F1)"
    else:  # too few to fit on: the class-balanced classifier's natural decision point
        log.warning("only %d labelled %s(s) among the validation images: helper threshold left at 0.5, not fitted",
                    int(vy.sum()), config.class_name)
        thr = base.thresholds.replace(helper_threshold=0.5)
        ev = evaluate_model(model, val_eval, thresholds=thr)
        fitted = (f"helper threshold not fitted (fewer than {MIN_VALIDATION_POSITIVES} positives among the "
                  "validation images): 0.5")
    metrics = model_metrics(
        config, validation=ev["summary"], per_image=ev["per_image"],
        data={
            "train_images": [it.name for it in train_items],
            "validation_images": [it.name for it in val_items],
            "crops": {"train_positive": int(hy.sum()), "train_negative": int(len(hy) - hy.sum()),
                      "validation_positive": int(vy.sum()), "validation_negative": int(len(vy) - vy.sum())},
            "labels": label_report or {},
            "base_model": f"{base.name} {base.config.version}",
        },
        matching=matching_description(config),
        thresholds_fitted_on=fitted,
        training=training_record(tcfg, {"data": t_data, "unet": 0.0, "helper": t_helper}, command=command,
                                 file_cfg=file_cfg, grid={"helper_threshold": HELPER_GRID}),
    )
    save_model(out_dir, config, thr, base.unet, helper, metrics=metrics, card=model_card(config, metrics))
    _keep_log_and_clean(work, work / "helper" / "helper_log.csv", out_dir)
    load_model(out_dir)  # the folder reads back
    return metrics
