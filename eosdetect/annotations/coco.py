"""COCO object-detection JSON: labelled cells out, and read back as labels.

One file holds every image (the format of ``instances_*.json`` in the COCO
data set, which ``pycocotools``, Detectron2, MMDetection, CVAT and Label
Studio read and write)::

    {"info": {...}, "licenses": [],
     "images": [{"id": 1, "file_name": "a.png", "width": 640, "height": 480}],
     "categories": [{"id": 1, "name": "eosinophil", "supercategory": "cell"}],
     "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [x, y, w, h], "area": 113.0,
                      "iscrowd": 0, "segmentation": [[x1, y1, x2, y2, ...]]}]}

Coordinates are pixels of the image with COCO's origin: ``bbox`` and
``segmentation`` are in pixel-edge coordinates (the box ``[0, 0, 2, 2]``
covers pixels 0 and 1 of each axis, as eosdetect's boxes), keypoints are
pixel positions (pixel centres at integer values, as eosdetect's points).

Writing (:func:`coco_dataset`, :func:`write_coco`): each object of a
:class:`~eosdetect.training.labelset.LabelledImage` is one annotation of the
class. An instance (masks, polygons) is written with its outline as
polygons, traced along its pixels' edges (one polygon per connected part;
holes are filled, COCO's polygons have none), its pixel extent as ``bbox``
and its pixel count as ``area``; ``pycocotools``' ``annToMask`` gives its
pixels back. A box is a ``bbox`` without segmentation. A point, which has no
size, is a square ``bbox`` of the cell diameter centred on it (clipped to the
image), without segmentation, and the point itself as COCO's one keypoint
``[x, y, 2]`` (its category lists the keypoint ``"centre"``), so that it
reads back as the point. A region to be ignored (a VOC box marked
``difficult``) is a crowd annotation (``iscrowd`` 1): its box as a
run-length mask, as COCO writes crowds.

Reading (:func:`read_coco`): every image with its annotations as
:class:`~eosdetect.annotations.shapes.Shape` objects: an annotation with a
segmentation (polygons, or a run-length mask compressed or not) is an
outline, one with a single visible keypoint and no segmentation a point,
any other a box; crowds are regions to ignore.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eosdetect.annotations.shapes import (
    Shape,
    box_shape,
    name_below,
    point_shape,
    polygon_shape,
    read_json_file,
    rle_shape,
)
from eosdetect.errors import ConfigError, InputError
from eosdetect.io import write_json

log = logging.getLogger(__name__)

#: Decimals of the coordinates written (whole numbers are written without a decimal point).
COORDINATE_DECIMALS = 3
#: The one keypoint of a point label, as its category names it.
KEYPOINT_NAME = "centre"
_WHAT = "a COCO dataset: an object with 'images', 'annotations' and 'categories'"


# --------------------------------------------------------------------------- writing


def coco_dataset(
    items: Sequence,
    *,
    class_name: str = "cell",
    cell_diameter_px: float | None = None,
    image_root: str | os.PathLike | None = None,
    scores: Mapping[str, Sequence[float]] | None = None,
) -> dict:
    """The objects of labelled images as a COCO dataset.

    Parameters
    ----------
    items : sequence of LabelledImage
        As :func:`~eosdetect.training.labelset.load_labelled` reads them:
        each one's ``instances`` (outlines), else its ``boxes``, else its
        ``points``; and its ``ignore_boxes`` (crowds).
    class_name : str
        The one category of every object.
    cell_diameter_px : float, optional
        Side of the box written around each point label, in pixels of the
        image; required when some image is labelled with points only.
    image_root : str or path-like, optional
        ``file_name`` is each image's path relative to this folder (with
        ``/``); its name alone when None or when the image is not below it.
    scores : mapping of str to sequence of float, optional
        Per image name (``LabelledImage.name``), a confidence for each of its
        objects, in their order, written as each annotation's ``score`` (a
        field COCO's results files have, ignored by readers of datasets).

    Returns
    -------
    dict
        ``info``, ``licenses``, ``images`` (ids from 1 in the order of
        ``items``), ``categories`` (one, id 1) and ``annotations`` (ids from
        1), keys in COCO's order. Coordinates have at most
        :data:`COORDINATE_DECIMALS` decimals.

    Raises
    ------
    ValueError
        If ``class_name`` is empty, ``cell_diameter_px`` is not a positive
        number, or a list of ``scores`` does not match its image's objects.
    ConfigError
        If points are to be written and ``cell_diameter_px`` is not given
        (``option`` ``"cell_diameter_px"``).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from pathlib import Path
    >>> item = SimpleNamespace(name="a", image_path=Path("a.png"), image=np.zeros((40, 60, 3), np.uint8),
    ...                        points=np.array([[10.0, 20.0]]), boxes=None, instances=None,
    ...                        ignore_boxes=np.zeros((0, 4)))
    >>> ds = coco_dataset([item], class_name="eosinophil", cell_diameter_px=8)
    >>> ds["images"], ds["annotations"][0]["bbox"], ds["annotations"][0]["keypoints"]
    ([{'id': 1, 'file_name': 'a.png', 'width': 60, 'height': 40}], [6.5, 16.5, 8, 8], [10, 20, 2])
    """
    if not isinstance(class_name, str) or not class_name:
        raise ValueError(f"class_name must be a non-empty string, got {class_name!r}")
    if cell_diameter_px is not None and (isinstance(cell_diameter_px, bool) or not _positive(cell_diameter_px)):
        raise ValueError(f"cell_diameter_px must be a positive number, got {cell_diameter_px!r}")
    needs_size = [it.name for it in items if it.instances is None and it.boxes is None and len(it.points)]
    if needs_size and cell_diameter_px is None:
        more = f" and {len(needs_size) - 1} more" if len(needs_size) > 1 else ""
        raise ConfigError(f"image {needs_size[0]!r}{more} labelled with points, which have no size: give the cell "
                          "diameter in pixels for their boxes", option="cell_diameter_px")
    root = Path(image_root).resolve() if image_root is not None else None
    images, annotations = [], []
    any_points = False
    for image_id, item in enumerate(items, start=1):
        h, w = item.image.shape[:2]
        images.append({"id": image_id, "file_name": name_below(item.image_path, root), "width": int(w),
                       "height": int(h)})
        objects = _objects(item, cell_diameter_px)
        any_points |= any("keypoints" in o for o in objects)
        item_scores = None if scores is None or item.name not in scores else _scores(item, scores[item.name], objects)
        for k, obj in enumerate(objects):
            if item_scores is not None:
                obj["score"] = round(float(item_scores[k]), 6)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, **obj})
        for box in np.asarray(item.ignore_boxes, dtype=float).reshape(-1, 4):
            crowd = _crowd(box, w, h)
            if crowd is not None:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, **crowd})
    category = {"id": 1, "name": class_name, "supercategory": "cell"}
    if any_points:
        category.update(keypoints=[KEYPOINT_NAME], skeleton=[])
    from eosdetect import __version__

    return {
        "info": {"description": f"{class_name} labels", "version": "1.0", "contributor": f"eosdetect {__version__}"},
        "licenses": [],
        "images": images,
        "categories": [category],
        "annotations": annotations,
    }


def write_coco(path: str | os.PathLike, dataset: dict) -> Path:
    """Write a COCO dataset (:func:`coco_dataset`) atomically, as indented JSON; returns the file."""
    return write_json(path, dataset)


def _positive(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v) and v > 0


def _scores(item, values, objects) -> np.ndarray:
    s = np.asarray(values, dtype=float).reshape(-1)
    if len(s) != len(objects):
        raise ValueError(f"scores of {item.name!r} has {len(s)} values for {len(objects)} objects")
    return s


def _objects(item, diameter) -> list[dict]:
    """The annotation fields (no ids) of each object of an item, in the item's order."""
    h, w = item.image.shape[:2]
    if item.instances is not None:
        return _instance_objects(np.asarray(item.instances))
    if item.boxes is not None:
        out = []
        for x0, y0, x1, y1 in np.asarray(item.boxes, dtype=float).reshape(-1, 4):
            out.append({"bbox": _numbers([x0, y0, x1 - x0, y1 - y0]), "area": _number((x1 - x0) * (y1 - y0)),
                        "iscrowd": 0})
        return out
    out = []
    r = 0.0 if diameter is None else float(diameter) / 2
    for x, y in np.asarray(item.points, dtype=float).reshape(-1, 2):
        cx, cy = x + 0.5, y + 0.5  # the point's pixel centre, in edge coordinates
        x0, y0 = min(max(cx - r, 0.0), w), min(max(cy - r, 0.0), h)
        x1, y1 = min(max(cx + r, 0.0), w), min(max(cy + r, 0.0), h)
        out.append({"bbox": _numbers([x0, y0, x1 - x0, y1 - y0]), "area": _number((x1 - x0) * (y1 - y0)),
                    "iscrowd": 0, "keypoints": [*_numbers([x, y]), 2], "num_keypoints": 1})
    return out


