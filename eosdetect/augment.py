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
