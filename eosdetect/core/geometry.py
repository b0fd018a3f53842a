"""Geometry between an image and its resized copies: sizes, point mapping, crops.

Pixel centres sit at integer coordinates; a point ``xy`` (x, y) of an image
is at ``(xy + 0.5) / f - 0.5`` in a copy made smaller by the factors ``f``
of :func:`axis_factors`, and back at ``(xy + 0.5) * f - 0.5``. Every layer
maps points with :func:`to_resized`, :func:`from_resized` and
:func:`rescale_points`, nowhere by hand.
"""

from __future__ import annotations

import numpy as np

from eosdetect.core.tiling import read_region


def axis_factors(big_shape, small_shape) -> tuple[float, float]:
    """``(fx, fy)``: columns and rows of ``big_shape`` per column and row of ``small_shape``
    (the ratio of an image to its :func:`resize` copy, exact per axis)."""
    return big_shape[1] / small_shape[1], big_shape[0] / small_shape[0]


def resize(image: np.ndarray, scale: float, *, nearest: bool = False) -> np.ndarray:
    """Resize by ``scale`` (output size ``round(M * scale), round(N * scale)``).

    Area averaging when shrinking, bilinear when enlarging, nearest neighbour
    for label images. ``scale == 1`` returns the input unchanged.
    """
    import cv2

    if abs(scale - 1.0) < 1e-9:
        return image
    rows = max(1, int(round(image.shape[0] * scale)))
    cols = max(1, int(round(image.shape[1] * scale)))
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    src = image
    if image.dtype == np.int32 or image.dtype == np.int64 or image.dtype == np.uint32:
        src = image.astype(np.float32) if not nearest else image.astype(np.int32)
    out = cv2.resize(src, (cols, rows), interpolation=interp)
    if out.ndim == 2 and image.ndim == 3:
        out = out[:, :, None]
    return out.astype(image.dtype, copy=False)


def to_resized(xy, factors) -> np.ndarray:
    """Points ``xy`` (x, y; pixels of an image) in pixels of its resized copy.

    Parameters
    ----------
    xy : (n, 2) array_like of float
    factors : (float, float)
        ``(fx, fy)`` of :func:`axis_factors` (image per copy).

    Returns
    -------
    (n, 2) ndarray of float

    >>> to_resized([[0.0, 0.0], [3.0, 1.0]], (2.0, 2.0)).tolist()
    [[-0.25, -0.25], [1.25, 0.25]]
    """
    return (np.asarray(xy, dtype=float).reshape(-1, 2) + 0.5) / np.asarray(factors, dtype=float) - 0.5


def rescale_points(xy, factors) -> np.ndarray:
    """Points ``xy`` (x, y) in pixels of the same picture made ``factors`` times larger
    (``(fx, fy)``, or one number for both axes): pixel centre ``c`` goes to ``(c + 0.5) * f - 0.5``.

    >>> rescale_points([[-0.25, -0.25], [1.25, 0.25]], 2.0).tolist()
    [[0.0, 0.0], [3.0, 1.0]]
    """
    return (np.asarray(xy, dtype=float).reshape(-1, 2) + 0.5) * np.asarray(factors, dtype=float) - 0.5


def from_resized(xy, factors) -> np.ndarray:
    """Points ``xy`` of a resized copy in pixels of the original image (inverse of :func:`to_resized`).

    >>> from_resized([[-0.25, -0.25], [1.25, 0.25]], (2.0, 2.0)).tolist()
    [[0.0, 0.0], [3.0, 1.0]]
    """
    return rescale_points(xy, factors)


def extract_crops(image: np.ndarray, xy: np.ndarray, size: int) -> np.ndarray:
    """Square crops of ``size`` pixels centred on points ``xy`` (x, y; pixels of ``image``).

    Parts outside the image are mirrored.

    Parameters
    ----------
    image : (M, N, C) ndarray
    xy : (n, 2) array_like of float
    size : int

    Returns
    -------
    crops : (n, size, size, C) ndarray of image's dtype

    >>> extract_crops(np.arange(16).reshape(4, 4, 1), [[1, 1]], 2)[0, :, :, 0].tolist()
    [[0, 1], [4, 5]]
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    out = np.empty((len(xy), size, size, image.shape[2]), dtype=image.dtype)
    half = size / 2.0
    for i, (x, y) in enumerate(xy):
        r0 = int(np.floor(y + 0.5 - half))
        c0 = int(np.floor(x + 0.5 - half))
        out[i] = read_region(image, slice(r0, r0 + size), slice(c0, c0 + size))
    return out