def _instance_objects(labels: np.ndarray) -> list[dict]:
    """One annotation per instance present in a label image, in the order of their labels (that of
    the item's points): outline, pixel extent, pixel count."""
    from scipy import ndimage as ndi

    from eosdetect.annotations.geojson import mask_polygons

    out = []
    for k, where in enumerate(ndi.find_objects(labels.astype(np.int64, copy=False)), start=1):
        if where is None:
            continue
        rs, cs = where
        region = labels[where] == k
        polygons = mask_polygons(region, offset=(cs.start, rs.start))
        segmentation = [_numbers(poly[0][:-1].ravel()) for poly in polygons if len(poly[0]) >= 4]
        out.append({
            "segmentation": segmentation,
            "area": int(region.sum()),
            "iscrowd": 0,
            "bbox": [cs.start, rs.start, cs.stop - cs.start, rs.stop - rs.start],
        })
    return out


def _crowd(box, w: int, h: int) -> dict | None:
    """A region to ignore as a crowd annotation: the pixels whose centre lies in ``box``, as COCO's
    uncompressed run-length mask; None for a box holding no pixel centre."""
    x0, y0, x1, y1 = box
    c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.ceil(x1 - 0.5)), w)
    r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.ceil(y1 - 0.5)), h)
    if c1 <= c0 or r1 <= r0:
        return None
    counts: list[int] = []  # column-major runs, starting with background
    pos = 0
    for c in range(c0, c1):
        start = c * h + r0
        if counts and start == pos:  # the column's run continues the last one (full columns)
            counts[-1] += r1 - r0
        else:
            counts += [start - pos, r1 - r0]
        pos = start + r1 - r0
    if pos < w * h:
        counts.append(w * h - pos)
    return {"segmentation": {"counts": counts, "size": [int(h), int(w)]}, "area": (c1 - c0) * (r1 - r0),
            "iscrowd": 1, "bbox": _numbers([x0, y0, x1 - x0, y1 - y0])}


