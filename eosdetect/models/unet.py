"""The U-Net: Keras 3 functional model built from a :class:`ModelConfig`.

Fully convolutional: any input size that is a multiple of ``2 ** unet_depth``.
Input is RGB scaled to [0, 1]; output is one sigmoid probability channel.
"""

from __future__ import annotations

import numpy as np

from eosdetect.models.config import ModelConfig


def build_unet(config: ModelConfig, *, seed: int | None = None):
    """Build the U-Net described by ``config`` (weights freshly initialised).

    Returns
    -------
    model : keras.Model
        Input ``(None, None, None, 3)`` float32 in [0, 1], output
        ``(None, None, None, 1)`` probabilities.
    """
    import keras
    from keras import layers

    if seed is not None:
        keras.utils.set_random_seed(seed)
    act = config.unet_activation

    def block(x, filters, name):
        for i in range(config.unet_convs_per_level):
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=not config.unet_batchnorm,
                kernel_initializer="he_normal", name=f"{name}_conv{i}",
            )(x)
            if config.unet_batchnorm:
                x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
            x = layers.Activation(act, name=f"{name}_{act}{i}")(x)
        return x

    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = inputs
    skips = []
    for level in range(config.unet_depth):
        x = block(x, config.unet_base_filters * 2 ** level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = block(x, config.unet_base_filters * 2 ** config.unet_depth, "bottom")
    for level in reversed(range(config.unet_depth)):
        filters = config.unet_base_filters * 2 ** level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = block(x, filters, f"dec{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="prob", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"unet_d{config.unet_depth}_f{config.unet_base_filters}")


def augmented_mean(predict, batch: np.ndarray) -> np.ndarray:
    """Test-time augmentation: the mean of ``predict`` over the 8 flips and 90-degree
    rotations of ``batch`` (each map turned back first).

    Smoother maps for 8x the work. ``predict`` is ``(n, M, N, 3) -> (n, M, N)``.

    >>> batch = np.random.default_rng(0).random((2, 4, 6, 3), dtype=np.float32)
    >>> bool(np.allclose(augmented_mean(lambda b: b[..., 0], batch), batch[..., 0]))
    True
    """
    batch = np.asarray(batch, dtype=np.float32)
    total = np.zeros(batch.shape[:3], dtype=np.float32)
    for transpose in (False, True):
        x = batch.transpose(0, 2, 1, 3) if transpose else batch
        for flip_r in (False, True):
            for flip_c in (False, True):
                y = x[:, ::-1] if flip_r else x
                y = y[:, :, ::-1] if flip_c else y
                p = np.asarray(predict(np.ascontiguousarray(y)))
                p = p[:, :, ::-1] if flip_c else p
                p = p[:, ::-1] if flip_r else p
                total += p.transpose(0, 2, 1) if transpose else p
    return total / 8.0


def make_predict_fn(model, *, tta: bool = False):
    """Wrap a Keras model into a fast batched function ``(n, M, N, 3) float32 -> (n, M, N)``.

    One compiled graph (``tf.function`` with a shape-polymorphic signature) is
    reused for every batch, so varying image sizes do not retrace. With
    ``tta``, :func:`augmented_mean` of it.
    """
    import tensorflow as tf

    @tf.function(
        input_signature=[tf.TensorSpec(shape=(None, None, None, 3), dtype=tf.float32)],
        reduce_retracing=True,
    )
    def _run(batch):
        return model(batch, training=False)[..., 0]

    def predict(batch: np.ndarray) -> np.ndarray:
        return _run(tf.convert_to_tensor(batch, dtype=tf.float32)).numpy()

    return (lambda batch: augmented_mean(predict, batch)) if tta else predict
