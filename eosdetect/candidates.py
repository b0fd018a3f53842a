"""Classical cell candidates without a trained network.

Colour deconvolution (:func:`skimage.color.rgb2hed`) isolates the stain that
marks the objects (haematoxylin for nuclei and white-cell nuclei), Otsu's
threshold separates it from the background, and the same distance transform +
watershed as for U-Net maps splits touching objects.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .postprocess import Detections, detections_from_labels, segment


def stain_channel(image: np.ndarray, stain: str = "hematoxylin") -> np.ndarray:
    """Stain concentration map of an RGB image.

    Parameters
    ----------
    image : (M, N, 3) ndarray of uint8
    stain : {"hematoxylin", "eosin"}

    Returns
    -------
    (M, N) ndarray of float32, normalised to [0, 1] by its 1st and 99.9th percentiles.
    """
    from skimage.color import rgb2hed

    channel = {"hematoxylin": 0, "eosin": 1}[stain]
    hed = rgb2hed(np.asarray(image))[..., channel].astype(np.float32)
    lo, hi = np.percentile(hed, [1, 99.9])
    return np.clip((hed - lo) / max(hi - lo, 1e-6), 0, 1)


def classical_nuclei(
    image: np.ndarray,
    *,
    pixel_size_um: float,
    smooth_um: float = 0.5,
    threshold_offset: float = 0.0,
    min_distance_um: float = 3.0,
    seed_h_um: float = 0.5,
    min_area_um2: float = 8.0,
    max_area_um2: float = 400.0,
) -> tuple[np.ndarray, Detections]:
    """Nuclei by haematoxylin channel, Otsu threshold, distance transform and watershed.

    Parameters
    ----------
    image : (M, N, 3) ndarray of uint8
    pixel_size_um : float
        Pixel size of ``image``; all other sizes are in micrometres.
    threshold_offset : float
        Added to Otsu's threshold on the normalised haematoxylin map.

    Returns
    -------
    labels : (M, N) ndarray of int32
    detections : Detections
    """
    from skimage.filters import threshold_otsu

    h = stain_channel(image, "hematoxylin")
    if smooth_um > 0:
        h = ndi.gaussian_filter(h, smooth_um / pixel_size_um)
    t = threshold_otsu(h) + threshold_offset
    mask = ndi.binary_opening(h >= t, iterations=1)
    px = pixel_size_um
    labels = segment(
        mask.astype(np.float32), prob_threshold=0.5, min_distance=min_distance_um / px,
        smooth=smooth_um / px, seed_h=seed_h_um / px, min_area=min_area_um2 / px**2, max_area=max_area_um2 / px**2,
    )
    return labels, detections_from_labels(labels)