def _number(v):
    v = round(float(v), COORDINATE_DECIMALS)
    return int(v) if v.is_integer() else v


def _numbers(values) -> list:
    return [_number(v) for v in values]


# --------------------------------------------------------------------------- reading


@dataclass
class CocoImage:
    """One image of a COCO file and its annotations.

    ``file_name`` as the file gives it (a path relative to the dataset's
    image folder, possibly with folders or a URL); ``width`` and ``height``
    None when the file leaves them out. ``shapes`` are the annotations in
    file order, each with its category's name as ``class_name``.
    """

    id: int | str
    file_name: str
    width: int | None
    height: int | None
    shapes: list[Shape] = field(default_factory=list)


def read_coco(path: str | os.PathLike) -> list[CocoImage]:
    """Read the images and annotations of a COCO object-detection file.

    Parameters
    ----------
    path : str or path-like
        A COCO JSON file (``instances_*.json`` as COCO, Detectron2, CVAT or
        Label Studio write it).

    Returns
    -------
    list of CocoImage
        In the order of ``images``. An annotation becomes an outline when it
        has a segmentation (polygons with 3 or more vertices, or a run-length
        mask of the image's size), a point when it has exactly one visible
        keypoint and no segmentation (eosdetect's points), else a box
        (``bbox``); ``iscrowd`` 1 makes it a region to ignore.

    Raises
    ------
    InputError
        ``path: problem`` in one line: a missing, empty or non-JSON file,
        JSON that is not a COCO dataset (a results list, a Label Studio
        export), images without ``id`` or ``file_name`` or with a repeated
        id, categories without ``id`` or ``name``, or an annotation (its
        number in the file given) of an unknown image or category, without
        a ``bbox``, segmentation or keypoint, or with malformed or
        non-finite coordinates.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> doc = {"images": [{"id": 7, "file_name": "smears/a.jpg", "width": 60, "height": 40}],
    ...        "categories": [{"id": 3, "name": "eosinophil"}],
    ...        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [5, 5, 11, 11],
    ...                         "area": 121, "iscrowd": 0}]}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     p = pathlib.Path(folder) / "instances.json"
    ...     _ = p.write_text(json.dumps(doc))
    ...     image = read_coco(p)[0]
    >>> image.file_name, [(s.kind, s.class_name, s.box.tolist()) for s in image.shapes]
    ('smears/a.jpg', [('box', 'eosinophil', [5.0, 5.0, 16.0, 16.0])])
    """
    path = Path(path)
    doc = read_json_file(path, _WHAT)
    if not isinstance(doc, dict):
        raise InputError(path, f"not a COCO dataset ({_kind_of(doc)})", option=_option_of(doc))
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            found = "missing" if key not in doc else f"a JSON {type(doc[key]).__name__}"
            raise InputError(path, f"not a COCO dataset: '{key}' is {found}, not a list")
    categories = _categories(path, doc.get("categories", []))
    images: dict = {}
    for number, im in enumerate(doc["images"], start=1):
        image = _image(path, number, im)
        if image.id in images:
            raise InputError(path, f"image {number}: id {image.id!r} is also that of {images[image.id].file_name!r}")
        images[image.id] = image
    for number, ann in enumerate(doc["annotations"], start=1):
        if not isinstance(ann, dict):
            raise InputError(path, f"annotation {number} is a JSON {type(ann).__name__}, not an object")
        image = images.get(_id(ann.get("image_id")))
        if image is None:
            raise InputError(path, f"annotation {number}: image_id {ann.get('image_id')!r} is no image's id")
        cid = _id(ann.get("category_id"))
        if cid not in categories:
            raise InputError(path, f"annotation {number}: category_id {ann.get('category_id')!r} is no category's id")
        image.shapes.append(_shape(path, f"annotation {number}", ann, categories[cid], image))
    return list(images.values())


