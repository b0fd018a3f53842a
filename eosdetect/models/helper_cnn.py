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
    statistics of :func:`colour_features`. With a few dozen labelled
    eosinophils it generalises better than the CNN (five-fold
    cross-validation on BCCD, ``scripts/crossval_eosinophil.py``).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..tiling import read_region
from .config import ModelConfig

#: Length of the :func:`colour_features` vector.
N_COLOUR_FEATURES = 11


def colour_features(crops: np.ndarray) -> np.ndarray:
    """Colour statistics of the stained pixels near the centre of each crop.

    For each crop, the pixels within 0.35 crop widths of its centre whose HSV
    saturation exceeds 40 (of 255) are the cell's stained pixels. The
    features are the 10th, 50th and 90th percentiles of each 8-bit CIE
    L*a*b* channel (OpenCV's scaling: a*, b* offset by 128) over those
    pixels (over all the centre's pixels when fewer than 11 are stained), the
    stained fraction of the centre, and the fraction of its pixels that are
    stained and orange-red (a* > 150 and b* > 135: eosinophil granules).

    Parameters
    ----------
    crops : (n, S, S, 3) uint8 RGB, or float in [0, 1]

    Returns
    -------
    features : (n, 11) float32 ndarray
    """
    crops = np.asarray(crops)
    if crops.dtype != np.uint8:
        crops = np.clip(np.rint(crops * 255.0), 0, 255).astype(np.uint8)
    out = np.empty((len(crops), N_COLOUR_FEATURES), dtype=np.float32)
    if not len(crops):
        return out
    n = crops.shape[1]
    yy, xx = np.mgrid[:n, : crops.shape[2]]
    inner = (np.hypot(yy - n / 2, xx - crops.shape[2] / 2) < 0.35 * n).ravel()
    for i, crop in enumerate(crops):
        lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).reshape(-1, 3)[inner].astype(np.float32)
        sat = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)[..., 1].ravel()[inner]
        stained = sat > 40
        values = lab[stained] if stained.sum() > 10 else lab
        out[i, :9] = np.percentile(values, [10, 50, 90], axis=0).T.ravel()
        out[i, 9] = stained.mean()
        out[i, 10] = ((lab[:, 1] > 150) & (lab[:, 2] > 135) & stained).mean()
    return out


#: :func:`background_gains` map the background's median colour to this grey.
BACKGROUND_GREY = 225.0


def background_gains(image: np.ndarray, *, max_saturation: int = 35) -> np.ndarray:
    """Per-channel gains that make the unstained background of an RGB uint8
    image neutral grey (:data:`BACKGROUND_GREY`).

    The background is the pixels of HSV saturation below ``max_saturation``
    (of 255) that are brighter than the image's 30th brightness percentile
    (glass and plasma between the cells, not dark debris). With fewer than
    500 such pixels (or 1% of the image), the 95th percentile of each channel
    stands in for it. Gains are limited to 0.5-2.

    >>> [round(float(g), 3) for g in background_gains(np.full((40, 40, 3), (200, 210, 225), np.uint8))]
    [1.125, 1.071, 1.0]
    """
    flat = image.reshape(-1, 3)
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV).reshape(-1, 3)
    background = (hsv[:, 1] < max_saturation) & (hsv[:, 2] >= np.percentile(hsv[:, 2], 30))
    if background.sum() >= max(500, 0.01 * len(flat)):
        ref = np.median(flat[background], axis=0)
    else:
        ref = np.percentile(flat, 95, axis=0)
    return np.clip(BACKGROUND_GREY / np.maximum(ref, 1.0), 0.5, 2.0).astype(np.float32)


def apply_gains(image: np.ndarray, gains) -> np.ndarray:
    """``image`` (RGB uint8) with each channel multiplied by ``gains``, clipped to uint8."""
    return np.clip(np.rint(image * np.asarray(gains, np.float32)), 0, 255).astype(np.uint8)


def helper_view(image: np.ndarray, config: ModelConfig, pixel_size_um: float | None = None, *,
                model_view: np.ndarray | None = None, gains=None) -> np.ndarray:
    """The picture the helper takes its crops from: ``image`` (input pixels)
    resized to ``helper_pixel_size_um``, white-balanced when the config says
    so (``helper_white_balance``) with ``gains`` (default: the
    :func:`background_gains` of this picture; a slide passes its own, so
    that every block is balanced alike).

    ``model_view`` is ``image`` already resized for the U-Net; it is reused
    (not modified) when the two pixel sizes agree.
    """
    from ..dataset import resize

    unet_scale = config.scale_for(pixel_size_um)
    scale = unet_scale * config.pixel_size_um / config.helper_pixel_size_um
    if model_view is not None and abs(scale - unet_scale) < 1e-9:
        view = model_view
    else:
        view = resize(image, scale)
    if not config.helper_white_balance:
        return view
    return apply_gains(view, background_gains(view) if gains is None else gains)


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


#: Crops per helper call: bounds memory on images with thousands of candidates.
CLASSIFY_BATCH = 256


def make_classify_fn(model, kind: str = "cnn"):
    """Wrap the helper into ``(n, S, S, 3) float32 -> (n, k)`` probabilities (compiled once).

    ``k`` is the helper's number of outputs: 1 for a one-class helper (the
    sigmoid probability of the counted class), the number of
    ``helper_classes`` for a multi-class one (softmax; rows sum to 1).
    ``kind`` is the model's ``helper_kind``; a ``"colour"`` helper is given
    the crops' :func:`colour_features`.
    """
    import tensorflow as tf

    n_out = int(model.outputs[0].shape[-1])

    @tf.function(reduce_retracing=True)
    def _run(batch):
        return model(batch, training=False)

    def classify(batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, n_out), dtype=np.float32)
        if kind == "colour":
            batch = colour_features(batch)
        parts = [_run(tf.convert_to_tensor(batch[i : i + CLASSIFY_BATCH], dtype=tf.float32)).numpy()
                 for i in range(0, len(batch), CLASSIFY_BATCH)]
        return np.concatenate(parts).astype(np.float32)

    return classify
