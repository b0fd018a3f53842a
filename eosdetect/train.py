"""Training the U-Net and the helper CNN.

Losses suited to small sparse objects (binary cross-entropy + soft Dice, with
a per-pixel weight map), Adam with cosine decay, early stopping on the
validation loss, best and last weights, a CSV log of every epoch and a fixed
seed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import AugmentSettings, PatchSampler, fixed_patches, resize
from .errors import ConfigError
from .models.config import ModelConfig

log = logging.getLogger(__name__)


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

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "train") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown training keys {unknown}")
        return cls(**data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def augment(self) -> AugmentSettings:
        return AugmentSettings(
            flips=True, scale_jitter=self.train_scale_jitter, hed_strength=self.train_hed_strength,
            hed_shift=self.train_hed_shift, brightness=self.train_brightness, contrast=self.train_contrast,
        )


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


def detection_f1_callback(config: ModelConfig, items, prob_thresholds=(0.4, 0.5, 0.6, 0.7), thresholds=None):
    """A Keras callback that logs ``val_f1``, detection F1 of the U-Net on ``items``,
    and ``val_score``, the same minus 0.001 x the validation loss (a tie-break).

    Each epoch the validation images are predicted whole, segmented with the
    thresholds (the best of ``prob_thresholds``) and matched one-to-one to
    their true cells; this, not the pixel loss, is what training should
    maximise, and it is robust to the network's calibration drifting.
    """
    import keras

    from .metrics import summarize
    from .models.config import Thresholds
    from .models.unet import make_predict_fn
    from .postprocess import detections_from_labels, segment
    from .predict import predict_probability, thresholds_in_pixels

    thr = thresholds or Thresholds()
    scaled = []
    for it in items:
        im = resize(it.image, config.scale_for(None))
        scaled.append((it, im, it.image.shape[1] / im.shape[1]))

    class DetectionF1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            fn = make_predict_fn(self.model)
            probs = [predict_probability(fn, im, config) for _, im, _ in scaled]
            best = 0.0
            for p in prob_thresholds:
                kw = thresholds_in_pixels(thr.replace(prob_threshold=p), config.pixel_size_um)
                results = []
                for (it, _, f), prob in zip(scaled, probs):
                    det = detections_from_labels(segment(prob, **kw)).rescaled(f)
                    results.append(it.match(det.xy))
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
    cbs = [
        *extra,  # metric callbacks first: the ones below read their logs
        keras.callbacks.CSVLogger(str(out_dir / f"{prefix}_log.csv"), append=resume),
        keras.callbacks.ModelCheckpoint(
            str(out_dir / f"{prefix}_best.weights.h5"), monitor=monitor, mode=mode, save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.ModelCheckpoint(str(out_dir / f"{prefix}_last.weights.h5"), save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True),
        keras.callbacks.BackupAndRestore(str(out_dir / f"{prefix}_backup"), delete_checkpoint=True),
    ]
    return cbs


def train_unet(config: ModelConfig, tcfg: TrainConfig, train_samples, val_samples, work_dir,
               *, val_items=None, thresholds=None, resume: bool = False, verbose: int = 2):
    """Train a U-Net on samples (see :class:`eosdetect.dataset.Sample`).

    Checkpoints, the epoch log and a resumable backup go to ``work_dir``.
    With ``val_items`` (:class:`eosdetect.evaluation.EvalItem` of the U-Net's
    own class), epochs are compared by detection F1 on them (``val_f1``),
    otherwise by validation loss. Returns the trained Keras model with the
    best epoch's weights.
    """
    import keras

    from .models.unet import build_unet

    work_dir = Path(work_dir)
    keras.utils.set_random_seed(tcfg.train_seed)
    model = build_unet(config, seed=tcfg.train_seed)
    total_steps = tcfg.train_epochs * tcfg.train_steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(tcfg.train_learning_rate, total_steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=bce_dice_loss(tcfg.train_dice_weight))
    sampler = PatchSampler(train_samples, tcfg.train_patch_size, fg_fraction=tcfg.train_fg_fraction,
                           augment=tcfg.augment(), seed=tcfg.train_seed)
    vx, vy = fixed_patches(val_samples, max(tcfg.train_patch_size, 2 * config.align * 8))
    log.info("U-Net %s: %d parameters, %d training images, %d validation patches",
             model.name, model.count_params(), len(train_samples), len(vx))
    model.fit(
        sampler.dataset(tcfg.train_batch_size),
        steps_per_epoch=tcfg.train_steps_per_epoch,
        epochs=tcfg.train_epochs,
        validation_data=(vx, vy),
        validation_batch_size=4,
        callbacks=_callbacks(
            work_dir, "unet", tcfg.train_patience, resume,
            monitor="val_score" if val_items else "val_loss",
            extra=[detection_f1_callback(config, val_items, thresholds=thresholds)] if val_items else (),
        ),
        verbose=verbose,
    )
    return model


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
    Classes are balanced by sample weights.
    """
    import keras
    import tensorflow as tf

    from . import augment
    from .models.helper_cnn import build_helper

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
    steps = max(1, len(y) // tcfg.helper_batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(tcfg.helper_learning_rate, steps * tcfg.helper_epochs, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")], weighted_metrics=[])
    vx = centre(np.asarray(val_crops)).astype(np.float32) / 255.0
    vy = np.asarray(val_labels, dtype=np.float32)[:, None]
    vw = np.where(vy[:, 0] > 0.5, class_w[1], class_w[0]).astype(np.float32)
    log.info("helper CNN: %d parameters, %d training crops (%d positive)", model.count_params(), len(y), int(y.sum()))
    model.fit(ds, steps_per_epoch=steps, epochs=tcfg.helper_epochs, validation_data=(vx, vy, vw),
              callbacks=_callbacks(work_dir, "helper", tcfg.helper_patience, resume, monitor="val_auc"),
              verbose=verbose)
    return model
