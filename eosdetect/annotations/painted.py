"""Points painted onto a copy of an image (the original EOS-Detection convention).

The first EOS-Detection lab marked each cell with a green dot painted onto a
copy of the image. This module recovers those dots as points so that old
labels can be used; new labels should be written as CSV points
(:mod:`eosdetect.annotations.points`) or LabelImg boxes instead.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def points_from_painted(
    painted_rgb: np.ndarray,
    original_rgb: np.ndarray | None = None,
    *,
    colour: tuple[int, int, int] = (0, 255, 0),
    tolerance: float = 60,
    min_area: int = 3,
) -> np.ndarray:
    """Find the marker dots painted on an image and return their centres.

    A pixel is marked when each of its R, G, B values is within
    ``tolerance`` of ``colour`` (Chebyshev distance) and, when the unpainted
    image is given, at least one channel differs from that image by more than
    ``tolerance`` (so marker-coloured pixels that were already there are
    ignored). Marked pixels are grouped into 8-connected dots; dots of fewer
    than ``min_area`` pixels (JPEG specks) are dropped, and each dot's centre
    is the mean position of its pixels.

    JPEG compression blurs a dot's colour into the tissue around it (chroma is
    stored at half resolution); the rim is lost but the core stays within
    ``tolerance``, which is enough for the centre. On H&E tiles, green dots of
    radius 3 px or more painted with ``cv2.circle`` were all found, with no
    false dots, at JPEG quality 50 to 95 with the defaults; dots of radius
    2 px (5 px across) need ``tolerance=100`` below quality 95.

    Parameters
    ----------
    painted_rgb : (M, N, 3) ndarray of uint8
        The image with the dots painted on.
    original_rgb : (M, N, 3) ndarray of uint8, optional
        The same image before painting.
    colour : (int, int, int)
        RGB colour of the markers; pure green by default.
    tolerance : float
        Largest difference, in any channel, from ``colour`` counted as marker
        (0 to 255).
    min_area : int
        Smallest dot kept, in pixels (at least 1).

    Returns
    -------
    xy : (n, 2) ndarray of float64
        Centre (mean pixel position) of each dot as ``x, y`` in pixels,
        ordered by the dots' first pixel in row-major order; ``(0, 2)`` when
        none. The inputs are not modified.

    Raises
    ------
    ValueError
        If an image is not ``(M, N, 3)`` uint8, the two images differ in
        shape, or an option is out of range.

    Examples
    --------
    >>> img = np.full((4, 6, 3), 200, dtype=np.uint8)
    >>> img[1:3, 3:5] = (0, 255, 0)
    >>> points_from_painted(img).tolist()
    [[3.5, 1.5]]
    """
    painted = _check_rgb(painted_rgb, "painted_rgb")
    target = np.asarray(colour, dtype=np.float64)
    if target.shape != (3,) or not np.isfinite(target).all():
        raise ValueError(f"colour must be three numbers (R, G, B), got {colour!r}")
    if not _is_number(tolerance) or not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if not _is_number(min_area) or not np.isfinite(min_area) or int(min_area) != min_area or min_area < 1:
        raise ValueError(f"min_area must be a whole number >= 1, got {min_area!r}")

    pix = painted.astype(np.float64)
    marked = _distance(pix, target) <= tolerance
    if original_rgb is not None:
        original = _check_rgb(original_rgb, "original_rgb")
        if original.shape != painted.shape:
            raise ValueError(
                f"original_rgb has shape {original.shape}, painted_rgb has {painted.shape}; they must match"
            )
        marked &= _distance(pix, original.astype(np.float64)) > tolerance

    labels, n = ndi.label(marked, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 2))
    idx = np.arange(1, n + 1)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = idx[area >= int(min_area)]
    if len(keep) == 0:
        return np.zeros((0, 2))
    rc = np.asarray(ndi.center_of_mass(marked, labels, keep), dtype=np.float64).reshape(-1, 2)
    return rc[:, ::-1].copy()


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest absolute channel difference (Chebyshev distance in RGB)."""
    return np.abs(a - b).max(axis=-1)


def _check_rgb(image, name: str) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{name} must be an (M, N, 3) uint8 RGB image, got shape {a.shape} {a.dtype}")
    return a
