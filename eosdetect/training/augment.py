"""Augmentations for stained-slide patches (pure functions of arrays and a RNG).

Geometric: flips and 90-degree rotations (exact, applied to image and target
alike), small scale changes. Colour: jitter in haematoxylin-eosin-DAB space
(stain strength and offset per channel, the usual stain augmentation), then
brightness/contrast. Inputs are never modified.
"""

from __future__ import annotations

import numpy as np


def flip_rotate(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply one random flip/90-degree rotation (of the 8) to every array alike."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        b = np.rot90(a, k, axes=(0, 1))
        if flip:
            b = b[:, ::-1]
        out.append(np.ascontiguousarray(b))
    return out


def hed_jitter(rgb: np.ndarray, rng: np.random.Generator, *, strength: float = 0.05, shift: float = 0.01) -> np.ndarray:
    """Perturb stain concentrations in HED space (Ruifrok-Johnston colour deconvolution).

    Optical density ``-log(rgb)`` is split into haematoxylin, eosin and DAB
    concentrations with skimage's stain matrix, each concentration ``c``
    becomes ``c * (1 + U(-strength, strength)) + U(-shift, shift)``, and the
    result is recombined. Unlike ``rgb2hed``/``hed2rgb`` nothing is clipped
    in between, so zero jitter gives back the input exactly.

    Parameters
    ----------
    rgb : (M, N, 3) ndarray of float32 in [0, 1]

    Returns
    -------
    (M, N, 3) ndarray of float32 in [0, 1]
    """
    from skimage.color import hed_from_rgb, rgb_from_hed

    eps = 1.0 / 255.0
    od = -np.log(np.clip(rgb, eps, 1.0))
    conc = od @ hed_from_rgb
    alpha = 1.0 + rng.uniform(-strength, strength, size=3)
    beta = rng.uniform(-shift, shift, size=3)
    od2 = (conc * alpha + beta) @ rgb_from_hed
    return np.clip(np.exp(-od2), 0.0, 1.0).astype(np.float32)


def brightness_contrast(rgb: np.ndarray, rng: np.random.Generator, *, brightness: float = 0.05, contrast: float = 0.1) -> np.ndarray:
    """Random brightness offset and contrast gain around the mean."""
    mean = rgb.mean(axis=(0, 1), keepdims=True)
    gain = 1.0 + rng.uniform(-contrast, contrast)
    offset = rng.uniform(-brightness, brightness)
    return np.clip((rgb - mean) * gain + mean + offset, 0.0, 1.0).astype(np.float32)


def colour_augment(rgb: np.ndarray, rng: np.random.Generator, *, hed_strength: float = 0.05,
                   hed_shift: float = 0.01, brightness: float = 0.05, contrast: float = 0.1) -> np.ndarray:
    """HED jitter then brightness/contrast, on float RGB in [0, 1]."""
    out = rgb
    if hed_strength > 0 or hed_shift > 0:
        out = hed_jitter(out, rng, strength=hed_strength, shift=hed_shift)
    if brightness > 0 or contrast > 0:
        out = brightness_contrast(out, rng, brightness=brightness, contrast=contrast)
    return out


def crop_augment(big: np.ndarray, size: int, rng: np.random.Generator, *, scale_jitter: float = 0.2,
                 shift_px: float = 6.0, hed_strength: float = 0.2, hed_shift: float = 0.03,
                 colour_cast: float = 0.06, saturation: float = 0.3, hue_deg: float = 8.0, blur_sigma: float = 1.5,
                 low_res: float = 2.5, noise: float = 0.03, jpeg: bool = True) -> np.ndarray:
    """One augmented ``size`` x ``size`` crop from the centre of a larger crop
    (the helper's training view of one cell).

    Geometry: any rotation, a flip, a scale change of up to ``scale_jitter``
    (cells are measured on an imperfect ruler) and a shift of up to
    ``shift_px`` (candidates are not perfectly centred), resampled once.
    Appearance, each drawn at random: stain strength in HED space
    (:func:`hed_jitter`), a residual colour cast (per-channel gain, log-normal
    ``colour_cast``), saturation change, a hue turn of up to ``hue_deg``
    degrees, brightness/contrast/gamma, Gaussian
    blur up to ``blur_sigma`` pixels (half the crops), a lower resolution
    (downsampled by up to ``low_res`` and back, a third), sensor noise and
    JPEG compression: the differences between labs' stains, cameras and
    focus that the helper must not learn.

    Parameters
    ----------
    big : (C, C, 3) ndarray of uint8
        ``C`` should be at least ``size * (1 + scale_jitter) * sqrt(2) + 2 * shift_px``
        so that rotated corners stay inside (outside is mirrored).

    Returns
    -------
    (size, size, 3) ndarray of float32 in [0, 1]
    """
    import cv2

    c = big.shape[0]
    angle = rng.uniform(0.0, 360.0)
    scale = rng.uniform(1.0 - scale_jitter, 1.0 + scale_jitter)
    centre = (c / 2.0 + rng.uniform(-shift_px, shift_px), c / 2.0 + rng.uniform(-shift_px, shift_px))
    m = cv2.getRotationMatrix2D(centre, angle, scale)
    m[:, 2] += np.array([size / 2.0, size / 2.0]) - np.array(centre)
    src = big[:, ::-1] if rng.integers(2) else big
    out = cv2.warpAffine(np.ascontiguousarray(src), m, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT_101)
    if low_res > 1 and rng.random() < 1 / 3:
        f = rng.uniform(1.0, low_res)
        small = max(4, int(round(size / f)))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                         interpolation=cv2.INTER_LINEAR)
    if blur_sigma > 0 and rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, blur_sigma))
    x = out.astype(np.float32) / 255.0
    if hed_strength > 0 or hed_shift > 0:
        x = hed_jitter(x, rng, strength=hed_strength, shift=hed_shift)
    x = x * np.exp(rng.normal(0.0, colour_cast, size=3)).astype(np.float32)
    if saturation > 0:
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * rng.uniform(1.0 - saturation, 1.0 + saturation)
    x = np.clip(x, 0.0, 1.0)
    if hue_deg > 0:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue_deg, hue_deg)) % 360.0
        x = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0)
    x = x ** rng.uniform(0.8, 1.25)
    x = brightness_contrast(x, rng, brightness=0.06, contrast=0.15)
    if noise > 0 and rng.random() < 0.3:
        x = x + rng.normal(0.0, rng.uniform(0.0, noise), size=x.shape).astype(np.float32)
    x = np.clip(x, 0.0, 1.0)
    if jpeg and rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", np.rint(x * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY,
                                                                           int(rng.integers(40, 91))])
        x = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    return x.astype(np.float32)
