"""Mask label files: binary masks and instance label images, and conversions.

A binary mask marks object pixels (any non-zero value); an instance label
image numbers objects 1..n (0 background), e.g. 16-bit PNG or TIFF.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from eosdetect.errors import InputError


def read_label_image(path: str | os.PathLike) -> np.ndarray:
    """Read a mask or label image without any colour conversion.

    Returns
    -------
    (M, N) ndarray of int32
        The stored values (first channel of a colour file).
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such mask file")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            arr = tifffile.imread(path)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read mask ({exc})") from None
    else:
        arr = _palette_indices(path)  # labelme's label.png, VOC SegmentationObject: one index per pixel
        if arr is None:
            arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise InputError(path, "cannot read mask (not an image file or damaged)")
    arr = np.asarray(arr)
    if arr.ndim == 3:
        colour = arr[..., :3]
        if colour.shape[-1] == 3 and not (np.array_equal(colour[..., 0], colour[..., 1])
                                          and np.array_equal(colour[..., 0], colour[..., 2])):
            raise InputError(path, "is a colour picture, not a mask (a mask has one value per pixel: "
                                   "0 for background, > 0 for cells)")
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputError(path, f"mask must be 2-D, got shape {arr.shape}")
    return arr.astype(np.int32)


#: The colour VOC's SegmentationObject/Class files give the "void" outline of each object.
VOC_VOID = (224, 224, 192)


def _palette_indices(path: Path) -> np.ndarray | None:
    """The colour indices of a palette image whose colours only show the objects (labelme,
    VOC; VOC's void outlines become background), else None: a palette of greys is read as
    its grey values, as before."""
    from eosdetect.io import MAX_IMAGE_PIXELS, pillow_open

    try:
        with pillow_open(path) as im:
            if im.mode != "P" or im.width * im.height > MAX_IMAGE_PIXELS:
                return None
            indices = np.array(im)
            colours = np.array(im.getpalette() or [], dtype=int).reshape(-1, 3)
    except Exception:  # noqa: BLE001 - not for Pillow: OpenCV reads it, or says what is wrong
        return None
    used = np.unique(indices)
    used = used[used < len(colours)]
    if np.all(colours[used].min(axis=1) == colours[used].max(axis=1)):
        return None  # greys: a black-and-white (or grey-level) mask stored with a palette
    if 255 in used and tuple(colours[255]) == VOC_VOID:
        indices = np.where(indices == 255, 0, indices)
    return indices


def is_soft_binary(arr: np.ndarray, band_px: int = 3) -> bool:
    """A binary mask with anti-aliased (blurred) edges rather than an instance label
    image: its top value is 255 or more and nearly all its other non-zero pixels
    (90%) lie within ``band_px`` of a top-valued pixel, as an edge does (instance
    labels give each cell its own value, whole cells away from the top one).

    >>> bool(is_soft_binary(np.array([[0, 128, 255, 255, 128, 0]])))
    True
    >>> bool(is_soft_binary(np.array([[0, 1, 1, 1, 0, 0, 0, 255, 255]])))
    False
    """
    arr = np.asarray(arr)
    top = int(arr.max())
    core = arr == top
    between = (arr > 0) & ~core
    if top < 255 or not between.any():
        return False
    near = ndi.binary_dilation(core, structure=np.ones((3, 3), dtype=bool) if arr.ndim == 2 else None,
                               iterations=band_px)
    return bool(np.count_nonzero(between & near) >= 0.9 * np.count_nonzero(between))


def instances_from_binary(mask: np.ndarray) -> np.ndarray:
    """Label the connected components of a binary mask (8-connectivity).

    >>> instances_from_binary(np.array([[1, 0, 1], [0, 0, 1]])).tolist()
    [[1, 0, 2], [0, 0, 2]]
    """
    labels, _ = ndi.label(np.asarray(mask) > 0, structure=np.ones((3, 3), dtype=bool))
    return labels.astype(np.int32)


def centroids(labels: np.ndarray) -> np.ndarray:
    """Centres ``(n, 2)`` (x, y) of objects 1..max of a label image (absent ids dropped)."""
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return np.zeros((0, 2))
    idx = np.arange(1, n + 1)
    present = np.bincount(labels.ravel(), minlength=n + 1)[1:] > 0
    c = np.asarray(ndi.center_of_mass(np.ones(labels.shape), labels, idx[present])).reshape(-1, 2)
    return c[:, ::-1].copy()


def separate_touching(labels: np.ndarray) -> np.ndarray:
    """Binary mask of the objects with a one-pixel gap wherever two objects touch.

    Training targets made this way teach the U-Net to leave a valley between
    touching cells, which the watershed then splits.
    """
    labels = np.asarray(labels)
    grown_max = ndi.grey_dilation(labels, size=(3, 3))
    masked = np.where(labels == 0, labels.max() + 1, labels)
    grown_min = ndi.grey_erosion(masked, size=(3, 3))
    border = (labels > 0) & ((grown_max != labels) | (grown_min != labels)) & (grown_min <= labels.max())
    return (labels > 0) & ~border
