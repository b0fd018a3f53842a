"""The helper CNN: a small classifier on fixed-size crops around candidate cells.

It answers "is this candidate the target class" (e.g. eosinophil, not another
white cell). Input: RGB crops in [0, 1] of ``helper_crop_size`` pixels at
``helper_pixel_size_um``; output: one sigmoid probability.
"""

from __future__ import annotations

import numpy as np

from ..tiling import read_region
from .config import ModelConfig


def build_helper(config: ModelConfig, *, seed: int | None = None):
    """Build the helper classifier described by ``config`` (fresh weights)."""
    import keras
    from keras import layers

    if seed is not None:
        keras.utils.set_random_seed(seed)
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
    outputs = layers.Dense(1, activation="sigmoid", name="prob", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="helper_cnn")


def extract_crops(image: np.ndarray, xy: np.ndarray, size: int) -> np.ndarray:
    """Square crops of ``size`` pixels centred on points ``xy`` (x, y; pixels of ``image``).

    Parts outside the image are mirrored.

    Returns
    -------
    crops : (n, size, size, 3) ndarray of image's dtype
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    out = np.empty((len(xy), size, size, image.shape[2]), dtype=image.dtype)
    half = size / 2.0
    for i, (x, y) in enumerate(xy):
        r0 = int(np.floor(y + 0.5 - half))
        c0 = int(np.floor(x + 0.5 - half))
        out[i] = read_region(image, slice(r0, r0 + size), slice(c0, c0 + size))
    return out


def make_classify_fn(model):
    """Wrap the helper into ``(n, S, S, 3) float32 -> (n,)`` probabilities (compiled once)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def _run(batch):
        return model(batch, training=False)[:, 0]

    def classify(batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float32)
        return _run(tf.convert_to_tensor(batch, dtype=tf.float32)).numpy()

    return classify
