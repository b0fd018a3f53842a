"""Training a multi-class helper CNN on cell crops, and adapting one to a new lab.

The helper of a two-stage model with ``helper_classes`` is a softmax CNN over
crops around the cells the U-Net finds (:mod:`eosdetect.models.helper_cnn`).
Its training data is a :class:`CropSet`: crops larger than the network's
input (room for rotation, scale and shift), an integer class per crop, a
weight per crop and, optionally, soft targets (a probability per class). A
new lab's corrected pre-labels say which cells are eosinophils, not what the
others are: those get as target the base helper's own belief with the
counted class taken out (:func:`adapt_helper`), so the differential of the
other classes stays the base model's while "eosinophil" is learnt anew.

:func:`train_multiclass_helper` trains from scratch or fine-tunes (all layers,
or the last ``trainable_levels`` convolution levels and the head), with the
augmentations of :func:`eosdetect.training.augment.crop_augment`, class-balanced
weights and early stopping on a validation set. :func:`adapt_helper` is the
few-label fine-tuning behind ``eosdetect adapt``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eosdetect.models.config import ModelConfig

log = logging.getLogger(__name__)

#: Helper crops for training are cut this many pixels larger than the helper's input (room for
#: rotation, +-20% scale and shift in :func:`eosdetect.training.augment.crop_augment`).
HELPER_CROP_EXTRA = 64


@dataclass
class CropSet:
    """Crops of cells for the helper, with their classes.

    Attributes
    ----------
    crops : (n, C, C, 3) ndarray of uint8
        Centred on the cells, at the helper's pixel size, white-balanced as
        the helper sees them; ``C`` is larger than ``helper_crop_size``.
    labels : (n,) ndarray of int
        Index into the config's ``helper_classes``.
    weights : (n,) ndarray of float
        Per-crop loss weight (before class balancing).
    soft : (n, k) ndarray of float, optional
        Soft targets (rows sum to 1) used instead of one-hot ``labels``.
    sources : list of str
        Where each crop comes from (e.g. ``pbc``, ``bccd``), for reports.
    names : list of str
        The image each crop was cut from.
    """

    crops: np.ndarray
    labels: np.ndarray
    weights: np.ndarray = None
    sources: list = field(default_factory=list)
    names: list = field(default_factory=list)
    soft: np.ndarray | None = None

    def __post_init__(self):
        self.crops = np.asarray(self.crops, dtype=np.uint8)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.labels)
        if len(self.crops) != n:
            raise ValueError(f"CropSet: {len(self.crops)} crops but {n} labels")
        self.weights = np.ones(n, np.float32) if self.weights is None else np.asarray(self.weights, np.float32)
        self.sources = list(self.sources) or [""] * n
        self.names = list(self.names) or [""] * n
        if self.soft is not None:
            self.soft = np.asarray(self.soft, np.float32)
            if self.soft.shape[0] != n:
                raise ValueError(f"CropSet: {self.soft.shape[0]} soft targets for {n} crops")

    def targets(self, n_classes: int) -> np.ndarray:
        """``(n, n_classes)`` training targets: the soft ones, else one-hot labels."""
        if self.soft is not None:
            return self.soft
        return np.eye(n_classes, dtype=np.float32)[self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep) -> CropSet:
        idx = np.arange(len(self))[keep]
        return CropSet(self.crops[idx], self.labels[idx], self.weights[idx],
                       [self.sources[i] for i in idx], [self.names[i] for i in idx],
                       None if self.soft is None else self.soft[idx])

    @staticmethod
    def concat(parts: list[CropSet]) -> CropSet:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no crops")
        size = max(p.crops.shape[1] for p in parts)
        crops = [p.crops if p.crops.shape[1] == size else _pad_to(p.crops, size) for p in parts]
        soft = None
        if any(p.soft is not None for p in parts):
            k = next(p.soft.shape[1] for p in parts if p.soft is not None)
            soft = np.concatenate([p.targets(k) for p in parts])
        return CropSet(np.concatenate(crops), np.concatenate([p.labels for p in parts]),
                       np.concatenate([p.weights for p in parts]),
                       sum((p.sources for p in parts), []), sum((p.names for p in parts), []), soft)


def _pad_to(crops: np.ndarray, size: int) -> np.ndarray:
    p = (size - crops.shape[1]) // 2
    q = size - crops.shape[1] - p
    return np.pad(crops, ((0, 0), (p, q), (p, q), (0, 0)), mode="reflect")


def centre_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` part of each crop, as float32 in [0, 1]."""
    o = (crops.shape[1] - size) // 2
    return crops[:, o : o + size, o : o + size].astype(np.float32) / 255.0


