"""Probability map -> cell instances -> detections.

Threshold the map, compute the distance transform of the foreground, take its
peaks (at least ``min_distance`` apart and standing ``seed_h`` above the
saddle to their neighbours) as seeds, and split touching cells by a
marker-controlled watershed. Objects outside the area range are dropped.
All sizes here are in pixels of the map; :mod:`eosdetect.models.predict` converts
the model's micrometre thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage as ndi

from eosdetect.core.geometry import rescale_points

#: Column order of a detections table (and of ``<stem>_detections.csv``).
DETECTION_COLUMNS = ("x", "y", "score", "area", "xmin", "ymin", "xmax", "ymax")


@dataclass
class Detections:
    """Detected cells, one entry per cell, as parallel 1-D arrays.

    ``x, y`` are centroid column and row (pixel centres at integer values);
    ``xmin, ymin, xmax, ymax`` the bounding box edges (``xmax``/``ymax``
    exclusive, so width is ``xmax - xmin``); ``area`` in square pixels;
    ``score`` in [0, 1]. ``label`` is the instance id in the label image the
    detections came from (0 when there is none).
    """

    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    area: np.ndarray
    xmin: np.ndarray
    ymin: np.ndarray
    xmax: np.ndarray
    ymax: np.ndarray
    label: np.ndarray

    def __post_init__(self):
        n = len(self.x)
        for f in fields(self):
            arr = np.asarray(getattr(self, f.name), dtype=np.int64 if f.name == "label" else np.float64)
            if arr.shape != (n,):
                raise ValueError(f"Detections.{f.name} has shape {arr.shape}, expected ({n},)")
            setattr(self, f.name, arr)

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def empty(cls) -> Detections:
        return cls(*[np.zeros(0) for _ in fields(cls)])

    @classmethod
    def from_points(cls, xy: np.ndarray, score=None, radius: float = 1.0) -> Detections:
        """Detections at points ``xy`` (shape ``(n, 2)``, columns x, y) with square boxes."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        n = len(xy)
        s = np.ones(n) if score is None else np.asarray(score, dtype=float)
        return cls(
            xy[:, 0], xy[:, 1], s, np.full(n, np.pi * radius**2),
            xy[:, 0] - radius, xy[:, 1] - radius, xy[:, 0] + radius, xy[:, 1] + radius, np.zeros(n),
        )

    @property
    def xy(self) -> np.ndarray:
        """``(n, 2)`` array of ``x, y``."""
        return np.stack([self.x, self.y], axis=1)

    def subset(self, keep) -> Detections:
        """Entries selected by a boolean mask or index array."""
        return Detections(*[getattr(self, f.name)[keep] for f in fields(self)])

    def with_score(self, score) -> Detections:
        d = self.subset(slice(None))
        d.score = np.asarray(score, dtype=np.float64).reshape(len(self))
        return d

    def rescaled(self, factor: float | tuple[float, float]) -> Detections:
        """Coordinates of the same cells in an image resized by ``1 / factor``.

        ``factor`` is the model-to-input ratio, one number or ``(fx, fy)`` per
        axis (rows and columns are rounded apart when resizing, so the two may
        differ slightly): a detection at model pixel centre ``c`` is at input
        pixel centre ``(c + 0.5) * f - 0.5``; box edges scale by ``f`` and
        areas by ``fx * fy``.
        """
        fx, fy = (float(factor), float(factor)) if np.isscalar(factor) else map(float, factor)
        x, y = rescale_points(np.column_stack([self.x, self.y]), (fx, fy)).T
        return Detections(
            x, y, self.score, self.area * fx * fy,
            self.xmin * fx, self.ymin * fy, self.xmax * fx, self.ymax * fy, self.label,
        )

    def shifted(self, dx: float, dy: float) -> Detections:
        """The same cells with coordinates moved by ``(dx, dy)`` pixels (a block's offset in a slide)."""
        return Detections(self.x + dx, self.y + dy, self.score, self.area, self.xmin + dx, self.ymin + dy,
                          self.xmax + dx, self.ymax + dy, self.label)

    @classmethod
    def concatenate(cls, parts: list[Detections]) -> Detections:
        """All cells of several tables, in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(*[np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)])

    def rows(self) -> list[tuple]:
        """Table rows in :data:`DETECTION_COLUMNS` order (boxes as integers)."""
        return [
            (round(float(x), 2), round(float(y), 2), round(float(s), 4), round(float(a), 1),
             int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))
            for x, y, s, a, x0, y0, x1, y1 in zip(
                self.x, self.y, self.score, self.area, self.xmin, self.ymin, self.xmax, self.ymax
            )
        ]


def segment(
    prob: np.ndarray,
    *,
    prob_threshold: float = 0.5,
    min_distance: float = 3.0,
    smooth: float = 1.0,
    seed_h: float = 0.5,
    min_area: float = 0.0,
    max_area: float = np.inf,
) -> np.ndarray:
    """Split a probability map into cell instances.

    Parameters
    ----------
    prob : (M, N) ndarray of float
        Probability that a pixel belongs to a cell.
    prob_threshold : float
        Foreground is ``prob >= prob_threshold``.
    min_distance : float
        Smallest distance (pixels) between two seeds.
    smooth : float
        Gaussian sigma (pixels) applied to the distance map before seeding.
    seed_h : float
        A seed must rise at least this much (pixels of distance) above the
        saddle that joins it to a higher one; lower peaks are merged.
    min_area, max_area : float
        Objects with fewer / more pixels are removed.

    Returns
    -------
    labels : (M, N) ndarray of int32
        0 is background, objects are numbered 1..n consecutively.

    Examples
    --------
    Two touching discs become two objects:

    >>> yy, xx = np.mgrid[:20, :32]
    >>> discs = ((yy - 10) ** 2 + (xx - 9) ** 2 < 49) | ((yy - 10) ** 2 + (xx - 21) ** 2 < 49)
    >>> int(segment(discs.astype(float)).max())
    2
    """
    from skimage.segmentation import watershed

    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {prob.shape}")
    mask = ndi.binary_fill_holes(prob >= prob_threshold)  # ring-shaped predictions of large cells
    if not mask.any():
        return np.zeros(prob.shape, dtype=np.int32)
    dist = ndi.distance_transform_edt(mask).astype(np.float32)
    if smooth > 0:
        dist = ndi.gaussian_filter(dist, smooth) * mask
    markers = seeds(dist, mask, min_distance=min_distance, h=seed_h)
    # every connected component gets at least one seed (its distance maximum)
    components, n_comp = ndi.label(mask)
    seeded = np.zeros(n_comp + 1, dtype=bool)
    seeded[components[markers > 0]] = True
    missing = np.flatnonzero(~seeded[1:]) + 1
    if len(missing):
        next_id = int(markers.max()) + 1
        for i, (r, c) in enumerate(ndi.maximum_position(dist, components, missing)):
            markers[int(r), int(c)] = next_id + i
    labels = watershed(-dist, markers, mask=mask).astype(np.int32)
    return filter_by_area(labels, min_area, max_area)


def seeds(dist: np.ndarray, mask: np.ndarray, *, min_distance: float = 3.0, h: float = 0.5) -> np.ndarray:
    """Watershed seeds: the tops of the h-domes of a distance map, thinned to ``min_distance``.

    The h-maxima transform (morphological reconstruction of ``dist - h`` under
    ``dist``) flattens every peak that rises less than ``h`` above the saddle
    joining it to a higher one, so two lobes of one cell become a single
    plateau. Plateaus closer than ``min_distance`` to a higher one are dropped.
    Every connected component of ``mask`` gets at least one seed.

    Returns
    -------
    markers : (M, N) ndarray of int32
        Seed regions numbered 1..n.
    """
    from skimage.morphology import local_maxima

    top = reconstruct_by_dilation(dist - h, dist) if h > 0 else dist
    plateaus = local_maxima(top, connectivity=2) & mask
    markers, n = ndi.label(plateaus, structure=np.ones((3, 3), dtype=bool))
    if n > 1 and min_distance > 1:
        from scipy.spatial import cKDTree

        index = np.arange(1, n + 1)
        height = ndi.maximum(top, markers, index)
        centre = np.asarray(ndi.center_of_mass(plateaus, markers, index)).reshape(-1, 2)
        order = np.argsort(-height, kind="stable")
        keep = np.ones(n, dtype=bool)
        tree = cKDTree(centre)
        for i in order:
            if not keep[i]:
                continue
            for j in tree.query_ball_point(centre[i], r=min_distance - 1e-9):
                if j != i and keep[j] and (height[j] < height[i] or (height[j] == height[i] and j > i)):
                    keep[j] = False
        lut = np.zeros(n + 1, dtype=np.int32)
        lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
        markers = lut[markers]
    return markers.astype(np.int32)


def reconstruct_by_dilation(marker: np.ndarray, mask: np.ndarray, *, max_iter: int = 10_000) -> np.ndarray:
    """Greyscale morphological reconstruction by dilation of ``marker`` under ``mask``.

    Same result as ``skimage.morphology.reconstruction(marker, mask)`` (8-connected),
    computed by repeated 3x3 dilations (OpenCV) until nothing changes; for
    distance maps this converges in about as many steps as the widest object
    is across, which is much faster than a full sort of the image.
    """
    import cv2

    mask = np.asarray(mask, dtype=np.float32)
    rec = np.minimum(np.asarray(marker, dtype=np.float32), mask)
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(max_iter):
        # several dilation steps between convergence checks
        prev = rec
        for _ in range(4):
            rec = np.minimum(cv2.dilate(rec, kernel), mask)
        if np.array_equal(rec, prev):
            break
    return rec


def filter_by_area(labels: np.ndarray, min_area: float = 0.0, max_area: float = np.inf) -> np.ndarray:
    """Remove objects outside ``[min_area, max_area]`` and renumber 1..n. Returns a new array."""
    areas = np.bincount(labels.ravel())
    keep = (areas >= min_area) & (areas <= max_area)
    keep[0] = False
    lut = np.zeros(len(areas), dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[labels]


def detections_from_labels(labels: np.ndarray, prob: np.ndarray | None = None) -> Detections:
    """One detection per object of a label image.

    Parameters
    ----------
    labels : (M, N) ndarray of int
        Objects numbered 1..n (0 background).
    prob : (M, N) ndarray of float, optional
        Score of an object is its mean probability; 1 when not given.

    Returns
    -------
    Detections
        In pixel coordinates of ``labels``.
    """
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return Detections.empty()
    index = np.arange(1, n + 1)
    area = ndi.sum_labels(np.ones(labels.shape, dtype=np.float64), labels, index)
    present = area > 0
    index, area = index[present], area[present]
    centres = np.asarray(ndi.center_of_mass(np.ones(labels.shape), labels, index)).reshape(-1, 2)
    slices = ndi.find_objects(labels)
    boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in (slices[i - 1] for i in index)], dtype=float)
    if prob is None:
        score = np.ones(len(index))
    else:
        score = ndi.mean(np.asarray(prob, dtype=np.float64), labels, index)
    return Detections(
        centres[:, 1], centres[:, 0], score, area, boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], index,
    )
