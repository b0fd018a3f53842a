"""Tiled prediction with exact stitching.

A tile of ``tile_size`` pixels is read around each block of the output; the
network's output is trusted only in the tile's centre, where the whole
receptive field of every pixel lies inside the tile (``margin`` >= half the
receptive field). The trusted centres partition the image: every pixel is
written exactly once, there is no seam, nothing is dropped and the map is
never resized. Because each trusted pixel sees exactly the context it would
see in a whole-image pass, tiled and untiled maps agree to float precision,
so no blending weights are needed to hide seams (see ``tests/test_tiling.py``).

Outside the image the input is mirrored (``numpy.pad(mode="reflect")``), the
same for tiles and whole-image passes. Tile origins are multiples of
``align`` (the U-Net's total pooling stride) so pooling grids line up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


@dataclass(frozen=True)
class Tile:
    """One tile: where to read it, which part of its output to keep, where to put it.

    ``read`` is in image coordinates and may extend outside the image (that part
    is mirrored); ``crop`` is within the tile's output; ``write`` is in output
    (image) coordinates. ``crop`` and ``write`` have the same shape.
    """

    read: tuple[slice, slice]
    crop: tuple[slice, slice]
    write: tuple[slice, slice]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_grid(shape: tuple[int, int], tile_size: int, margin: int, align: int = 1) -> list[Tile]:
    """Tiles covering an image of ``shape = (rows, cols)``.

    Parameters
    ----------
    shape : (int, int)
        Image rows and columns.
    tile_size : int
        Edge of a (square) tile; rounded down to a multiple of ``align``.
    margin : int
        Context on each side of a tile's trusted centre; rounded up to a
        multiple of ``align``.
    align : int
        Tile origins (relative to the image origin minus ``margin``) are
        multiples of this.

    Returns
    -------
    tiles : list of Tile
        The ``write`` regions partition the image.

    Examples
    --------
    >>> [t.write for t in tile_grid((5, 3), tile_size=8, margin=2)]
    [(slice(0, 4, None), slice(0, 3, None)), (slice(4, 5, None), slice(0, 3, None))]
    """
    rows, cols = (int(s) for s in shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"image shape must be positive, got {shape}")
    margin = _round_up(max(int(margin), 0), align)
    tile_size = (int(tile_size) // align) * align
    block = tile_size - 2 * margin
    if block < align:
        raise ValueError(
            f"tile_size {tile_size} leaves no room inside a margin of {margin} on each side"
        )
    tiles = []
    for r0 in range(0, rows, block):
        r1 = min(r0 + block, rows)
        for c0 in range(0, cols, block):
            c1 = min(c0 + block, cols)
            tiles.append(
                Tile(
                    read=(slice(r0 - margin, r0 - margin + tile_size), slice(c0 - margin, c0 - margin + tile_size)),
                    crop=(slice(margin, margin + r1 - r0), slice(margin, margin + c1 - c0)),
                    write=(slice(r0, r1), slice(c0, c1)),
                )
            )
    return tiles


def _reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map indices outside ``[0, n)`` into it as ``numpy.pad(mode="reflect")`` does."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    i = np.mod(index, period)
    return np.where(i >= n, period - i, i)


def read_region(image: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Read ``image[rows, cols]`` where the slices may reach outside the image.

    Pixels outside are mirrored about the border (as ``numpy.pad(mode="reflect")``),
    without padding the whole image. Returns a new array.
    """
    ri = _reflect_index(np.arange(rows.start, rows.stop), image.shape[0])
    ci = _reflect_index(np.arange(cols.start, cols.stop), image.shape[1])
    inside_r = rows.start >= 0 and rows.stop <= image.shape[0]
    inside_c = cols.start >= 0 and cols.stop <= image.shape[1]
    if inside_r and inside_c:
        return image[rows, cols].copy()
    return image[np.ix_(ri, ci)]


def _batched(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict_tiled(
    image: np.ndarray,
    predict_fn: Callable[[np.ndarray], np.ndarray],
    *,
    tile_size: int,
    margin: int,
    align: int = 1,
    batch_size: int = 4,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Run ``predict_fn`` tile by tile and stitch the results.

    Parameters
    ----------
    image : (M, N, C) ndarray
        Network input (already scaled as the network expects).
    predict_fn : callable
        ``(n, tile, tile, C) float32 -> (n, tile, tile)`` map, e.g.
        :func:`eosdetect.models.unet.make_predict_fn`.
    tile_size, margin, align : int
        See :func:`tile_grid`.
    batch_size : int
        Tiles per call of ``predict_fn``.
    progress : callable, optional
        Called with the number of tiles just finished.

    Returns
    -------
    prob : (M, N) ndarray of float32
    """
    if image.ndim != 3:
        raise ValueError(f"expected (M, N, C) image, got shape {image.shape}")
    tiles = tile_grid(image.shape[:2], tile_size, margin, align)
    out = np.empty(image.shape[:2], dtype=np.float32)
    for group in _batched(tiles, max(1, int(batch_size))):
        batch = np.stack([read_region(image, *t.read) for t in group]).astype(np.float32, copy=False)
        pred = np.asarray(predict_fn(batch))
        for t, p in zip(group, pred):
            out[t.write] = p[t.crop]
        if progress is not None:
            progress(len(group))
    return out


def predict_whole(
    image: np.ndarray,
    predict_fn: Callable[[np.ndarray], np.ndarray],
    *,
    margin: int,
    align: int = 1,
) -> np.ndarray:
    """Run ``predict_fn`` once on the whole (mirror-padded) image.

    The padding is ``margin`` on every side plus what is needed to reach a
    multiple of ``align``; the output is cropped back to the image, so it equals
    :func:`predict_tiled` with the same ``margin`` and ``align``.
    """
    rows, cols = image.shape[:2]
    margin = _round_up(max(int(margin), 0), align)
    total_r = _round_up(rows + 2 * margin, align)
    total_c = _round_up(cols + 2 * margin, align)
    padded = read_region(image, slice(-margin, total_r - margin), slice(-margin, total_c - margin))
    pred = np.asarray(predict_fn(padded[None].astype(np.float32, copy=False)))[0]
    return np.ascontiguousarray(pred[margin : margin + rows, margin : margin + cols], dtype=np.float32)