def balanced_weights(labels: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-crop weights that even out class frequencies: ``(N / (K n_c)) ** power``,
    scaled to mean 1 (``power`` 1 fully balances; 0.5, the default, halfway
    on a log scale, so that a class of 150 crops is not weighted 16 times).

    >>> [round(float(w), 3) for w in balanced_weights(np.array([0, 0, 0, 1]), power=1.0)]
    [0.667, 0.667, 0.667, 2.0]
    """
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    per_class = {v: (len(labels) / (len(values) * c)) ** power for v, c in zip(values, counts)}
    w = np.array([per_class[v] for v in labels], np.float64)
    return (w / w.mean()).astype(np.float32)


def _augment_kwargs(tcfg) -> dict:
    return dict(scale_jitter=tcfg.helper_scale_jitter, shift_px=tcfg.helper_jitter_px,
                hed_strength=tcfg.helper_hed_strength, hed_shift=tcfg.helper_hed_shift,
                blur_sigma=tcfg.helper_blur_sigma)


def _batches(data: CropSet, size: int, n_classes: int, tcfg, rng: np.random.Generator, sample_weight: np.ndarray):
    """Endless augmented batches ``(x, targets, w)``, each crop once per pass in shuffled order."""
    from eosdetect.training.augment import crop_augment

    kwargs = _augment_kwargs(tcfg)
    targets = data.targets(n_classes)
    bs = tcfg.helper_batch_size
    while True:
        idx = rng.permutation(len(data))
        if len(idx) < bs:
            idx = np.resize(idx, bs)
        for start in range(0, len(idx) - bs + 1, bs):
            pick = idx[start : start + bs]
            x = np.stack([crop_augment(data.crops[i], size, rng, **kwargs) for i in pick])
            yield x, targets[pick], sample_weight[pick]


def set_trainable_levels(model, levels: int | None) -> None:
    """Freeze all but the last ``levels`` convolution levels and the head
    (``None``: everything trains). Frozen batch normalisation layers run in
    inference mode, so a few dozen crops cannot shift their statistics."""
    import re

    def level_of(layer) -> int | None:  # c2_0, bn2_0, relu2_0, pool2: level 2 (see build_helper)
        m = re.fullmatch(r"(?:c|bn|relu|pool)(\d+)(?:_\d+)?", layer.name)
        return int(m.group(1)) if m else None

    depth = max((lv for lv in map(level_of, model.layers) if lv is not None), default=0)
    for layer in model.layers:
        level = level_of(layer)
        layer.trainable = levels is None or level is None or level > depth - levels


def train_multiclass_helper(config: ModelConfig, tcfg, train: CropSet, val: CropSet | None, work_dir, *,
                            init=None, epochs: int | None = None, learning_rate: float | None = None,
                            trainable_levels: int | None = None, balance_power: float = 0.5,
                            steps_per_epoch: int | None = None, verbose: int = 2):
    """Train (or fine-tune, from ``init``'s weights) a multi-class helper CNN.

    Parameters
    ----------
    config : ModelConfig
        With ``helper_classes``; ``class_name`` is the counted class.
    tcfg : eosdetect.training.train.TrainConfig
        ``helper_*`` settings (epochs, batch size, learning rate, patience,
        augmentation strengths).
    train, val : CropSet
        ``val`` (centre crops, no augmentation) drives early stopping on its
        weighted loss and the choice of the best epoch; without it the last
        epoch is kept.
    init : keras.Model, optional
        A helper of the same architecture whose weights are the start.
    trainable_levels : int, optional
        Fine-tune only the last levels and the head (see :func:`set_trainable_levels`).

    Returns
    -------
    keras.Model
    """
    import keras
    import tensorflow as tf

    from eosdetect.models.helper_cnn import build_helper
    from eosdetect.training.train import _callbacks, _load_best

    if not config.helper_classes:
        raise ValueError("train_multiclass_helper needs a config with helper_classes")
    keras.utils.set_random_seed(tcfg.train_seed)
    work_dir = Path(work_dir)
    size = config.helper_crop_size
    epochs = int(epochs or tcfg.helper_epochs)
    lr = float(learning_rate or tcfg.helper_learning_rate)
    rng = np.random.default_rng(tcfg.train_seed)
    sw = balanced_weights(train.labels, balance_power) * train.weights
    sw = (sw / sw.mean()).astype(np.float32)
    bs = tcfg.helper_batch_size
    k = len(config.helper_classes)
    ds = tf.data.Dataset.from_generator(
        lambda: _batches(train, size, k, tcfg, rng, sw),
        output_signature=(tf.TensorSpec((bs, size, size, 3), tf.float32), tf.TensorSpec((bs, k), tf.float32),
                          tf.TensorSpec((bs,), tf.float32)),
    ).prefetch(2)
    model = build_helper(config, seed=tcfg.train_seed)
    if init is not None:
        model.set_weights(init.get_weights())
    set_trainable_levels(model, trainable_levels)
    steps = steps_per_epoch or max(1, len(train) // bs, tcfg.helper_min_steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(lr, steps * epochs, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=keras.losses.CategoricalCrossentropy())
    log.info("helper CNN: %d parameters (%d trainable), %d training crops, %d steps x %d epochs",
             model.count_params(), sum(int(np.prod(w.shape)) for w in model.trainable_weights), len(train),
             steps, epochs)
    if val is not None and len(val):
        vx = centre_crops(val.crops, size)
        vy = val.targets(k)
        vw = balanced_weights(val.labels, balance_power) * val.weights
        callbacks = _callbacks(work_dir, "helper", tcfg.helper_patience, False, monitor="val_loss")
        model.fit(ds, steps_per_epoch=steps, epochs=epochs, validation_data=(vx, vy, vw), shuffle=False,
                  callbacks=callbacks, verbose=verbose)
        _load_best(model, work_dir / "helper_best.weights.h5")
    else:
        work_dir.mkdir(parents=True, exist_ok=True)
        model.fit(ds, steps_per_epoch=steps, epochs=epochs, shuffle=False, verbose=verbose,
                  callbacks=[keras.callbacks.CSVLogger(str(work_dir / "helper_log.csv"))])
    set_trainable_levels(model, None)
    return model


def predict_crops(model, crops: np.ndarray, size: int) -> np.ndarray:
    """Class probabilities ``(n, k)`` of centre crops (no augmentation)."""
    from eosdetect.models.helper_cnn import make_classify_fn

    return make_classify_fn(model)(centre_crops(crops, size))


def soft_not_counted(probs: np.ndarray, counted: int) -> np.ndarray:
    """The base helper's class probabilities with the counted class taken out and
    the rest renormalised: the target of a cell known only not to be counted.

    >>> soft_not_counted(np.array([[0.5, 0.25, 0.25]]), 0).tolist()
    [[0.0, 0.5, 0.5]]
    """
    p = np.array(probs, dtype=np.float64, copy=True)
    p[:, counted] = 0.0
    total = p.sum(axis=1, keepdims=True)
    uniform = np.ones_like(p) / max(p.shape[1] - 1, 1)
    uniform[:, counted] = 0.0
    return np.where(total > 1e-9, p / np.maximum(total, 1e-12), uniform).astype(np.float32)


def adaptation_crops(base, items, config: ModelConfig) -> CropSet:
    """Crops of a new lab's labelled images for :func:`adapt_helper`.

    Positives: the labelled cells (of the counted class). Negatives: the cells
    ``base``'s U-Net finds that lie on no label (nor in a ``difficult`` box),
    i.e. the pre-labels an annotator deleted and the cells never labelled;
    their targets are ``base``'s own class beliefs without the counted class.
    """
    from eosdetect.training.train import helper_crops_from_labels

    crops, is_counted = helper_crops_from_labels(base, items, config, extra=HELPER_CROP_EXTRA)
    counted = config.counted_class_index
    k = len(config.helper_classes)
    soft = soft_not_counted(predict_crops(base.helper, crops, config.helper_crop_size), counted)
    soft[is_counted == 1] = np.eye(k, dtype=np.float32)[counted]
    labels = np.where(is_counted == 1, counted, soft.argmax(axis=1))
    return CropSet(crops, labels, soft=soft, sources=["local"] * len(labels))


#: ``eosdetect adapt``'s fine-tuning: the last two convolution levels and the head
#: train, for this many passes (at least ADAPT_MIN_STEPS optimizer steps in all).
ADAPT_LEVELS = 2
ADAPT_EPOCHS = 10
ADAPT_MIN_STEPS = 150
ADAPT_LEARNING_RATE = 5e-4


def adapt_helper(base, crops: CropSet, tcfg, work_dir, *, epochs: int = ADAPT_EPOCHS,
                 learning_rate: float = ADAPT_LEARNING_RATE, trainable_levels: int = ADAPT_LEVELS,
                 verbose: int = 2):
    """Fine-tune ``base``'s multi-class helper on a new lab's crops
    (:func:`adaptation_crops`): a few hundred steps, early layers frozen, the
    same augmentations as in training, the labelled cells weighted as much
    in all as the other cells. Returns the new helper network."""
    config = base.config
    if not config.multiclass:
        raise ValueError(f"{base.name}: adapting needs a multi-class helper (helper_classes)")
    bs = tcfg.helper_batch_size
    steps = max(1, -(-ADAPT_MIN_STEPS // epochs), len(crops) // bs)
    # the decision learnt anew is binary: the counted cells weigh as much, together, as all the others
    is_counted = crops.labels == config.counted_class_index
    weights = np.where(is_counted, 0.5 / max(is_counted.sum(), 1), 0.5 / max((~is_counted).sum(), 1))
    weighted = CropSet(crops.crops, crops.labels, crops.weights * weights * len(crops), crops.sources,
                       crops.names, crops.soft)
    return train_multiclass_helper(config, tcfg, weighted, None, work_dir, init=base.helper, epochs=epochs,
                                   learning_rate=learning_rate, trainable_levels=trainable_levels,
                                   balance_power=0.0, steps_per_epoch=steps, verbose=verbose)


def adapt_model(base, items, out_dir, *, tcfg=None, name: str | None = None,
                input_pixel_size_um: float | None = None, command: str = "", label_report=None,
                learning_rate: float = ADAPT_LEARNING_RATE, verbose: int = 2) -> dict:
    """Adapt ``base``'s multi-class helper to a new lab's labelled images and
    write a model folder (``base``'s U-Net and thresholds, the adapted helper).

    Parameters
    ----------
    base : eosdetect.models.store.Model
        A two-stage model with a multi-class helper (e.g. ``eosinophil-smear``).
    items : list of eosdetect.training.labelset.LabelledImage
        The lab's images with their cells of ``base``'s counted class labelled
        (e.g. pre-labels corrected in LabelImg); every other cell the U-Net
        finds there is taken as not of that class.
    input_pixel_size_um : float, optional
        The images' pixel size; it becomes the new model's default.
    learning_rate : float
        Of the fine-tuning (Adam, cosine decay).

    Returns
    -------
    dict
        The ``metrics.json`` written (what was trained on, how long it took).
    """
    import dataclasses
    import time

    from eosdetect.errors import ConfigError
    from eosdetect.models.card import model_card, model_metrics
    from eosdetect.models.store import load_model, save_model
    from eosdetect.training.train import TrainConfig, training_record

    tcfg = tcfg or TrainConfig()
    out_dir = Path(out_dir)
    config = dataclasses.replace(
        base.config, name=name or out_dir.name,
        training={"command": command, "seed": tcfg.train_seed, "base_model": f"{base.name} {base.config.version}",
                  "adapted": True},
        description=f"{base.config.description} Adapted to a new lab's labelled images with eosdetect adapt.",
    )
    if input_pixel_size_um is not None and not base.config.sizes_in_pixels:
        config = dataclasses.replace(config, input_pixel_size_um=input_pixel_size_um, pixel_size_measured=True)
    import copy

    local_base = copy.copy(base)  # the same networks, seen through the new config (its pixel size)
    local_base.config = config
    t0 = time.time()
    crops = adaptation_crops(local_base, items, config)
    n_pos = int((crops.labels == config.counted_class_index).sum())
    if n_pos == 0:
        raise ConfigError(f"the labelled images hold no {config.class_name}: nothing to adapt to")
    if n_pos == len(crops):
        raise ConfigError(f"every cell {base.name} finds in these images is labelled {config.class_name}: "
                          "the helper needs the other white cells too (images with them, unlabelled)")
    t_data = time.time() - t0
    work = out_dir / ".adapt"
    helper = adapt_helper(local_base, crops, tcfg, work, learning_rate=learning_rate, verbose=verbose)
    t_train = time.time() - t0 - t_data
    before = predict_crops(base.helper, crops.crops, config.helper_crop_size)[:, config.counted_class_index]
    after = predict_crops(helper, crops.crops, config.helper_crop_size)[:, config.counted_class_index]
    is_pos = crops.labels == config.counted_class_index
    thr = base.thresholds.helper_threshold
    metrics = model_metrics(
        config,
        validation={"n_images": 0, "tp": 0, "fp": 0, "fn": 0, "precision": None, "recall": None, "f1": 1.0,
                    "count_mae": 0.0},
        data={"base_model": f"{base.name} {base.config.version}", "adaptation_images": len(items)},
        matching="not measured: run eosdetect evaluate on labelled images not used here",
        thresholds_fitted_on=f"not fitted: the base model's ({thr:g})",
        training=training_record(tcfg, {"data": t_data, "unet": 0.0, "helper": t_train},
                                 command=command or "eosdetect adapt (called from Python)"),
        adaptation={
            "base_model": f"{base.name} {base.config.version}",
            "images": [it.name for it in items],
            "cells": {config.class_name: n_pos, f"other {base.config.unet_class_name}s": int(len(crops) - n_pos)},
            "labels": label_report or {},
            "on_the_adaptation_cells": {
                "before": {"counted_of_labelled": int((before[is_pos] >= thr).sum()),
                           "counted_of_others": int((before[~is_pos] >= thr).sum())},
                "after": {"counted_of_labelled": int((after[is_pos] >= thr).sum()),
                          "counted_of_others": int((after[~is_pos] >= thr).sum())},
            },
            "method": f"fine-tuned the last {ADAPT_LEVELS} convolution levels and the head for {ADAPT_EPOCHS} "
                      f"passes (at least {ADAPT_MIN_STEPS} steps), augmented as in training; unlabelled cells "
                      "keep the base model's belief of their class, without the counted one",
        },
    )
    save_model(out_dir, config, base.thresholds, base.unet, helper, metrics=metrics,
               card=model_card(config, metrics))
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    load_model(out_dir)  # the folder reads back
    return metrics
