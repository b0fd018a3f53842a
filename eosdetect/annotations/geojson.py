"""QuPath GeoJSON: detected cells out, labelled cells in.

QuPath (0.4 and later) reads and writes its objects as GeoJSON Features
(``qupath.lib.io.PathObjectTypeAdapters``, ``ROITypeAdapters``)::

    {"type": "FeatureCollection", "features": [
      {"type": "Feature", "id": "<uuid>",
       "geometry": {"type": "Polygon", "coordinates": [[[x, y], ...]]},
       "properties": {"objectType": "detection",
                      "classification": {"name": "eosinophil", "color": [0, 230, 64]},
                      "measurements": {"Score": 0.97, "Area px^2": 113.0}}}]}

Coordinates are pixels of the full-resolution image (a slide's level 0) with
QuPath's origin: the top-left corner of the top-left pixel, so that pixel
``(row r, column c)`` covers ``[c, c + 1) x [r, r + 1)``. eosdetect's
detections put a pixel's centre at integer values (``x = c``); this module
converts between the two (``X = x + 0.5``). Box edges (``xmin`` .. ``xmax``
exclusive) are the same in both.

Writing (:func:`detections_to_geojson`, :func:`analysis_to_geojson`,
:func:`write_geojson`): each cell is a ``detection`` Feature with its outline
traced from the instance label image, or a box of the cell's size centred on
it when there is none; its class with a colour (QuPath refuses a class
without one); its score, area and, with a multi-class helper, every class's
probability as measurements. The densest high-power field and a slide's
tissue are unclassified, named ``annotation`` Features.

Reading (:func:`read_geojson`): a FeatureCollection, a list of Features or
one Feature, as QuPath writes them. Every annotation, detection and cell
becomes one :class:`QuPathObject` per point (``Point``, ``MultiPoint``) or
per outline (``Polygon``, each part of a ``MultiPolygon``; rectangles and
ellipses are polygons in GeoJSON, an ellipse flagged ``isEllipse``). Lines,
tiles and TMA cores are not cells and are left out.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eosdetect.errors import InputError
from eosdetect.io import atomic_write_text

log = logging.getLogger(__name__)

#: QuPath object types read as labels; others (``tile``, ``tmaCore``, ``root``) are left out.
LABEL_OBJECT_TYPES = ("annotation", "detection", "cell")
#: QuPath's object types before 0.4 (written in the Feature's ``id``) and their names since.
_LEGACY_TYPES = {
    "PathAnnotationObject": "annotation", "PathDetectionObject": "detection", "PathCellObject": "cell",
    "PathTileObject": "tile", "TMACoreObject": "tmaCore", "PathRootObject": "root",
}
#: Decimals of the coordinates written (QuPath's own ``ROITypeAdapter`` writes 2).
COORDINATE_DECIMALS = 2
#: Names of the two annotations :func:`detections_to_geojson` adds.
HPF_NAME = "Densest high-power field"
TISSUE_NAME = "Tissue"
_ID_NAMESPACE = uuid.UUID("3f0b6a52-5d1e-4c1e-9a57-0c2b1f4e6d01")  # eosdetect's, for reproducible ids

Ring = np.ndarray  # (k, 2) float64 x, y in QuPath coordinates, closed (first vertex repeated last)


# --------------------------------------------------------------------------- outlines


def mask_polygons(mask: np.ndarray, factors: tuple[float, float] = (1.0, 1.0),
                  offset: tuple[float, float] = (0.0, 0.0), tolerance: float = 0.01) -> list[list[Ring]]:
    """Outlines of the regions of a binary mask, as polygons with holes.

    The outline runs along the pixel edges between the region and the rest
    (marching squares at level 0.5, diagonal pixel neighbours connected), so
    the area of a polygon is that of its pixels less a quarter pixel at each
    convex corner.

    Parameters
    ----------
    mask : (M, N) array_like of bool
    factors : (float, float)
        ``(fx, fy)``: image pixels per mask pixel (a mask at a coarser scale
        than the image it outlines).
    offset : (float, float)
        ``(x, y)`` of the mask's top-left corner, in mask pixels.
    tolerance : float
        Vertices closer than this (mask pixels) to the line through their
        neighbours are dropped (Douglas-Peucker); the default drops only those
        on a straight edge.

    Returns
    -------
    polygons : list of list of (k, 2) ndarray of float64
        One polygon per region, largest first: its outer ring, then its
        holes. Rings are closed, in QuPath coordinates (pixel ``c`` spans
        ``[c, c + 1)``) of the image, ``x, y`` times ``factors``.

    Examples
    --------
    >>> m = np.zeros((4, 5), bool)
    >>> m[1:3, 1:4] = True
    >>> mask_polygons(m)[0][0].tolist()
    [[3.5, 3.0], [1.5, 3.0], [1.0, 2.5], [1.0, 1.5], [1.5, 1.0], [3.5, 1.0], [4.0, 1.5], [4.0, 2.5], [3.5, 3.0]]
    """
    from skimage.measure import approximate_polygon, find_contours, points_in_poly

    m = np.pad(np.asarray(mask, dtype=bool), 1)
    if not m.any():
        return []
    outer, holes = [], []
    for contour in find_contours(m.astype(np.float32), 0.5, fully_connected="high"):
        ring = contour[:, ::-1] - 0.5  # (row, col) of the padded array -> x, y pixel edges of the mask
        if len(ring) < 4:
            continue
        ring = approximate_polygon(ring, tolerance) if tolerance > 0 else ring
        (outer if _signed_area(ring) > 0 else holes).append(ring)
    outer.sort(key=lambda r: -_signed_area(r))
    polygons = [[r] for r in outer]
    for hole in holes:  # each hole into the smallest outer ring holding it
        holders = [i for i, r in enumerate(outer) if points_in_poly(hole[:1], r)[0]]
        if holders:
            polygons[min(holders, key=lambda i: _signed_area(outer[i]))].append(hole)
    f, o = np.asarray(factors, dtype=float), np.asarray(offset, dtype=float)
    return [[(r + o) * f for r in poly] for poly in polygons]


def cell_outlines(detections, labels: np.ndarray | None = None,
                  image_shape: tuple[int, int] | None = None) -> list[list[Ring]]:
    """The outline of each detected cell, in QuPath coordinates of the input image.

    Parameters
    ----------
    detections : Detections
        Cells in input-image pixels; ``label`` is each one's instance in ``labels``.
    labels : (m, n) ndarray of int, optional
        The instance label image the detections came from, at any scale
        (``Result.labels``, at the model's).
    image_shape : (int, int), optional
        Rows and columns of the input image; required with ``labels`` (the
        scale between the two, per axis).

    Returns
    -------
    outlines : list of list of (k, 2) ndarray of float64
        One polygon (outer ring, then holes) per detection: the largest
        region of its instance, or, without ``labels`` or for a detection
        whose instance is absent (``label`` 0), a box of the detection's
        width and height centred on its centroid (so that QuPath's centroid
        is the detection's).

    Raises
    ------
    ValueError
        If ``labels`` is given without ``image_shape``, or is not 2-D.
    """
    n = len(detections)
    if labels is None:
        return [[_centred_box(detections, i)] for i in range(n)]
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D instance image, got shape {labels.shape}")
    if image_shape is None:
        raise ValueError("image_shape (the input image's rows, columns) is needed with labels")
    fx, fy = image_shape[1] / labels.shape[1], image_shape[0] / labels.shape[0]
    out = []
    for i in range(n):
        poly = _instance_outline(labels, detections, i, fx, fy)
        out.append(poly if poly else [_centred_box(detections, i)])
    return out


def _instance_outline(labels, det, i, fx, fy, pad: int = 2) -> list[Ring]:
    """The largest region of detection ``i``'s instance, traced in a crop around its box."""
    k = int(det.label[i])
    if k <= 0:
        return []
    r0 = max(int(np.floor(det.ymin[i] / fy)) - pad, 0)
    c0 = max(int(np.floor(det.xmin[i] / fx)) - pad, 0)
    r1 = min(int(np.ceil(det.ymax[i] / fy)) + pad, labels.shape[0])
    c1 = min(int(np.ceil(det.xmax[i] / fx)) + pad, labels.shape[1])
    polygons = mask_polygons(labels[r0:r1, c0:c1] == k, (fx, fy), (c0, r0))
    return polygons[0] if polygons else []


def _centred_box(det, i) -> Ring:
    w = max(float(det.xmax[i] - det.xmin[i]), 1.0) / 2
    h = max(float(det.ymax[i] - det.ymin[i]), 1.0) / 2
    cx, cy = float(det.x[i]) + 0.5, float(det.y[i]) + 0.5
    return np.array([[cx - w, cy - h], [cx + w, cy - h], [cx + w, cy + h], [cx - w, cy + h], [cx - w, cy - h]])


def _signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a ring (x, y); positive clockwise on screen (y down)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


# --------------------------------------------------------------------------- writing


def detections_to_geojson(
    detections,
    *,
    labels: np.ndarray | None = None,
    image_shape: tuple[int, int] | None = None,
    class_name: str = "cell",
    classes: Sequence[str] | None = None,
    class_probs: np.ndarray | None = None,
    prob_names: Sequence[str] = (),
    colours: dict[str, Sequence[int]] | None = None,
    pixel_size_um: float | None = None,
    hpf_box: Sequence[float] | None = None,
    hpf_count: int | None = None,
    tissue: Sequence[Sequence[np.ndarray]] | None = None,
    object_type: str = "detection",
    id_seed: str | None = None,
) -> dict:
    """Cells as a QuPath GeoJSON FeatureCollection.

    Parameters
    ----------
    detections : Detections
        The cells, in pixels of the input image (a slide's level 0).
    labels, image_shape
        The instance label image the detections came from and the input
        image's ``(rows, cols)``: outlines are traced from it (see
        :func:`cell_outlines`); without, each cell is a box.
    class_name : str
        The class of every cell, unless ``classes`` is given.
    classes : sequence of n str, optional
        Each cell's class (a multi-class helper's).
    class_probs : (n, k) array_like of float, optional
        Each cell's probability of each class of ``prob_names``, written as
        the measurements ``Probability: <class>``.
    prob_names : sequence of k str
    colours : dict, optional
        RGB of each class name; classes without one get the overlay's colours
        (:func:`eosdetect.core.palette.class_colours`, ``class_name`` the
        counted class, green).
    pixel_size_um : float, optional
        Micrometres per pixel: adds the measurement ``Area µm^2``.
    hpf_box : (xmin, ymin, xmax, ymax), optional
        The densest high-power field (``HpfSummary.peak_box``, input pixels,
        edges), written as a rectangle ``annotation`` named
        :data:`HPF_NAME`; ``hpf_count`` (its cells) as its ``Count``.
    hpf_count : int, optional
    tissue : sequence of polygons, optional
        The tissue region (:func:`mask_polygons` of a tissue mask), one
        ``annotation`` named :data:`TISSUE_NAME`.
    object_type : str
        ``"detection"`` (QuPath's objects of an algorithm) or ``"annotation"``
        (objects QuPath lets one edit).
    id_seed : str, optional
        Make the Features' UUIDs from this text and their order (UUID 5), so
        that the same cells give the same file; random (UUID 4) when None.

    Returns
    -------
    dict
        ``{"type": "FeatureCollection", "features": [...]}``: the cells in
        order, then the field, then the tissue. Keys and their order are
        those of QuPath's writer; coordinates have 2 decimals, whole numbers
        without a decimal point.

    Raises
    ------
    ValueError
        If ``classes``, ``class_probs`` or ``prob_names`` do not match the
        number of cells, a colour is not three integers 0..255,
        ``pixel_size_um`` is not positive, or ``hpf_box`` is not four finite
        numbers.

    Examples
    --------
    >>> from eosdetect.core.postprocess import Detections
    >>> det = Detections.from_points([[10, 20]], radius=3)
    >>> fc = detections_to_geojson(det, class_name="eosinophil", id_seed="a.png")
    >>> f = fc["features"][0]
    >>> f["geometry"]["coordinates"][0][:2], f["properties"]["classification"]
    ([[7.5, 17.5], [13.5, 17.5]], {'name': 'eosinophil', 'color': [0, 230, 64]})
    """
    n = len(detections)
    names = _cell_classes(n, class_name, classes)
    probs = _class_probs(n, class_probs, prob_names)
    palette = _palette(names, class_name, colours)
    if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive number, got {pixel_size_um!r}")
    ids = _ids(id_seed)
    outlines = cell_outlines(detections, labels, image_shape)
    features = []
    for i in range(n):
        measurements = _cell_measurements(detections, i, pixel_size_um, probs, prob_names)
        features.append(_feature(next(ids), outlines[i], object_type, classification=_class(names[i], palette),
                                 measurements=measurements))
    if hpf_box is not None:
        features.append(_feature(next(ids), [_box_ring(hpf_box)], "annotation", name=HPF_NAME,
                                 measurements=None if hpf_count is None else {"Count": float(hpf_count)}))
    if tissue:
        features.append(_feature(next(ids), list(tissue), "annotation", name=TISSUE_NAME, multi=True))
    return {"type": "FeatureCollection", "features": features}


def result_to_geojson(result, *, class_name: str, pixel_size_um: float | None = None, **options) -> dict:
    """The cells of a :class:`~eosdetect.models.model.Result` as a FeatureCollection.

    With a multi-class helper every candidate is written with its class
    (``Result.candidate_class``) and every class's probability, so the
    counted class (``class_name``) holds exactly the counted cells; otherwise
    the counted cells (``Result.detections``), of ``class_name``. Outlines
    come from ``Result.labels``. ``options`` go to :func:`detections_to_geojson`
    (``hpf_box``, ``hpf_count``, ``tissue``, ``colours``, ``id_seed`` ...).
    """
    if result.candidate_class is not None and result.class_names:
        cells = result.candidates
        classes = [result.class_names[int(k)] for k in result.candidate_class]
        options.setdefault("class_probs", result.class_probs)
        options.setdefault("prob_names", result.class_names)
    else:
        cells, classes = result.detections, None
    return detections_to_geojson(cells, labels=result.labels, image_shape=tuple(result.image_shape),
                                 class_name=class_name, classes=classes, pixel_size_um=pixel_size_um, **options)


def analysis_to_geojson(analysis, *, id_seed: str | None = None, **options) -> dict:
    """What ``<stem>.geojson`` holds for an image or a slide analysed by eosdetect.

    Parameters
    ----------
    analysis : ImageAnalysis or SlideAnalysis
        :func:`eosdetect.analysis.image.analyse` (cells outlined from the
        label image, with their classes for a multi-class helper) or
        :func:`eosdetect.analysis.slide.analyse_slide` (the counted cells of
        the slide as boxes in level-0 pixels, and its tissue region).
    id_seed : str, optional
        See :func:`detections_to_geojson` (the image's name makes re-runs
        byte-identical).
    **options
        Passed on to :func:`detections_to_geojson` (``colours``, ``object_type``).

    Returns
    -------
    dict
        The FeatureCollection, with the densest high-power field when the
        image has one (an image smaller than a field has none).
    """
    hpf = analysis.hpf
    if hpf is not None and hpf.peak_box is not None:
        options.setdefault("hpf_box", hpf.peak_box)
        options.setdefault("hpf_count", hpf.peak_count)
    class_name = analysis.config.class_name
    px = analysis.pixel_size_um
    result = getattr(analysis, "result", None)
    if result is not None:
        return result_to_geojson(result, class_name=class_name, pixel_size_um=px, id_seed=id_seed, **options)
    slide = analysis.slide
    if slide.tissue is not None and "tissue" not in options:
        from eosdetect.core.geometry import axis_factors

        options["tissue"] = mask_polygons(slide.tissue, axis_factors(slide.shape, slide.tissue.shape),
                                          tolerance=0.5)
    return detections_to_geojson(analysis.detections, class_name=class_name, pixel_size_um=px,
                                 id_seed=id_seed, **options)


def _cell_classes(n: int, class_name: str, classes) -> list[str]:
    if not isinstance(class_name, str) or not class_name:
        raise ValueError(f"class_name must be a non-empty string, got {class_name!r}")
    if classes is None:
        return [class_name] * n
    if isinstance(classes, str):
        raise ValueError("classes must be a sequence of names, one per cell, not a single string")
    names = [str(c) for c in classes]
    if len(names) != n:
        raise ValueError(f"classes has {len(names)} entries for {n} cells")
    return names


def _class_probs(n: int, class_probs, prob_names) -> np.ndarray | None:
    if class_probs is None:
        return None
    probs = np.asarray(class_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != n or probs.shape[1] != len(prob_names):
        raise ValueError(f"class_probs must have shape ({n}, {len(prob_names)}) (cells, prob_names), "
                         f"got {probs.shape}")
    return probs


def _palette(names: list[str], counted: str, colours) -> dict[str, list[int]]:
    from eosdetect.core.palette import class_colours

    wanted = list(dict.fromkeys([counted, *names]))
    palette = {k: list(v) for k, v in class_colours(wanted, counted).items()}
    for name, rgb in (colours or {}).items():
        try:
            values = [float(v) for v in rgb] if isinstance(rgb, (list, tuple, np.ndarray)) else []
        except (TypeError, ValueError):
            values = []
        if len(values) != 3 or not all(v.is_integer() and 0 <= v <= 255 for v in values):
            raise ValueError(f"colour of class {name!r} must be three integers 0..255 (r, g, b), got {rgb!r}")
        palette[name] = [int(v) for v in values]
    return palette


def _class(name: str, palette: dict) -> dict:
    """A classification as QuPath writes it: name, then colour."""
    return {"name": name, "color": palette[name]}


def _cell_measurements(det, i, pixel_size_um, probs, prob_names) -> dict:
    m = {"Score": round(float(det.score[i]), 6), "Area px^2": round(float(det.area[i]), 3)}
    if pixel_size_um is not None:
        m["Area µm^2"] = round(float(det.area[i]) * pixel_size_um**2, 3)
    if probs is not None:
        m.update({f"Probability: {c}": round(float(p), 6) for c, p in zip(prob_names, probs[i])})
    return {k: v for k, v in m.items() if math.isfinite(v)}  # QuPath's NaN is not JSON


def _box_ring(box) -> Ring:
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"a box must be (xmin, ymin, xmax, ymax), got {box!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"a box must hold finite numbers, got {box!r}")
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])


def _ids(seed: str | None):
    i = 0
    while True:
        yield str(uuid.uuid4() if seed is None else uuid.uuid5(_ID_NAMESPACE, f"{seed}\0{i}"))
        i += 1


def _feature(fid: str, rings, object_type: str, *, classification=None, name=None, measurements=None,
             multi: bool = False) -> dict:
    """A Feature with QuPath's keys in QuPath's order. ``rings``: one polygon (outer, holes), or with
    ``multi`` a list of polygons (a MultiPolygon when there are several)."""
    if multi:
        polygons = [[_coordinates(r) for r in poly] for poly in rings]
        geometry = ({"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1
                    else {"type": "MultiPolygon", "coordinates": polygons})
    else:
        geometry = {"type": "Polygon", "coordinates": [_coordinates(r) for r in rings]}
    properties: dict = {"objectType": object_type}
    if name is not None:
        properties["name"] = name
    if classification is not None:
        properties["classification"] = classification
    if measurements:
        properties["measurements"] = measurements
    return {"type": "Feature", "id": fid, "geometry": geometry, "properties": properties}


def _coordinates(ring) -> list[list]:
    """A closed ring as QuPath writes it: 2 decimals, whole numbers as integers."""
    r = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
    if len(r) and not np.array_equal(r[0], r[-1]):
        r = np.vstack([r, r[:1]])
    return [[_number(x), _number(y)] for x, y in r]


def _number(v: float):
    v = round(float(v), COORDINATE_DECIMALS)
    return int(v) if v.is_integer() else v


def geojson_text(obj) -> str:
    """``obj`` as JSON laid out as QuPath's pretty printer does: two-space indents, arrays
    of numbers (coordinates, colours) on one line, ``[x, y]``, and no newline at the end. QuPath's
    own exports come out of ``json.loads`` and this function byte for byte."""
    return _layout(obj, 0)


def _layout(obj, level: int) -> str:
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_layout(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        if all(not isinstance(v, (dict, list, tuple)) for v in obj):
            return "[" + ", ".join(_scalar(v) for v in obj) + "]"
        return "[\n" + ",\n".join(inner + _layout(v, level + 1) for v in obj) + f"\n{pad}]"
    return _scalar(obj)


def _scalar(v) -> str:
    if isinstance(v, (np.integer, np.floating)):
        v = v.item()
    return json.dumps(v, ensure_ascii=False, allow_nan=False)


def write_geojson(path: str | os.PathLike, collection: dict) -> Path:
    """Write a FeatureCollection (or any GeoJSON object) atomically, laid out as QuPath does.

    Returns
    -------
    Path
        The file written (its folder is created if needed).
    """
    return atomic_write_text(path, geojson_text(collection))


# --------------------------------------------------------------------------- reading


@dataclass
class QuPathObject:
    """One labelled point or outline read from a QuPath GeoJSON file.

    ``xy`` is its centre in eosdetect's pixels (pixel centres at integer
    values): the point itself, or the centroid of the outline's area.
    ``box`` is ``xmin, ymin, xmax, ymax`` (pixel edges, as
    :class:`~eosdetect.core.postprocess.Detections` boxes) of an outline,
    None for a point. ``rings`` is the outline in QuPath coordinates (pixel
    ``c`` spans ``[c, c + 1)``), outer ring first, then holes; ``nucleus``
    that of a cell's nucleus when the file has one. ``class_name`` is None
    for an unclassified object; a derived class reads ``"Tumor: Positive"``.
    """

    object_type: str
    class_name: str | None
    xy: np.ndarray
    box: np.ndarray | None = None
    rings: list[np.ndarray] | None = None
    is_ellipse: bool = False
    nucleus: list[np.ndarray] | None = None
    name: str | None = None
    id: str | None = None
    measurements: dict = field(default_factory=dict)

    @property
    def is_point(self) -> bool:
        return self.rings is None

    @property
    def is_rectangle(self) -> bool:
        """An outline that is an axis-aligned rectangle without holes (a box label)."""
        if self.rings is None or len(self.rings) != 1:
            return False
        r = _open(self.rings[0])
        if len(r) != 4:
            return False
        xs, ys = np.unique(r[:, 0]), np.unique(r[:, 1])
        return len(xs) == 2 and len(ys) == 2 and len(np.unique(r, axis=0)) == 4

    @property
    def is_box_like(self) -> bool:
        """A rectangle or an ellipse: what its box says, the outline adds nothing."""
        return self.is_ellipse or self.is_rectangle


def read_geojson(path: str | os.PathLike, *, use_nucleus: bool = False) -> list[QuPathObject]:
    """Read the points and outlines of a QuPath GeoJSON file.

    Parameters
    ----------
    path : str or path-like
        A ``.geojson`` (or ``.json``) file holding a FeatureCollection, a list
        of Features or one Feature.
    use_nucleus : bool
        Take a cell's nucleus (``nucleusGeometry``) as its outline, where it has one.

    Returns
    -------
    list of QuPathObject
        In file order; one per point of a ``Point``/``MultiPoint`` and per
        polygon of a ``Polygon``/``MultiPolygon`` (members of a
        ``GeometryCollection`` likewise), of the annotations, detections and
        cells (:data:`LABEL_OBJECT_TYPES`; a Feature without an object type is
        an annotation, as QuPath reads it). Lines and empty geometries are
        left out.

    Raises
    ------
    InputError
        ``path: problem`` in one line: a missing, empty, non-UTF-8 or non-JSON
        file, JSON that is not GeoJSON Features, or a Feature (its number in
        the file given) without a geometry, of an unknown geometry type, with
        malformed or non-finite coordinates, or with a classification that is
        neither a name nor ``{"name": ...}``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     p = pathlib.Path(folder) / "a.geojson"
    ...     _ = p.write_text('{"type": "Feature", "geometry": {"type": "MultiPoint", '
    ...                      '"coordinates": [[10.5, 4.5], [3, 2]]}, '
    ...                      '"properties": {"objectType": "annotation", "classification": {"name": "eos"}}}')
    ...     [(o.class_name, o.xy.tolist()) for o in read_geojson(p)]
    [('eos', [10.0, 4.0]), ('eos', [2.5, 1.5])]
    """
    path = Path(path)
    features = _features(path, _load(path))
    out: list[QuPathObject] = []
    skipped = 0
    for number, feature in enumerate(features, start=1):
        objects = _objects_of(path, number, feature, use_nucleus)
        if objects is None:
            skipped += 1
        else:
            out.extend(objects)
    if skipped:
        log.debug("%s: %d feature(s) of object types other than %s left out", path, skipped,
                  "/".join(LABEL_OBJECT_TYPES))
    return out


def object_classes(objects: Sequence[QuPathObject]) -> list[str]:
    """The class of each object, ``""`` for an unclassified one (as a point CSV's empty ``class``)."""
    return [o.class_name or "" for o in objects]


def objects_to_labels(objects: Sequence[QuPathObject], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise outlines into an instance label image.

    A pixel belongs to an outline when its centre lies inside it or on it
    (holes left out); outline ``i`` (0-based, points
    skipped in the numbering) gets label ``i + 1``, a later one winning
    where two overlap. An outline traced by :func:`mask_polygons` gives back
    the pixels it was traced from.

    Parameters
    ----------
    objects : sequence of QuPathObject
    shape : (int, int)
        ``(rows, cols)`` of the label image.

    Returns
    -------
    labels : (M, N) ndarray of int32

    Examples
    --------
    >>> m = np.zeros((4, 6), bool)
    >>> m[1:3, 1:5] = True
    >>> obj = QuPathObject("detection", None, np.zeros(2), rings=mask_polygons(m)[0])
    >>> np.array_equal(objects_to_labels([obj], m.shape) == 1, m)
    True
    """
    from skimage.draw import polygon as fill

    from eosdetect.annotations.convert import check_shape

    shape = check_shape(shape)
    labels = np.zeros(shape, dtype=np.int32)
    outlines = [o for o in objects if o.rings is not None]
    for i, o in enumerate(outlines, start=1):
        region = np.zeros(shape, dtype=bool)
        for k, ring in enumerate(o.rings):
            rr, cc = fill(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape)  # pixel centres inside the ring
            region[rr, cc] = k == 0
        labels[region] = i
    return labels


def _load(path: Path):
    if path.is_dir():
        raise InputError(path, "is a folder, not a GeoJSON file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as exc:
        raise InputError(path, f"not readable ({exc.strerror or exc})") from None
    if not data.strip():
        raise InputError(path, "empty file (expected a QuPath GeoJSON FeatureCollection)")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InputError(path, "not a text file in UTF-8 (expected QuPath GeoJSON)") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise InputError(path, "not usable JSON (nested too deeply)") from None


def _features(path: Path, doc) -> list:
    """The Features of a FeatureCollection, a list of Features or one Feature."""
    if isinstance(doc, list):
        features = doc
    elif isinstance(doc, dict) and isinstance(doc.get("features"), list):
        features = doc["features"]
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    elif isinstance(doc, dict) and doc.get("type") in _GEOMETRY_TYPES:
        raise InputError(path, f"a bare {doc['type']} geometry, not a GeoJSON Feature (QuPath writes Features)")
    else:
        found = (f"a JSON object of type {doc.get('type')!r}" if isinstance(doc, dict)
                 else f"a JSON {type(doc).__name__}")
        raise InputError(path, f"not GeoJSON Features ({found}; expected a FeatureCollection, a list of Features "
                               "or a Feature)")
    for number, feature in enumerate(features, start=1):
        if not isinstance(feature, dict):
            raise InputError(path, f"feature {number} is a JSON {type(feature).__name__}, not a Feature object")
    return features


def _objects_of(path: Path, number: int, feature: dict, use_nucleus: bool) -> list[QuPathObject] | None:
    """The objects of one Feature; None when it is of a type that is not a label."""
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise InputError(path, f"feature {number}: 'properties' is not a JSON object")
    object_type = _object_type(feature, props)
    if object_type not in LABEL_OBJECT_TYPES:
        return None
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict):
        raise InputError(path, f"feature {number}: no geometry")
    nucleus = feature.get("nucleusGeometry")
    where = f"feature {number}"
    nucleus_polygons = _polygons(path, f"{where} nucleusGeometry", nucleus) if isinstance(nucleus, dict) else []
    if use_nucleus and nucleus_polygons:
        geometry = nucleus
    common = dict(
        object_type=object_type,
        class_name=_class_name(path, number, props.get("classification", feature.get("classification"))),
        name=props["name"] if isinstance(props.get("name"), str) else None,
        id=str(feature["id"]) if feature.get("id") is not None else None,
        measurements=_measurements(props.get("measurements")),
    )
    ellipse = bool(geometry.get("isEllipse"))
    points = _points(path, where, geometry)
    outlines = _polygons(path, where, geometry)
    out = [QuPathObject(xy=p - 0.5, **common) for p in points]
    for rings in outlines:
        x0, y0 = rings[0].min(axis=0)
        x1, y1 = rings[0].max(axis=0)
        out.append(QuPathObject(xy=_centroid(rings) - 0.5, box=np.array([x0, y0, x1, y1]), rings=rings,
                                is_ellipse=ellipse and len(outlines) == 1,
                                nucleus=nucleus_polygons[0] if nucleus_polygons else None, **common))
    return out


def _object_type(feature: dict, props: dict) -> str:
    """QuPath's rule: ``objectType``, else the older ``object_type`` or ``type`` property, else a type in
    the Feature's ``id`` (v0.2), else an annotation."""
    for key in ("objectType", "object_type", "type"):
        if isinstance(props.get(key), str):
            return props[key]
    return _LEGACY_TYPES.get(feature.get("id"), "annotation") if isinstance(feature.get("id"), str) else "annotation"


def _class_name(path: Path, number: int, classification) -> str | None:
    """``{"name": ...}``, a derived class ``{"names": [...]}`` (joined ``a: b`` as QuPath names it), or
    a plain string (older files and other tools)."""
    if classification is None:
        return None
    if isinstance(classification, str):
        return classification or None
    if isinstance(classification, dict):
        name, names = classification.get("name"), classification.get("names")
        if isinstance(name, str):
            return name or None
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return ": ".join(names)
        if name is None and names is None:
            return None
    raise InputError(path, f"feature {number}: classification is neither a name nor {{\"name\": ...}} "
                           f"(found {json.dumps(classification)[:60]})")


def _measurements(value) -> dict:
    """Measurements as a name -> number dict (QuPath's object, or its list of name/value pairs before 0.4)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = [(m.get("name"), m.get("value")) for m in value if isinstance(m, dict)]
    else:
        return {}
    return {str(k): float(v) for k, v in items if isinstance(v, (int, float)) and not isinstance(v, bool)}


_GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                   "GeometryCollection")


def _members(path: Path, where: str, geometry: dict) -> list[dict]:
    """A geometry and, for a GeometryCollection, its members (flattened)."""
    kind = geometry.get("type")
    if kind not in _GEOMETRY_TYPES:
        raise InputError(path, f"{where}: unknown geometry type {kind!r}")
    if kind != "GeometryCollection":
        return [geometry]
    members = geometry.get("geometries")
    if not isinstance(members, list) or not all(isinstance(g, dict) for g in members):
        raise InputError(path, f"{where}: a GeometryCollection without a list of 'geometries'")
    return [m for g in members for m in _members(path, where, g)]


def _points(path: Path, where: str, geometry: dict) -> list[np.ndarray]:
    out = []
    for g in _members(path, where, geometry):
        if g["type"] == "Point":
            c = g.get("coordinates")
            if c is not None and c != []:
                out.append(_xy(path, where, "Point", [c])[0])
        elif g["type"] == "MultiPoint":
            out.extend(_xy(path, where, "MultiPoint", _list(path, where, g)))
    return out


def _polygons(path: Path, where: str, geometry: dict) -> list[list[np.ndarray]]:
    out = []
    for g in _members(path, where, geometry):
        if g["type"] == "Polygon":
            polys = [_list(path, where, g)]
        elif g["type"] == "MultiPolygon":
            polys = _list(path, where, g)
        else:
            continue
        for poly in polys:
            if not isinstance(poly, list):
                raise InputError(path, f"{where}: {g['type']} coordinates are not lists of rings")
            rings = [_ring(path, where, g["type"], r) for r in poly]
            rings = [r for r in rings if r is not None]
            if rings and abs(_signed_area(rings[0])) > 0:
                out.append(rings)
    return out


def _list(path: Path, where: str, g: dict) -> list:
    c = g.get("coordinates")
    if not isinstance(c, list):
        raise InputError(path, f"{where}: {g['type']} has no list of 'coordinates'")
    return c


def _ring(path: Path, where: str, kind: str, ring) -> np.ndarray | None:
    """A ring as a closed ``(k, 2)`` array; None for one with fewer than 3 distinct vertices."""
    if not isinstance(ring, list):
        raise InputError(path, f"{where}: {kind} coordinates are not lists of rings of [x, y]")
    r = _xy(path, where, kind, ring)
    if len(r) == 0:
        return None
    if not np.array_equal(r[0], r[-1]):
        r = np.vstack([r, r[:1]])
    return r if len(np.unique(r, axis=0)) >= 3 else None


def _xy(path: Path, where: str, kind: str, positions) -> np.ndarray:
    """``[[x, y(, z)], ...]`` as ``(k, 2)`` float64 (a third value, QuPath's z, dropped)."""
    if not isinstance(positions, list):
        raise InputError(path, f"{where}: {kind} coordinates are not a list of [x, y]")
    out = np.empty((len(positions), 2))
    for i, p in enumerate(positions):
        if (not isinstance(p, list) or len(p) < 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p[:2])):
            raise InputError(path, f"{where}: {kind} position {json.dumps(p)[:40]} is not [x, y] numbers")
        out[i] = p[0], p[1]
    if not np.isfinite(out).all():
        raise InputError(path, f"{where}: {kind} coordinates hold NaN or infinite values")
    return out


def _centroid(rings: list[np.ndarray]) -> np.ndarray:
    """Centroid of the area of a polygon with holes (QuPath coordinates)."""
    total, moment = 0.0, np.zeros(2)
    for k, ring in enumerate(rings):
        x, y = ring[:, 0], ring[:, 1]
        cross = x[:-1] * y[1:] - x[1:] * y[:-1]
        a = cross.sum() / 2
        if a == 0:
            continue
        c = np.array([((x[:-1] + x[1:]) * cross).sum(), ((y[:-1] + y[1:]) * cross).sum()]) / (6 * a)
        sign = 1.0 if k == 0 else -1.0  # holes are taken away whatever their winding
        total += sign * abs(a)
        moment += sign * abs(a) * c
    if total <= 0:
        return _open(rings[0]).mean(axis=0)
    return moment / total


def _open(ring: np.ndarray) -> np.ndarray:
    return ring[:-1] if len(ring) > 1 and np.array_equal(ring[0], ring[-1]) else ring
