"""Colour of stained cells: white balance on the background, colour statistics of a crop.

Pure array functions on RGB uint8 images.
"""

from __future__ import annotations

import cv2
import numpy as np

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


def tissue_mask(thumb: np.ndarray, *, min_saturation: float = 0.07, max_gray: int = 215) -> np.ndarray:
    """Where the thumbnail shows stained material rather than bare glass.

    A pixel is tissue when it is coloured (HSV saturation above
    ``min_saturation``) or dark (grey level below ``max_gray``); specks are
    removed and the mask is dilated by two thumbnail pixels, so that cells at
    the tissue's edge are not cut off.
    """
    import cv2
    from scipy import ndimage as ndi

    rgb = thumb.astype(np.float32)
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    sat = (mx - mn) / np.maximum(mx, 1.0)
    gray = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY)
    mask = (sat > min_saturation) | (gray < max_gray)
    mask = ndi.binary_opening(mask, iterations=1)
    return ndi.binary_dilation(mask, iterations=2)


# --------------------------------------------------------------------------- counting