def _kind_of(doc) -> str:
    if isinstance(doc, list) and doc and all(isinstance(a, dict) for a in doc):
        if all("image_id" in a for a in doc):
            return "a COCO results list of detections, which names no image files"
        if any("data" in a and ("annotations" in a or "predictions" in a) for a in doc):
            return "a Label Studio export, a list of tasks"
    return f"a JSON {type(doc).__name__}; expected {_WHAT}"


def _option_of(doc) -> str | None:
    """``label_format`` for a file of another label format (a Label Studio export)."""
    if isinstance(doc, list) and any(isinstance(a, dict) and "data" in a for a in doc):
        return "label_format"
    return None


def _id(value):
    """An id as a dict key: whole numbers written as floats (``1.0``) are the integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _categories(path: Path, categories) -> dict:
    if not isinstance(categories, list):
        raise InputError(path, f"not a COCO dataset: 'categories' is a JSON {type(categories).__name__}, not a list")
    out = {}
    for number, c in enumerate(categories, start=1):
        if not isinstance(c, dict) or _id(c.get("id")) is None or not isinstance(c.get("name"), str):
            raise InputError(path, f"category {number} lacks an 'id' or a 'name'")
        if _id(c["id"]) in out:
            raise InputError(path, f"category {number}: id {c['id']!r} is also that of {out[_id(c['id'])]!r}")
        out[_id(c["id"])] = c["name"]
    return out


def _image(path: Path, number: int, im) -> CocoImage:
    if not isinstance(im, dict):
        raise InputError(path, f"image {number} is a JSON {type(im).__name__}, not an object")
    iid, name = _id(im.get("id")), im.get("file_name")
    if iid is None or not isinstance(name, str) or not name.strip():
        raise InputError(path, f"image {number} lacks an 'id' or a 'file_name'")
    size = []
    for key in ("width", "height"):
        v = im.get(key)
        if v is None:
            size.append(None)
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer() or v <= 0:
            raise InputError(path, f"image {number} ({name}): {key} {v!r} is not a positive whole number")
        else:
            size.append(int(v))
    return CocoImage(iid, name, size[0], size[1])


def _shape(path: Path, where: str, ann: dict, category: str, image: CocoImage) -> Shape:
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1, True, False):
        raise InputError(path, f"{where}: iscrowd is {crowd!r}, not 0 or 1")
    score = ann.get("score")
    common = dict(ignore=bool(crowd),
                  score=float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None)
    box = _bbox(path, where, ann["bbox"]) if ann.get("bbox") is not None else None
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, dict):
        counts, h, w = _rle(path, where, segmentation, image)
        return rle_shape(counts, h, w, category, box=box, **common)
    polygons = _polygons(path, where, segmentation) if segmentation not in (None, []) else []
    if polygons:
        return polygon_shape(polygons, category, box=box, **common)
    point = _keypoint(path, where, ann.get("keypoints"))
    if point is not None:
        return point_shape(point, category, box=box, **common)
    if box is None:
        raise InputError(path, f"{where}: has no bbox, segmentation or keypoint")
    return box_shape(box, category, **common)


def _finite(path: Path, where: str, what: str, values) -> np.ndarray:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise InputError(path, f"{where}: {what} is not a list of numbers")
    out = np.asarray(values, dtype=np.float64)
    if not np.isfinite(out).all():
        raise InputError(path, f"{where}: {what} holds NaN or infinite values")
    return out


def _bbox(path: Path, where: str, bbox) -> np.ndarray:
    b = _finite(path, where, "bbox", bbox)
    if len(b) != 4 or b[2] < 0 or b[3] < 0:
        raise InputError(path, f"{where}: bbox {bbox!r} is not [x, y, width, height] with width, height >= 0")
    return np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]])


def _polygons(path: Path, where: str, segmentation) -> list[np.ndarray]:
    """COCO polygons (flat ``[x1, y1, x2, y2, ...]`` lists); those under 3 vertices are left out, as
    ``pycocotools`` draws nothing of them."""
    if not isinstance(segmentation, list):
        raise InputError(path, f"{where}: segmentation is neither polygons nor a run-length mask")
    if segmentation and all(isinstance(v, (int, float)) for v in segmentation):
        segmentation = [segmentation]  # one polygon not wrapped in a list (some writers do this)
    out = []
    for part in segmentation:
        p = _finite(path, where, "a segmentation polygon", part)
        if len(p) % 2:
            raise InputError(path, f"{where}: a segmentation polygon has an odd number of coordinates ({len(p)})")
        if len(p) >= 6:
            out.append(p.reshape(-1, 2))
    return out


def _rle(path: Path, where: str, seg: dict, image: CocoImage) -> tuple[list[int], int, int]:
    size, counts = seg.get("size"), seg.get("counts")
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise InputError(path, f"{where}: run-length mask without a 'size' [height, width]")
    h, w = size
    if image.height is not None and image.width is not None and (h, w) != (image.height, image.width):
        raise InputError(path, f"{where}: run-length mask is {w}x{h} but its image is {image.width}x{image.height}")
    if isinstance(counts, str):
        try:
            counts = rle_counts_from_string(counts)
        except ValueError:
            raise InputError(path, f"{where}: compressed run-length counts are malformed") from None
    elif not isinstance(counts, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        raise InputError(path, f"{where}: run-length 'counts' is neither a list of whole numbers nor a string")
    if any(v < 0 for v in counts) or sum(counts) > h * w:
        raise InputError(path, f"{where}: run-length counts are negative or cover more than {w}x{h} pixels")
    return counts, h, w


def _keypoint(path: Path, where: str, keypoints) -> np.ndarray | None:
    """The one visible keypoint ``(x, y)`` of an annotation; None when it has none or several."""
    if keypoints in (None, []):
        return None
    k = _finite(path, where, "keypoints", keypoints)
    if len(k) % 3:
        raise InputError(path, f"{where}: keypoints is not a list of x, y, visibility triplets")
    k = k.reshape(-1, 3)
    visible = k[k[:, 2] > 0]
    return visible[0, :2] if len(visible) == 1 else None


def rle_counts_from_string(text: str) -> list[int]:
    """The run lengths of a compressed COCO run-length mask (``pycocotools``' ``rleFrString``).

    >>> rle_counts_from_string("5220003")  # pycocotools.mask.encode of a 3 x 2 block in a 5 x 4 image
    [5, 2, 2, 2, 2, 2, 5]

    Raises
    ------
    ValueError
        If the text ends in the middle of a number.
    """
    counts: list[int] = []
    p, n = 0, len(text)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError("compressed counts end in the middle of a number")
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts
