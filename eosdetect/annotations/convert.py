"""Turning point and box labels into training masks for the U-Net.

Points (one per cell) become discs of the model's cell radius; boxes become
the ellipses inscribed in them. Where the discs of two points overlap, each
pixel goes to the nearer point and a one-pixel gap is left between them, so
that touching cells stay separate objects in the target (the network learns
to leave a valley there, which the watershed then splits).

Coordinates: a point ``x, y`` is in pixels with pixel centres at integer
values (pixel ``(row, col)`` has its centre at ``x = col, y = row``); a box
``xmin, ymin, xmax, ymax`` is in pixel-edge coordinates with ``xmax`` and
``ymax`` exclusive (the integer box ``0, 0, 2, 2`` covers pixels 0 and 1).
"""

from __future__ import annotations

import math

import numpy as np

#: Offsets (row, col) of the 8 neighbours of a pixel.
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def points_to_mask(
    image_rgb: np.ndarray, xy: np.ndarray, radius_px: float, *, boxes: np.ndarray | None = None
) -> np.ndarray:
    """Foreground mask of point labels: one disc per point, touching discs kept apart.

    Method: every pixel whose centre lies within ``radius_px`` of a point
    (and inside that point's box when ``boxes`` is given) is a candidate for
    that point; a pixel that is a candidate for several points goes to the
    nearest one (on a tie, the earlier point). Then, wherever pixels of two
    different points are 8-neighbours, the one of the pair nearer to the
    perpendicular bisector of the two points is cleared (on a tie, the one of
    the later point). This leaves a gap about one pixel wide along the
    bisector, so no two points' regions touch, even diagonally, and :func:`~eosdetect.annotations.masks.instances_from_binary`
    gives one object per point (when discs do not vanish entirely).

    Parameters
    ----------
    image_rgb : (M, N, 3) or (M, N) ndarray
        The labelled image; only its shape is used.
    xy : (n, 2) array_like of float
        Points ``x, y`` in pixels (cell centres).
    radius_px : float
        Disc radius in pixels (> 0): half the model's cell diameter at the
        image's scale.
    boxes : (n, 4) array_like of float, optional
        Box ``xmin, ymin, xmax, ymax`` (``xmax``, ``ymax`` exclusive) of each
        point; its disc is clipped to it (a pixel counts when its centre is
        inside the box).

    Returns
    -------
    mask : (M, N) ndarray of bool
        A new array; the inputs are not modified.

    Raises
    ------
    ValueError
        If the image is not 2- or 3-D, ``xy`` is not ``(n, 2)`` finite,
        ``radius_px`` is not a positive number, or ``boxes`` is not
        ``(n, 4)`` finite.

    Examples
    --------
    Two points 4 px apart with radius 3: the middle column is the gap.

    >>> m = points_to_mask(np.zeros((3, 9)), [[2, 1], [6, 1]], 3)
    >>> m.astype(int)
    array([[1, 1, 1, 1, 0, 1, 1, 1, 1],
           [1, 1, 1, 1, 0, 1, 1, 1, 1],
           [1, 1, 1, 1, 0, 1, 1, 1, 1]])
    """
    return points_to_labels(image_rgb, xy, radius_px, boxes=boxes) > 0


def points_to_labels(
    image_rgb: np.ndarray, xy: np.ndarray, radius_px: float, *, boxes: np.ndarray | None = None
) -> np.ndarray:
    """Instance label image of point labels: :func:`points_to_mask` with each region numbered.

    Returns
    -------
    labels : (M, N) ndarray of int32
        ``i + 1`` on the pixels of point ``i`` (0-based), 0 for background and
        gaps. A point whose region is empty (outside the image, or taken
        entirely by nearer points) has no pixel.

    See :func:`points_to_mask` for the parameters and the method.

    Examples
    --------
    >>> points_to_labels(np.zeros((3, 6)), [[1, 1], [4, 1]], 1.5).tolist()
    [[1, 1, 1, 0, 2, 2], [1, 1, 1, 0, 2, 2], [1, 1, 1, 0, 2, 2]]
    """
    shape = _image_shape(image_rgb)
    pts = _as_rows(xy, 2, "xy")
    if isinstance(radius_px, bool) or not isinstance(radius_px, (int, float, np.integer, np.floating)) \
            or not math.isfinite(radius_px) or radius_px <= 0:
        raise ValueError(f"radius_px must be a positive number, got {radius_px!r}")
    radius = float(radius_px)
    box_arr = None
    if boxes is not None:
        box_arr = _as_rows(boxes, 4, "boxes")
        if len(box_arr) != len(pts):
            raise ValueError(f"boxes has {len(box_arr)} rows for {len(pts)} points; give one box per point")

    rows_n, cols_n = shape
    owner = np.zeros(shape, dtype=np.int32)
    best = np.full(shape, np.inf)
    for i, (x, y) in enumerate(pts):
        r0, r1 = math.floor(y - radius), math.ceil(y + radius) + 1
        c0, c1 = math.floor(x - radius), math.ceil(x + radius) + 1
        if box_arr is not None:  # pixel centre c + 0.5 (edge coordinates) inside [xmin, xmax)
            bx0, by0, bx1, by1 = box_arr[i]
            c0, c1 = max(c0, math.ceil(bx0 - 0.5)), min(c1, math.ceil(bx1 - 0.5))
            r0, r1 = max(r0, math.ceil(by0 - 0.5)), min(r1, math.ceil(by1 - 0.5))
        r0, r1 = max(r0, 0), min(r1, rows_n)
        c0, c1 = max(c0, 0), min(c1, cols_n)
        if r0 >= r1 or c0 >= c1:
            continue
        rr, cc = np.mgrid[r0:r1, c0:c1]
        d = np.hypot(cc - x, rr - y)
        win_best = best[r0:r1, c0:c1]
        take = (d <= radius) & (d < win_best)
        win_best[take] = d[take]
        owner[r0:r1, c0:c1][take] = i + 1
    return _cut_gaps(owner, pts)


def _cut_gaps(owner: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Clear, for each 8-adjacent pair of pixels of different points, the one nearer their bisector."""
    if len(pts) < 2 or not owner.any():
        return owner
    xs = np.concatenate([[np.nan], pts[:, 0]])  # indexed by owner (0 = none)
    ys = np.concatenate([[np.nan], pts[:, 1]])
    rows, cols = np.indices(owner.shape, dtype=np.float64)
    own_pad = np.pad(owner, 1)
    m, n = owner.shape
    remove = np.zeros(owner.shape, dtype=bool)
    for dr, dc in _NEIGHBOURS:
        other = own_pad[1 + dr: 1 + dr + m, 1 + dc: 1 + dc + n]
        pair = (owner > 0) & (other > 0) & (other != owner)
        if not pair.any():
            continue
        r, c, o, q = rows[pair], cols[pair], owner[pair], other[pair]
        # signed distances to the perpendicular bisector of the two points, each on its own side
        ux, uy = xs[o] - xs[q], ys[o] - ys[q]
        mx, my = (xs[o] + xs[q]) / 2, (ys[o] + ys[q]) / 2
        norm = np.hypot(ux, uy)
        safe = np.where(norm > 0, norm, 1.0)
        here = np.where(norm > 0, ((c - mx) * ux + (r - my) * uy) / safe, 0.0)
        there = np.where(norm > 0, -((c + dc - mx) * ux + (r + dr - my) * uy) / safe, 0.0)
        remove[pair] |= (here < there) | ((here == there) & (o > q))
    out = owner.copy()
    out[remove] = 0
    return out


def boxes_to_mask(shape: tuple[int, int], boxes: np.ndarray, shrink: float = 0.9) -> np.ndarray:
    """Foreground mask of box labels: the filled ellipse inscribed in each box.

    Parameters
    ----------
    shape : (int, int)
        ``(rows, cols)`` of the mask.
    boxes : (n, 4) array_like of float
        ``xmin, ymin, xmax, ymax`` in pixel-edge coordinates, ``xmax`` and
        ``ymax`` exclusive.
    shrink : float
        Scale of the ellipse's semi-axes relative to the box (> 0; 1 touches
        the box edges). The default 0.9 keeps the background between a cell
        and its box corners out of the target.

    Returns
    -------
    mask : (M, N) ndarray of bool
        Pixels whose centre lies in at least one ellipse. Overlapping boxes
        merge (no gap); use :func:`points_to_mask` with ``boxes`` to keep
        touching cells apart.

    Raises
    ------
    ValueError
        If ``shape`` is not two positive integers, ``boxes`` is not
        ``(n, 4)`` finite, or ``shrink`` is not a positive number.

    Examples
    --------
    >>> boxes_to_mask((4, 6), [[1, 0, 5, 4]], shrink=1.0).astype(int)
    array([[0, 0, 1, 1, 0, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 0, 1, 1, 0, 0]])
    """
    size = check_shape(shape)
    box_arr = _as_rows(boxes, 4, "boxes")
    if isinstance(shrink, bool) or not isinstance(shrink, (int, float, np.integer, np.floating)) \
            or not math.isfinite(shrink) or shrink <= 0:
        raise ValueError(f"shrink must be a positive number, got {shrink!r}")
    rows, cols = np.mgrid[: size[0], : size[1]]
    mask = np.zeros(size, dtype=bool)
    for x0, y0, x1, y1 in box_arr:
        cx, cy = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5
        rx, ry = max((x1 - x0) / 2 * shrink, 0.5), max((y1 - y0) / 2 * shrink, 0.5)
        mask |= ((cols - cx) / rx) ** 2 + ((rows - cy) / ry) ** 2 <= 1.0
    return mask


def boxes_to_labels(shape: tuple[int, int], boxes: np.ndarray, shrink: float = 0.9) -> np.ndarray:
    """Instance label image of box labels: the ellipse inscribed in each box,
    overlapping ones kept apart.

    Each box's pixels go to the box whose centre is nearest (as in
    :func:`points_to_labels` with the boxes as clip regions, which also cuts a
    one-pixel gap between neighbours); of those, the pixels inside the box's
    ellipse (semi-axes ``shrink`` times half the box sides, as in
    :func:`boxes_to_mask`) are kept.

    Returns
    -------
    labels : (M, N) ndarray of int32
        ``i + 1`` on the pixels of box ``i``, 0 elsewhere.

    Examples
    --------
    >>> boxes_to_labels((3, 8), [[0, 0, 5, 3], [3, 0, 8, 3]], shrink=1.0).tolist()
    [[0, 1, 1, 1, 0, 2, 2, 0], [1, 1, 1, 1, 0, 2, 2, 2], [0, 1, 1, 1, 0, 2, 2, 0]]
    """
    size = check_shape(shape)
    box_arr = _as_rows(boxes, 4, "boxes")
    if not len(box_arr):
        return np.zeros(size, dtype=np.int32)
    centres = np.stack([(box_arr[:, 0] + box_arr[:, 2]) / 2 - 0.5, (box_arr[:, 1] + box_arr[:, 3]) / 2 - 0.5], axis=1)
    reach = float(np.max(np.hypot(box_arr[:, 2] - box_arr[:, 0], box_arr[:, 3] - box_arr[:, 1]))) / 2 + 1
    owner = points_to_labels(np.zeros(size), centres, reach, boxes=box_arr)
    out = np.zeros(size, dtype=np.int32)
    for i, (x0, y0, x1, y1) in enumerate(box_arr):
        r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), size[0])
        c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), size[1])
        if r0 >= r1 or c0 >= c1:
            continue
        rows, cols = np.mgrid[r0:r1, c0:c1]
        cx, cy = centres[i]
        rx, ry = max((x1 - x0) / 2 * shrink, 0.5), max((y1 - y0) / 2 * shrink, 0.5)
        inside = ((cols - cx) / rx) ** 2 + ((rows - cy) / ry) ** 2 <= 1.0
        win = out[r0:r1, c0:c1]
        win[inside & (owner[r0:r1, c0:c1] == i + 1)] = i + 1
    return out


def _as_rows(values, width: int, name: str) -> np.ndarray:
    try:
        arr = np.array(values, dtype=np.float64)  # a copy: never a view of the caller's array
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers of shape (n, {width})") from None
    if arr.size == 0:
        arr = arr.reshape(0, width)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{name} must have shape (n, {width}), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def _image_shape(image) -> tuple[int, int]:
    shape = np.shape(image)
    if len(shape) not in (2, 3) or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"image_rgb must be an (M, N) or (M, N, 3) array, got shape {shape}")
    return int(shape[0]), int(shape[1])


def check_shape(shape) -> tuple[int, int]:
    try:
        rows, cols = (int(s) for s in shape)
        ok = all(int(s) == s for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (rows, cols), got {shape!r}") from None
    if not ok or rows < 1 or cols < 1:
        raise ValueError(f"shape must be two positive integers (rows, cols), got {shape!r}")
    return rows, cols
