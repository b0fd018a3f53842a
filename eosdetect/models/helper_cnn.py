"""The helper: a small classifier on fixed-size crops around candidate cells.

It answers "is this candidate the target class" (e.g. eosinophil, not another
white cell). Input: RGB crops in [0, 1] of ``helper_crop_size`` pixels at
``helper_pixel_size_um``; output: one sigmoid probability. Two kinds
(``helper_kind`` in the model's config):

``cnn``
    A small convolutional network on the crop (about 300,000 weights). With
    ``helper_classes`` it has one softmax output per class (a white-cell
    differential; ``class_name`` is the counted one), else one sigmoid.
``colour``
    A logistic regression (a single Keras ``Dense`` unit) on the 11 colour
    statistics of :func:`eosdetect.core.colour.colour_features`. With a few dozen labelled
    eosinophils it generalises better than the CNN (five-fold
    cross-validation on BCCD, ``scripts/crossval_eosinophil.py``).
"""

from __future__ import annotations

import numpy as np

from eosdetect.core.colour import N_COLOUR_FEATURES, colour_features
from eosdetect.models.config import ModelConfig


def build_helper(config: ModelConfig, *, seed: int | None = None):
    """Build the helper classifier described by ``config`` (fresh weights)."""
    import keras
    from keras import layers

    if seed is not None:
        keras.utils.set_random_seed(seed)
    if config.helper_kind == "colour":
        inputs = keras.Input(shape=(N_COLOUR_FEATURES,), name="colour_features")
        outputs = layers.Dense(1, activation="sigmoid", name="prob", dtype="float32")(inputs)
        return keras.Model(inputs, outputs, name="helper_colour")
    size = config.helper_crop_size
    inputs = keras.Input(shape=(size, size, 3), name="crop")
    x = inputs
    for level in range(config.helper_depth):
        filters = config.helper_base_filters * 2 ** level
        for i in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              kernel_initializer="he_normal", name=f"c{level}_{i}")(x)
            x = layers.BatchNormalization(name=f"bn{level}_{i}")(x)
            x = layers.Activation("relu", name=f"relu{level}_{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    if config.helper_classes:
        outputs = layers.Dense(len(config.helper_classes), activation="softmax", name="probs", dtype="float32")(x)
    else:
        outputs = layers.Dense(1, activation="sigmoid", name="prob", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="helper_cnn")


#: Crops per helper call: bounds memory on images with thousands of candidates.
CLASSIFY_BATCH = 256


def make_classify_fn(model, kind: str = "cnn"):
    """Wrap the Keras helper into ``(n, S, S, 3) float32 -> (n, k)`` probabilities
    (compiled once; see :func:`classify_in_batches`).

    ``kind`` is the model's ``helper_kind``.
    """
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def _run(batch):
        return model(batch, training=False)

    return classify_in_batches(lambda batch: _run(tf.convert_to_tensor(batch, dtype=tf.float32)).numpy(),
                               int(model.outputs[0].shape[-1]), kind)


def classify_in_batches(network, n_out: int, kind: str = "cnn"):
    """``(n, S, S, 3) float32 -> (n, k)`` probabilities from a network's forward pass.

    Parameters
    ----------
    network : callable
        The helper's forward pass on a NumPy batch (Keras or LiteRT).
    n_out : int
        ``k``, its number of outputs: 1 for a one-class helper (the sigmoid
        probability of the counted class), the number of ``helper_classes``
        for a multi-class one (softmax; rows sum to 1).
    kind : str
        The model's ``helper_kind``; a ``"colour"`` helper is given the
        crops' :func:`colour_features`.

    Returns
    -------
    callable
        Crops are passed on :data:`CLASSIFY_BATCH` at a time.
    """

    def classify(batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, n_out), dtype=np.float32)
        if kind == "colour":
            batch = colour_features(batch)
        parts = [np.asarray(network(np.asarray(batch[i : i + CLASSIFY_BATCH], dtype=np.float32)))
                 for i in range(0, len(batch), CLASSIFY_BATCH)]
        return np.concatenate(parts).astype(np.float32)

    return classify
