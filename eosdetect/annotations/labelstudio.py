"""Label Studio: pre-labels to import, and its JSON export read back as labels.

Label Studio (``label-studio``, HumanSignal) imports tasks as a JSON list,
each naming its image in ``data`` and, for pre-labels, holding a model's
``predictions`` that the annotator corrects and submits (its guide "Import
pre-annotated data")::

    [{"data": {"image": "/data/local-files/?d=a.png"},
      "predictions": [{"model_version": "eosdetect", "score": 0.82,
        "result": [{"id": "r1", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
                    "original_width": 640, "original_height": 480, "image_rotation": 0,
                    "value": {"x": 4.98, "y": 12.82, "width": 3.52, "height": 4.91, "rotation": 0,
                              "rectanglelabels": ["eosinophil"]},
                    "score": 0.82}]}]}]

``from_name`` and ``to_name`` are the names of the labeling configuration's
``RectangleLabels`` and ``Image`` tags (:func:`labeling_config` writes that
configuration). ``x``, ``y`` (the top-left corner), ``width`` and
``height`` are percentages of the image's width and height, measured from
its top-left corner, so ``x = 100 * xmin / width`` for eosdetect's box edge
``xmin``; a point at percentages ``x, y`` is eosdetect's pixel position
``x * width / 100 - 0.5`` (pixel centres at integer values).

Writing (:func:`prediction_task`, :func:`detections_task`,
:func:`labelled_tasks`, :func:`write_tasks`): one task per image, its cells as
rectangles with their scores.

Reading (:func:`read_labelstudio`): Label Studio's JSON export (Export >
JSON), a list of tasks with their ``annotations``. Of each task the
annotation used is the one marked ground truth, else the one updated last;
cancelled (skipped) annotations are left out, and so are ``predictions``
(the model's, not the annotator's). Rectangles (``rectanglelabels``, or
``rectangle`` without a label), key points (``keypointlabels``,
``keypoint``) and polygons (``polygonlabels``, ``polygon``) are read; a
rectangle rotated in Label Studio (about its top-left corner, clockwise) is
read as its outline; other results (choices, text) are not objects and are
left out.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from eosdetect.annotations.shapes import (
    Shape,
    box_shape,
    file_name_of,
    name_below,
    point_shape,
    polygon_shape,
    read_json_file,
)
from eosdetect.errors import ConfigError, InputError
from eosdetect.io import write_json

log = logging.getLogger(__name__)

#: Names of the labeling configuration's tags (:func:`labeling_config`), as results refer to them.
FROM_NAME = "label"
TO_NAME = "image"
POINT_FROM_NAME = "point"
#: What Label Studio serves a file of its local storage under: the file's path below
#: ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` follows.
LOCAL_FILES_URL = "/data/local-files/?d="
#: Decimals of the percentages written (1e-6 % of a 100,000-pixel side is a thousandth of a pixel).
PERCENT_DECIMALS = 6
_RESULT_KINDS = {"rectanglelabels": "rectangle", "rectangle": "rectangle", "keypointlabels": "keypoint",
                 "keypoint": "keypoint", "polygonlabels": "polygon", "polygon": "polygon"}
_WHAT = "Label Studio's JSON export: a list of tasks with 'data' and 'annotations'"


# --------------------------------------------------------------------------- writing


def labeling_config(class_names: Sequence[str], *, points: bool = False) -> str:
    """The labeling configuration (Settings > Labeling Interface > Code) the tasks of this module fit.

    Parameters
    ----------
    class_names : sequence of str
        The labels offered, the first one (the counted class) green.
    points : bool
        Also offer key points of the same labels (``KeyPointLabels`` named
        :data:`POINT_FROM_NAME`), for labelling cells by a click.

    Returns
    -------
    str
        XML: an ``Image`` named :data:`TO_NAME` showing ``$image`` and a
        ``RectangleLabels`` named :data:`FROM_NAME`.

    Raises
    ------
    ValueError
        If there is no class name, or one is empty.

    Examples
    --------
    >>> print(labeling_config(["eosinophil"]))
    <View>
      <Image name="image" value="$image" zoom="true" zoomControl="true"/>
      <RectangleLabels name="label" toName="image">
        <Label value="eosinophil" background="#00E640"/>
      </RectangleLabels>
    </View>
    """
    from eosdetect.core.palette import class_colours

    names = list(dict.fromkeys(class_names)) if not isinstance(class_names, str) else [class_names]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"class_names must be non-empty strings, got {class_names!r}")
    colours = class_colours(names, names[0])
    labels = "".join(f"    <Label value={quoteattr(n)} background=\"#{_hex(colours[n])}\"/>\n"
                     for n in names)
    tags = [("RectangleLabels", FROM_NAME)] + ([("KeyPointLabels", POINT_FROM_NAME)] if points else [])
    body = "".join(f"  <{tag} name=\"{name}\" toName=\"{TO_NAME}\">\n{labels}  </{tag}>\n" for tag, name in tags)
    return f"<View>\n  <Image name=\"{TO_NAME}\" value=\"${TO_NAME}\" zoom=\"true\" zoomControl=\"true\"/>\n{body}</View>"


def _hex(rgb) -> str:
    return "".join(f"{int(v):02X}" for v in rgb)


def prediction_task(
    image: str,
    width: int,
    height: int,
    boxes,
    *,
    classes: str | Sequence[str] = "cell",
    scores=None,
    model_version: str = "eosdetect",
    id_prefix: str = "r",
) -> dict:
    """A Label Studio task for one image with boxes as a prediction (pre-labels).

    Parameters
    ----------
    image : str
        What Label Studio loads the image from (``data.image``): a URL, or
        :data:`LOCAL_FILES_URL` and the path of a file in its local storage.
    width, height : int
        The image's size in pixels.
    boxes : (n, 4) array_like of float
        ``xmin, ymin, xmax, ymax`` in pixel edges; clipped to the image,
        those then empty left out.
    classes : str or sequence of n str
        The label of every box, or of each.
    scores : (n,) array_like of float, optional
        Each box's confidence: written as the result's ``score``, and their
        mean as the prediction's (Label Studio sorts tasks by it).
    model_version : str
        Shown and filtered on in Label Studio.
    id_prefix : str
        Results are numbered ``<id_prefix>1``, ``<id_prefix>2`` ... (ids must
        differ within a task).

    Returns
    -------
    dict
        ``{"data": {"image": ...}, "predictions": [{"model_version", ["score",] "result"}]}``.

    Raises
    ------
    ValueError
        If the size is not two positive integers, ``boxes`` is not ``(n, 4)``
        finite, or ``classes`` or ``scores`` do not match it.

    Examples
    --------
    >>> t = prediction_task("/data/local-files/?d=a.png", 200, 100, [[10, 20, 30, 60]], classes="eosinophil",
    ...                     scores=[0.9])
    >>> r = t["predictions"][0]["result"][0]
    >>> r["value"], r["score"], t["predictions"][0]["score"]
    ({'x': 5, 'y': 20, 'width': 10, 'height': 40, 'rotation': 0, 'rectanglelabels': ['eosinophil']}, 0.9, 0.9)
    """
    w, h = _size(width, height)
    b = _boxes(boxes)
    names = _classes(classes, len(b))
    s = None if scores is None else np.asarray(scores, dtype=float).reshape(-1)
    if s is not None and len(s) != len(b):
        raise ValueError(f"scores has {len(s)} values for {len(b)} boxes")
    c = np.clip(b, 0, [w, h, w, h])
    keep = (c[:, 2] > c[:, 0]) & (c[:, 3] > c[:, 1])
    result = []
    for i in np.flatnonzero(keep):
        x0, y0, x1, y1 = c[i]
        r = {"id": f"{id_prefix}{len(result) + 1}", "from_name": FROM_NAME, "to_name": TO_NAME,
             "type": "rectanglelabels", "original_width": w, "original_height": h, "image_rotation": 0,
             "value": {"x": _pct(x0, w), "y": _pct(y0, h), "width": _pct(x1 - x0, w), "height": _pct(y1 - y0, h),
                       "rotation": 0, "rectanglelabels": [names[i]]}}
        if s is not None and math.isfinite(s[i]):
            r["score"] = round(float(s[i]), 6)
        result.append(r)
    prediction: dict = {"model_version": str(model_version)}
    kept = [r["score"] for r in result if "score" in r]
    if kept:
        prediction["score"] = round(float(np.mean(kept)), 6)
    prediction["result"] = result
    return {"data": {"image": str(image)}, "predictions": [prediction]}


def detections_task(detections, image: str, image_shape: tuple[int, int], *, class_name: str = "cell",
                    model_version: str = "eosdetect") -> dict:
    """:func:`prediction_task` of a model's detected cells (their boxes and scores).

    Parameters
    ----------
    detections : Detections
        In pixels of the image (``Result.detections``, or its candidates).
    image : str
        The task's ``data.image``.
    image_shape : (int, int)
        Rows and columns of the image.
    """
    boxes = np.stack([detections.xmin, detections.ymin, detections.xmax, detections.ymax], axis=1)
    return prediction_task(image, int(image_shape[1]), int(image_shape[0]), boxes, classes=class_name,
                           scores=detections.score, model_version=model_version)


def labelled_tasks(
    items: Sequence,
    *,
    class_name: str = "cell",
    cell_diameter_px: float | None = None,
    image_root: str | os.PathLike | None = None,
    url_prefix: str = LOCAL_FILES_URL,
    model_version: str = "eosdetect",
) -> list[dict]:
    """Labelled images as Label Studio tasks, their objects as pre-labels to check.

    Parameters
    ----------
    items : sequence of LabelledImage
        Boxes are written as they are; an instance (masks, polygons) as its
        pixel extent; a point, which has no size, as a square of
        ``cell_diameter_px`` centred on it. Regions to ignore (VOC's
        ``difficult`` boxes) are left out: Label Studio has no such flag.
    class_name : str
        The label of every object.
    cell_diameter_px : float, optional
        Required when an image is labelled with points only.
    image_root : str or path-like, optional
        Images are named by their path relative to this folder (their name
        alone when None or not below it) ...
    url_prefix : str
        ... after this prefix: by default :data:`LOCAL_FILES_URL`, what Label
        Studio serves its local storage under when
        ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` is ``image_root``; or the
        URL of a web folder holding the images. The path is URL-escaped.
    model_version : str

    Returns
    -------
    list of dict
        One task (:func:`prediction_task`) per item, in order.

    Raises
    ------
    ConfigError
        If points are to be written without ``cell_diameter_px`` (``option``
        ``"cell_diameter_px"``).
    """
    if cell_diameter_px is not None and not (isinstance(cell_diameter_px, (int, float, np.integer, np.floating))
                                             and not isinstance(cell_diameter_px, bool)
                                             and math.isfinite(cell_diameter_px) and cell_diameter_px > 0):
        raise ValueError(f"cell_diameter_px must be a positive number, got {cell_diameter_px!r}")
    root = Path(image_root).resolve() if image_root is not None else None
    tasks = []
    for t, item in enumerate(items, start=1):
        h, w = item.image.shape[:2]
        tasks.append(prediction_task(url_prefix + quote(name_below(item.image_path, root)), w, h,
                                     item_boxes(item, cell_diameter_px), classes=class_name,
                                     model_version=model_version, id_prefix=f"t{t}r"))
    return tasks


def item_boxes(item, cell_diameter_px: float | None = None) -> np.ndarray:
    """The objects of a :class:`~eosdetect.training.labelset.LabelledImage` as boxes ``(n, 4)`` (pixel
    edges), in the item's order: its boxes, its instances' pixel extents, or squares of
    ``cell_diameter_px`` centred on its points.

    Raises
    ------
    ConfigError
        For points without ``cell_diameter_px`` (``option`` ``"cell_diameter_px"``).
    """
    if item.boxes is not None:
        return np.asarray(item.boxes, dtype=float).reshape(-1, 4)
    if item.instances is not None:
        from scipy import ndimage as ndi

        found = ndi.find_objects(np.asarray(item.instances).astype(np.int64, copy=False))
        return np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in found if s is not None],
                        dtype=float).reshape(-1, 4)
    xy = np.asarray(item.points, dtype=float).reshape(-1, 2)
    if len(xy) and cell_diameter_px is None:
        raise ConfigError(f"image {item.name!r} labelled with points, which have no size: give the cell diameter "
                          "in pixels for their boxes", option="cell_diameter_px")
    r = 0.0 if cell_diameter_px is None else float(cell_diameter_px) / 2
    c = xy + 0.5  # pixel centres in edge coordinates
    return np.hstack([c - r, c + r])


def write_tasks(path: str | os.PathLike, tasks: list[dict]) -> Path:
    """Write tasks atomically as the JSON list Label Studio imports; returns the file."""
    return write_json(path, list(tasks))


def _size(width, height) -> tuple[int, int]:
    try:
        ok = all(int(v) == v and v > 0 and not isinstance(v, bool) for v in (width, height))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"width and height must be positive integers, got {width!r}, {height!r}")
    return int(width), int(height)


def _boxes(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=float)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim != 2 or b.shape[1] != 4 or not np.isfinite(b).all():
        raise ValueError(f"boxes must be (n, 4) finite xmin, ymin, xmax, ymax, got shape {b.shape}")
    return b


def _classes(classes, n: int) -> list[str]:
    if isinstance(classes, str):
        names = [classes] * n
    else:
        names = [str(c) for c in classes]
        if len(names) != n:
            raise ValueError(f"classes has {len(names)} entries for {n} boxes")
    if not all(names):
        raise ValueError("class names must be non-empty")
    return names


def _pct(v: float, size: int):
    p = round(100.0 * float(v) / size, PERCENT_DECIMALS)
    return int(p) if p.is_integer() else p


# --------------------------------------------------------------------------- reading


@dataclass
class LabelStudioRegion:
    """One rectangle, key point or polygon of an annotation, as Label Studio gives it.

    ``kind`` is ``"rectangle"``, ``"keypoint"`` or ``"polygon"``; ``label``
    the first of its labels (None without one); ``value`` its geometry in
    percent of the image (``x, y, width, height, rotation``; ``x, y``;
    ``points``); ``original_size`` the image's ``(width, height)`` in
    pixels when the result gives it.
    """

    kind: str
    label: str | None
    value: dict
    original_size: tuple[int, int] | None = None
    score: float | None = None

    def shape(self, width: int, height: int) -> Shape:
        """The region in pixels of an image of ``width`` x ``height``."""
        v, fx, fy = self.value, width / 100.0, height / 100.0
        common = dict(score=self.score)
        if self.kind == "keypoint":
            return point_shape([v["x"] * fx - 0.5, v["y"] * fy - 0.5], self.label, **common)
        if self.kind == "polygon":
            pts = np.asarray(v["points"], dtype=float) * [fx, fy]
            return polygon_shape([pts], self.label, **common)
        x0, y0, w, h = v["x"] * fx, v["y"] * fy, v["width"] * fx, v["height"] * fy
        angle = float(v.get("rotation") or 0.0) % 360.0
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=float)
        if angle:
            a = math.radians(angle)  # clockwise on the screen (y down), about the top-left corner
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            corners = corners @ rot.T
        corners += [x0, y0]
        if angle % 90 == 0:
            lo, hi = corners.min(axis=0), corners.max(axis=0)
            return box_shape([*lo, *hi], self.label, **common)
        return polygon_shape([corners], self.label, **common)


@dataclass
class LabelStudioTask:
    """One task of a Label Studio export.

    ``image`` is its ``data`` reference to the image (a URL or path) and
    ``file_name`` the file's name in it (an uploaded file's name still with
    Label Studio's prefix, see
    :func:`~eosdetect.annotations.shapes.without_upload_prefix`).
    ``annotated`` is False for a task nobody has labelled (no annotation, or
    only cancelled ones); ``regions`` are those of the annotation used.
    """

    id: int | str | None
    image: str
    file_name: str
    annotated: bool
    regions: list[LabelStudioRegion] = field(default_factory=list)

    @property
    def original_size(self) -> tuple[int, int] | None:
        """The image's ``(width, height)`` as the regions give it; None when none does."""
        return next((r.original_size for r in self.regions if r.original_size is not None), None)

    def shapes(self, width: int, height: int) -> list[Shape]:
        """The regions in pixels of the image, of ``width`` x ``height`` pixels."""
        return [r.shape(width, height) for r in self.regions]


def read_labelstudio(path: str | os.PathLike) -> list[LabelStudioTask]:
    """Read the tasks of a Label Studio JSON export with their annotated regions.

    Parameters
    ----------
    path : str or path-like
        The file of Label Studio's Export > JSON (a list of tasks); a single
        task (as its cloud storage writes one per file) is read too.

    Returns
    -------
    list of LabelStudioTask
        In file order.

    Raises
    ------
    InputError
        ``path: problem`` in one line: a missing, empty or non-JSON file,
        JSON that is not a list of tasks (a JSON-MIN or COCO export), a task
        (its number in the file given) without an image in ``data``, an
        annotation whose ``result`` is not a list, a region with missing,
        malformed or non-finite coordinates, sizes that disagree within a
        task, an image rotated in Label Studio, or brush masks (not read).

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> task = {"id": 3, "data": {"image": "/data/upload/1/8f3a2b1c-a.png"},
    ...         "annotations": [{"id": 9, "result": [{"type": "keypointlabels", "original_width": 200,
    ...                          "original_height": 100, "value": {"x": 25, "y": 50.5, "width": 0.5,
    ...                          "keypointlabels": ["eosinophil"]}}]}]}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     p = pathlib.Path(folder) / "export.json"
    ...     _ = p.write_text(json.dumps([task]))
    ...     t = read_labelstudio(p)[0]
    >>> t.file_name, [(s.kind, s.class_name, s.xy.tolist()) for s in t.shapes(200, 100)]
    ('8f3a2b1c-a.png', [('point', 'eosinophil', [49.5, 50.0])])
    """
    path = Path(path)
    doc = read_json_file(path, _WHAT)
    if isinstance(doc, dict) and "data" in doc:
        doc = [doc]
    if not isinstance(doc, list):
        if isinstance(doc, dict) and isinstance(doc.get("images"), list):
            raise InputError(path, "a COCO dataset, not a Label Studio JSON export", option="label_format")
        raise InputError(path, f"not {_WHAT} (found a JSON {type(doc).__name__})")
    tasks = []
    for number, task in enumerate(doc, start=1):
        if not isinstance(task, dict):
            raise InputError(path, f"task {number} is a JSON {type(task).__name__}, not an object")
        tasks.append(_task(path, number, task))
    return tasks


def _task(path: Path, number: int, task: dict) -> LabelStudioTask:
    where = f"task {number}" + (f" (id {task['id']})" if isinstance(task.get("id"), (int, str)) else "")
    data = task.get("data")
    if not isinstance(data, dict):
        if "image" in task and "annotations" not in task:
            raise InputError(path, f"{where}: Label Studio's JSON-MIN export; export as JSON (the full format)")
        raise InputError(path, f"{where}: no 'data' object naming its image")
    image = _image_ref(path, where, data)
    annotations = task.get("annotations", task.get("completions", []))  # "completions" before Label Studio 1.0
    if not isinstance(annotations, list):
        raise InputError(path, f"{where}: 'annotations' is not a list")
    used = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if len(used) > 1:
        truth = [a for a in used if a.get("ground_truth")]
        used = truth or sorted(used, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
        log.debug("%s: %s has %d annotations; the %s is used", path, where, len(annotations),
                  "ground truth" if truth else "last updated")
    regions = _regions(path, where, used[-1]) if used else []
    sizes = {r.original_size for r in regions if r.original_size is not None}
    if len(sizes) > 1:
        found = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
        raise InputError(path, f"{where}: its regions give different image sizes ({found})")
    return LabelStudioTask(task.get("id"), image, file_name_of(image), bool(used), regions)


def _image_ref(path: Path, where: str, data: dict) -> str:
    """``data.image``, or the one text of ``data`` (a configuration naming its image otherwise)."""
    if isinstance(data.get("image"), str) and data["image"].strip():
        return data["image"]
    texts = [v for v in data.values() if isinstance(v, str) and v.strip()]
    if len(texts) == 1:
        return texts[0]
    raise InputError(path, f"{where}: 'data' names no image (keys: {', '.join(map(str, data)) or 'none'})")


def _regions(path: Path, where: str, annotation: dict) -> list[LabelStudioRegion]:
    result = annotation.get("result", [])
    if not isinstance(result, list):
        raise InputError(path, f"{where}: an annotation's 'result' is not a list")
    out = []
    for k, r in enumerate(result, start=1):
        if not isinstance(r, dict):
            raise InputError(path, f"{where}, result {k}: a JSON {type(r).__name__}, not an object")
        kind = r.get("type")
        if kind in ("brushlabels", "brush"):
            raise InputError(path, f"{where}, result {k}: brush masks are not read; export them as PNG masks "
                                   "(Export > Brush labels to PNG) and read those as masks", option="label_format")
        if kind not in _RESULT_KINDS:
            continue
        out.append(_region(path, f"{where}, result {k}", r, kind))
    return out


def _region(path: Path, where: str, r: dict, kind: str) -> LabelStudioRegion:
    value = r.get("value")
    if not isinstance(value, dict):
        raise InputError(path, f"{where}: {kind} without a 'value' object")
    if _number(r.get("image_rotation"), 0.0) % 360:
        raise InputError(path, f"{where}: the image was rotated in Label Studio (image_rotation "
                               f"{r['image_rotation']}), which is not read")
    shape = _RESULT_KINDS[kind]
    keys = {"rectangle": ("x", "y", "width", "height"), "keypoint": ("x", "y"), "polygon": ()}[shape]
    for key in keys:
        v = value.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(path, f"{where}: {kind} has no finite number {key!r}")
    if shape == "rectangle":
        if value["width"] < 0 or value["height"] < 0:
            raise InputError(path, f"{where}: {kind} has a negative width or height")
        if not math.isfinite(_number(value.get("rotation"), 0.0)):
            raise InputError(path, f"{where}: {kind} has a rotation that is not a finite number")
    if shape == "polygon":
        pts = value.get("points")
        if (not isinstance(pts, list) or len(pts) < 3
                or not all(isinstance(p, list) and len(p) >= 2 and all(_finite_number(c) for c in p[:2]) for p in pts)):
            raise InputError(path, f"{where}: {kind} has no list of 3 or more finite [x, y] points")
        value = {**value, "points": [p[:2] for p in pts]}
    labels = value.get(kind) if kind.endswith("labels") else None
    if labels is not None and not (isinstance(labels, list) and all(isinstance(n, str) for n in labels)):
        raise InputError(path, f"{where}: '{kind}' is not a list of label names")
    size = None
    ow, oh = r.get("original_width"), r.get("original_height")
    if ow is not None or oh is not None:
        if not all(_finite_number(v) and float(v).is_integer() and v > 0 for v in (ow, oh)):
            raise InputError(path, f"{where}: original_width and original_height {ow!r}, {oh!r} are not positive "
                                   "whole numbers")
        size = (int(ow), int(oh))
    score = r.get("score")
    return LabelStudioRegion(shape, labels[0] if labels else None, value, size,
                             float(score) if _finite_number(score) else None)


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(v, default: float) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default
