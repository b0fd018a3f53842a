"""Training data: labelled images at the model's scale, random patches, tf.data.

A :class:`Sample` is one image resized to the model's pixel size with its
target mask (1 = object), a loss-weight map (0 = ignore) and the object
centres. :class:`PatchSampler` draws augmented patches from samples (a set
fraction centred on objects, the rest anywhere) and feeds Keras through
``tf.data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eosdetect.core.tiling import read_region
from eosdetect.training import augment


@dataclass
class Sample:
    """One training image at model scale.

    image : (M, N, 3) uint8; target : (M, N) float32 in [0, 1];
    weight : (M, N) float32 loss weight (0 = ignore this pixel);
    points : (n, 2) object centres ``x, y`` (model pixels).
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def __post_init__(self):
        if self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"{self.name}: image must be (M, N, 3), got {self.image.shape}")
        if self.target.shape != self.image.shape[:2]:
            raise ValueError(f"{self.name}: target shape {self.target.shape} != image {self.image.shape[:2]}")
        if self.weight is None:
            self.weight = np.ones(self.target.shape, dtype=np.float32)
        self.points = np.asarray(self.points, dtype=float).reshape(-1, 2)


@dataclass
class AugmentSettings:
    flips: bool = True
    scale_jitter: float = 0.1
    hed_strength: float = 0.05
    hed_shift: float = 0.01
    brightness: float = 0.05
    contrast: float = 0.1


class PatchSampler:
    """Draw random, augmented ``(image, target+weight)`` patches from samples.

    Parameters
    ----------
    samples : list of Sample
    patch_size : int
    fg_fraction : float
        Fraction of patches centred (with jitter) on a random object.
    augment : AugmentSettings or None
        None disables augmentation (validation).
    seed : int
    """

    def __init__(self, samples, patch_size: int, *, fg_fraction: float = 0.5,
                 augment: AugmentSettings | None = None, seed: int = 0):
        if not samples:
            raise ValueError("no training samples")
        self.samples = list(samples)
        self.patch_size = int(patch_size)
        self.fg_fraction = float(fg_fraction)
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self._with_points = [i for i, s in enumerate(self.samples) if len(s.points)]
        sizes = np.array([s.image.shape[0] * s.image.shape[1] for s in self.samples], dtype=float)
        self._p = sizes / sizes.sum()

    def patch(self) -> tuple[np.ndarray, np.ndarray]:
        """One patch: ``x`` (P, P, 3) float32 in [0, 1], ``y`` (P, P, 2) float32 (target, weight)."""
        rng = self.rng
        P = self.patch_size
        scale = 1.0
        if self.augment is not None and self.augment.scale_jitter > 0:
            j = np.log1p(self.augment.scale_jitter)
            scale = float(np.exp(rng.uniform(-j, j)))
        size = max(8, int(round(P * scale)))
        if self._with_points and rng.random() < self.fg_fraction:
            s = self.samples[self._with_points[rng.integers(len(self._with_points))]]
            cx, cy = s.points[rng.integers(len(s.points))]
            cx += rng.uniform(-size / 3, size / 3)
            cy += rng.uniform(-size / 3, size / 3)
        else:
            s = self.samples[rng.choice(len(self.samples), p=self._p)]
            cy = rng.uniform(0, s.image.shape[0])
            cx = rng.uniform(0, s.image.shape[1])
        r0 = int(round(cy - size / 2))
        c0 = int(round(cx - size / 2))
        rows, cols = slice(r0, r0 + size), slice(c0, c0 + size)
        img = read_region(s.image, rows, cols)
        tw = read_region(np.stack([s.target, s.weight], axis=-1), rows, cols)
        # mirrored context outside the image is ignored by the loss
        inside = np.zeros((size, size), dtype=bool)
        ir0, ir1 = max(r0, 0) - r0, min(r0 + size, s.image.shape[0]) - r0
        ic0, ic1 = max(c0, 0) - c0, min(c0 + size, s.image.shape[1]) - c0
        if ir1 > ir0 and ic1 > ic0:
            inside[ir0:ir1, ic0:ic1] = True
        tw[..., 1] *= inside
        if size != P:
            import cv2

            img = cv2.resize(img, (P, P), interpolation=cv2.INTER_AREA if size > P else cv2.INTER_LINEAR)
            tw = cv2.resize(tw.astype(np.float32), (P, P), interpolation=cv2.INTER_LINEAR)
        x = img.astype(np.float32) / 255.0
        y = tw.astype(np.float32)
        if self.augment is not None:
            if self.augment.flips:
                x, y = augment.flip_rotate([x, y], rng)
            x = augment.colour_augment(
                x, rng, hed_strength=self.augment.hed_strength, hed_shift=self.augment.hed_shift,
                brightness=self.augment.brightness, contrast=self.augment.contrast,
            )
        return x, y

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.patch() for _ in range(n)))
        return np.stack(xs), np.stack(ys)

    def dataset(self, batch_size: int):
        """An endless ``tf.data.Dataset`` of batches, prefetched in the background."""
        import tensorflow as tf

        P = self.patch_size

        def gen():
            while True:
                yield self.batch(batch_size)

        return tf.data.Dataset.from_generator(
            gen,
            output_signature=(
                tf.TensorSpec((batch_size, P, P, 3), tf.float32),
                tf.TensorSpec((batch_size, P, P, 2), tf.float32),
            ),
        ).prefetch(2)


def fixed_patches(samples, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut every sample into a grid of non-overlapping patches (edges mirrored,
    mirrored pixels weighted 0): a deterministic validation set for the loss."""
    xs, ys = [], []
    P = int(patch_size)
    for s in samples:
        tw = np.stack([s.target, s.weight], axis=-1).astype(np.float32)
        for r0 in range(0, s.image.shape[0], P):
            for c0 in range(0, s.image.shape[1], P):
                rows, cols = slice(r0, r0 + P), slice(c0, c0 + P)
                x = read_region(s.image, rows, cols).astype(np.float32) / 255.0
                y = read_region(tw, rows, cols)
                y[min(P, s.image.shape[0] - r0):, :, 1] = 0
                y[:, min(P, s.image.shape[1] - c0):, 1] = 0
                xs.append(x)
                ys.append(y)
    return np.stack(xs), np.stack(ys)
