"""Images paired with their labels, in whatever form a lab keeps them.

``eosdetect train`` and ``eosdetect evaluate`` read a folder of images and a
folder of labels in one of these formats (``--label-format``):

``voc``
    LabelImg / Pascal VOC XML, ``<stem>.xml``: boxes of the class chosen with
    ``--class``. Boxes marked ``difficult`` are neither required nor
    penalised (ignored by the loss in training, and a detection inside one
    is not a false positive). Boxes reaching outside the image are clipped;
    empty ones are skipped; both are counted in the report.
``points``
    CSV with a header ``x,y[,class]``, ``<stem>.csv`` per image, or one CSV
    file for all images with an ``image`` (or ``filename``) column.
``mask``
    Binary masks or instance label images (PNG/TIFF) named ``<stem>.png``,
    ``<stem>_mask.png``, ``<stem>_label(s).png`` or ``<stem>_instances.png``.
    A binary mask's connected components are the objects. Masks may be kept
    beside the images (``--labels`` the images folder) when named with one of
    these endings: ``a_mask.png`` is then the label of ``a.png``, not an image.
``monuseg``
    MoNuSeg / Aperture XML polygons, ``<stem>.xml``.
``painted``
    The original EOS-Detection convention: a copy of each image with a green
    dot painted on every cell, ``<stem>.<any image suffix>`` in the labels
    folder; the dots are read back as points.
``geojson``
    QuPath GeoJSON, ``<stem>.geojson`` or ``<stem>.json`` (QuPath's export of
    ``a.ome.tif`` may also be named ``a.geojson`` or ``a.ome.tif.geojson``):
    the points, polygons, rectangles and ellipses of the annotations,
    detections and cells of the class chosen with ``--class`` (unclassified
    objects are a class of their own, ``""``, unless no object of any file
    has a class: then all are of the class chosen). Points are points,
    rectangles and ellipses boxes, other outlines masks (pixels whose centre
    they hold); a file mixing points with outlines is read as points (the
    outlines' centres).
``coco``
    One COCO object-detection JSON file for all images (``--labels`` the
    file, or a folder where it is the only JSON file), matched by the stem of each image's
    ``file_name``: the annotations of the category chosen with ``--class``.
    Segmentations (polygons, run-length masks) are masks, boxes boxes, an
    annotation with one keypoint and no segmentation a point (as
    :mod:`eosdetect.annotations.coco` writes points); crowds (``iscrowd``)
    are regions neither required nor penalised, as VOC's difficult boxes.
``labelstudio``
    Label Studio's JSON export (a list of tasks; the file, or a folder where
    it is the only JSON file), matched by the stem of each task's image file name,
    less the prefix Label Studio gives uploaded files (``8f3a2b1c-a.jpg`` is
    ``a.jpg``): rectangles are boxes, key points points, polygons and
    rotated rectangles masks, of the label chosen with ``--class``. A task
    nobody annotated is an image without labels.

In the last two, an image holding both points and boxes or outlines of the
class is read as points (the others' centres).

An image without a label file is an error (a forgotten file must not become
"no cells here") unless ``allow_unlabelled_as_empty``. Label files without an
image are reported.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from eosdetect.errors import ConfigError, InputError, Notice
from eosdetect.io import IMAGE_SUFFIXES, find_images, read_image

log = logging.getLogger(__name__)

FORMATS = ("voc", "points", "mask", "monuseg", "painted", "geojson", "coco", "labelstudio")
#: Formats whose one JSON file holds the labels of every image.
ONE_FILE_FORMATS = ("coco", "labelstudio")
_MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
_MASK_NAME_ENDINGS = ("", "_mask", "_masks", "_label", "_labels", "_instances")
_IMAGE_COLUMNS = ("image", "filename", "file", "image_name")


@dataclass
class LabelledImage:
    """One image and its true objects, in input-image pixels.

    ``points`` are object centres ``x, y``; ``boxes`` (VOC) the objects'
    boxes ``xmin, ymin, xmax, ymax``; ``instances`` (masks, polygons) an
    instance label image whose label ``k + 1`` is object ``k``;
    ``ignore_boxes`` regions labelled ``difficult``.
    """

    name: str
    image_path: Path
    label_path: Path | None
    image: np.ndarray
    points: np.ndarray
    boxes: np.ndarray | None = None
    instances: np.ndarray | None = None
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    verified: bool | None = None

    @property
    def n_objects(self) -> int:
        return len(self.points)

    def object_diameters(self) -> np.ndarray:
        """Equivalent diameters of the objects (boxes: mean side; masks: area), pixels; empty for points."""
        if self.boxes is not None and len(self.boxes):
            b = self.boxes
            return ((b[:, 2] - b[:, 0]) + (b[:, 3] - b[:, 1])) / 2
        if self.instances is not None and self.instances.max() > 0:
            areas = np.bincount(self.instances.ravel())[1:]
            areas = areas[areas > 0]
            return 2 * np.sqrt(areas / np.pi)
        return np.zeros(0)


@dataclass
class LabelReport:
    """What was found, fixed or left out while reading labels."""

    images: int = 0
    objects: int = 0
    unmatched_labels: list[Path] = field(default_factory=list)
    unlabelled_as_empty: list[Path] = field(default_factory=list)
    clipped_boxes: int = 0
    skipped_boxes: int = 0
    difficult_boxes: int = 0
    skipped_unverified: int = 0
    soft_masks: int = 0
    #: GeoJSON files holding both points and outlines, their outlines read as points.
    mixed_geojson: int = 0
    #: COCO or Label Studio images holding both points and boxes or outlines of the class, read as points.
    mixed_shapes: int = 0
    classes_found: Counter = field(default_factory=Counter)
    #: The label class the items were made of (None: the format has no classes).
    class_name: str | None = None

    def warnings(self) -> list[Notice]:
        """What the caller should be told (one line each; ``option`` names the parameter behind one)."""
        out = []
        if self.unmatched_labels:
            names = ", ".join(p.name for p in self.unmatched_labels[:5])
            more = f" and {len(self.unmatched_labels) - 5} more" if len(self.unmatched_labels) > 5 else ""
            out.append(Notice(f"{len(self.unmatched_labels)} label file(s) match no image: {names}{more}"))
        if self.unlabelled_as_empty:
            out.append(Notice(f"{len(self.unlabelled_as_empty)} image(s) without a label file taken as having no objects"))
        if self.clipped_boxes:
            out.append(Notice(f"{self.clipped_boxes} box(es) reaching outside their image were clipped to it"))
        if self.skipped_boxes:
            out.append(Notice(f"{self.skipped_boxes} empty or degenerate box(es) skipped"))
        if self.skipped_unverified:
            out.append(Notice(f"{self.skipped_unverified} unverified label file(s) skipped", option="verified_only"))
        if self.difficult_boxes:
            out.append(Notice(f"{self.difficult_boxes} box(es) marked difficult are neither required nor counted, "
                              "nor trained on (LabelImg's 'difficult' tick: eosdetect prelabel sets it on uncertain "
                              "boxes; untick it on the cells you confirm)"))
        if self.soft_masks:
            out.append(Notice(f"{self.soft_masks} mask(s) with soft (anti-aliased) edges read as binary, cut at "
                              "half their top value"))
        if self.mixed_geojson:
            out.append(Notice(f"{self.mixed_geojson} GeoJSON file(s) hold both points and outlines of the class: "
                              "the outlines are used as points (their centres)"))
        if self.mixed_shapes:
            out.append(Notice(f"{self.mixed_shapes} image(s) have both points and boxes or outlines of the class: "
                              "the boxes and outlines are used as points (their centres)"))
        return out

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "objects": self.objects,
            "unmatched_label_files": [str(p) for p in self.unmatched_labels],
            "unlabelled_images_taken_as_empty": [str(p) for p in self.unlabelled_as_empty],
            "clipped_boxes": self.clipped_boxes,
            "skipped_boxes": self.skipped_boxes,
            "difficult_boxes": self.difficult_boxes,
            "skipped_unverified": self.skipped_unverified,
            "soft_masks_read_as_binary": self.soft_masks,
            "geojson_outlines_read_as_points": self.mixed_geojson,
            "outlines_read_as_points": self.mixed_shapes,
            "classes_found": dict(sorted(self.classes_found.items())),
        }


def load_labelled(
    images: str | os.PathLike | list,
    labels: str | os.PathLike,
    label_format: str,
    *,
    class_name: str | None = None,
    allow_unlabelled_as_empty: bool = False,
    verified_only: bool = False,
    subset: list[str] | None = None,
    default_class: str | None = None,
    skip: Callable[[Path, Path], bool] | None = None,
) -> tuple[list[LabelledImage], LabelReport]:
    """Read every image under ``images`` with its labels from ``labels``.

    Parameters
    ----------
    images : folder, file, or list of them
    labels : folder (or, for ``points``, one CSV file with an ``image`` column; for ``coco`` and
        ``labelstudio``, their JSON file)
    label_format : one of :data:`FORMATS`
    class_name : str, optional
        The class to keep (VOC names, point CSV ``class`` column). Required when
        the labels hold several classes; an error lists the classes found when
        it never occurs.
    allow_unlabelled_as_empty : bool
        Take images without a label file as images without objects.
    verified_only : bool
        VOC only: skip label files LabelImg has not marked verified.
    subset : list of str, optional
        Only these image stems (or file names).
    default_class : str, optional
        The class used when ``class_name`` is not given and the labels hold
        several classes, this one among them (e.g. the model's class).
    skip : callable, optional
        Leaves image files out of the folders searched, as for
        :func:`eosdetect.io.find_images` (an application's output folder).

    Raises
    ------
    InputError, ConfigError
        With a one-line message naming the file at fault; when changing one
        of the parameters above would put it right, the error's ``option``
        names it (``"class_name"``, ``"label_format"`` ...).
    """
    if label_format not in FORMATS:
        raise ConfigError(f"unknown label format {label_format!r}; choose one of {', '.join(FORMATS)}")
    image_paths = find_images(images if isinstance(images, list) else [images], skip=skip)
    if label_format == "mask" and Path(labels).is_dir():
        image_paths = _without_masks(image_paths, Path(labels))
    all_image_paths = image_paths
    if subset is not None:
        wanted = set(subset)
        image_paths = [p for p in image_paths if p.stem in wanted or p.name in wanted]
        missing = {s for s in subset if s not in {p.stem for p in image_paths} | {p.name for p in image_paths}}
        if missing:
            raise InputError(sorted(missing)[0], f"listed in the subset but no such image ({len(missing)} missing)")
    stems = Counter(p.stem for p in image_paths)
    dup = [s for s, n in stems.items() if n > 1]
    if dup:
        beside = label_format == "mask" and any(Path(labels).resolve() in p.resolve().parents
                                                for p in image_paths if p.stem == dup[0])
        raise InputError(dup[0], "several images share this name; labels are matched by name, so rename them"
                         + (f" (a mask kept beside its image is named {dup[0]}_mask.png)" if beside else ""))
    labels = Path(labels)
    if not labels.exists():
        raise InputError(labels, "no such label file or folder")
    report = LabelReport()
    table = None
    one_file = None
    if label_format in ONE_FILE_FORMATS:
        one_file = _one_label_file(labels, label_format)
        table, unmatched = _read_one_file(one_file, label_format, all_image_paths)
        label_files = {}
    elif labels.is_file():
        if label_format != "points":
            raise InputError(labels, f"must be a folder for the {label_format} format", option="labels")
        table = _read_points_table(labels)
        label_files = {}
    else:
        label_files = _index_label_files(labels, label_format, {p.resolve() for p in image_paths})
        if label_format == "geojson":
            label_files = _match_qupath_names(label_files, image_paths)
        if label_format == "points" and len(label_files) == 1 and not set(label_files) & {p.stem for p in image_paths}:
            table = _read_points_table(next(iter(label_files.values())))  # a folder holding the one CSV for all
            label_files = {}
    by_stem = {p.stem: p for p in image_paths}
    if one_file is not None:
        report.unmatched_labels = [Path(n) for n in unmatched]
    elif table is not None:
        report.unmatched_labels = [Path(k) for k in sorted(set(table) - set(by_stem))]
    else:
        report.unmatched_labels = sorted(v for k, v in label_files.items() if k not in by_stem)
        if subset is not None:  # label files of images left out on purpose are not "unmatched"
            all_stems = {p.stem for p in find_images([images] if not isinstance(images, list) else images,
                                                     skip=skip)}
            report.unmatched_labels = [p for p in report.unmatched_labels if _stem_of(p, label_format) not in all_stems]

    # read all label files first (cheap): class names are checked before any image is read
    raw = {}
    missing = []
    for p in image_paths:
        if table is not None:
            raw[p.stem] = (one_file, table.get(p.stem))
            if p.stem not in table:
                missing.append(p)
            continue
        lp = label_files.get(p.stem)
        if lp is None:
            missing.append(p)
            raw[p.stem] = (None, None)
        else:
            raw[p.stem] = (lp, _read_label_file(lp, label_format))
    if missing and not allow_unlabelled_as_empty:
        if table is None and not label_files:  # the wrong --label-format, or the wrong folder
            raise InputError(labels, f"holds no label files of the {label_format} format "
                                     f"({'/'.join(_LABEL_SUFFIXES[label_format])} named like the images); "
                                     "choose the labels' format", option="label_format")
        what = f"no labels for this image in {one_file.name}" if one_file is not None else "no label file for this image"
        raise InputError(
            missing[0],
            f"{what} ({len(missing)} image(s) without labels); they may be taken as "
            "having no objects if they truly have none",
            option="allow_unlabelled_as_empty",
        )
    report.unlabelled_as_empty = missing
    if label_format in ("voc", "points", "geojson", *ONE_FILE_FORMATS):
        for _lp, content in raw.values():
            if content is None:
                continue
            if label_format == "coco":
                report.classes_found.update(s.class_name or "" for s in content.shapes)
            elif label_format == "labelstudio":
                report.classes_found.update(r.label or "" for r in content.regions)
            elif label_format == "geojson":
                from eosdetect.annotations.geojson import object_classes

                report.classes_found.update(object_classes(content))
            elif label_format == "voc":
                if verified_only and not content.verified:
                    continue
                report.classes_found.update(o.name for o in content.objects)
            elif content[1] is not None:
                report.classes_found.update(content[1])
        if class_name is None and default_class in report.classes_found:
            class_name = default_class
        class_name = _check_class(class_name, report.classes_found, label_format)
        report.class_name = class_name

    out = []
    for p in image_paths:
        lp, content = raw[p.stem]
        if label_format == "voc" and verified_only and content is not None and not content.verified:
            report.skipped_unverified += 1
            continue
        image = read_image(p)
        item = _make_item(p, lp, image, content, label_format, class_name, report)
        out.append(item)
        report.objects += item.n_objects
    report.images = len(out)
    if not out and report.skipped_unverified:
        raise InputError(labels, f"no label file is marked verified ({report.skipped_unverified} unverified "
                                 "skipped: only verified ones were asked for); save them with 'Verify Image' "
                                 "in LabelImg", option="verified_only")
    if not out:
        raise InputError(images if not isinstance(images, list) else images[0], "no labelled images to use")
    return out, report


def _stem_of(label_path: Path, label_format: str) -> str:
    stem = label_path.stem
    if label_format == "mask":
        for ending in _MASK_NAME_ENDINGS[1:]:
            if stem.endswith(ending):
                return stem[: -len(ending)]
    return stem


def _without_masks(image_paths: list[Path], labels: Path) -> list[Path]:
    """The images less the masks kept beside them: files in the labels folder named as the mask
    of another image (``a_mask.png`` beside ``a.png``)."""
    stems = {p.stem for p in image_paths}
    folder = labels.resolve()

    def is_mask(p: Path) -> bool:
        stem = _stem_of(p, "mask")
        return (stem != p.stem and stem in stems and p.suffix.lower() in _MASK_SUFFIXES
                and folder in p.resolve().parents)

    return [p for p in image_paths if not is_mask(p)]


_LABEL_SUFFIXES = {
    "voc": (".xml",), "monuseg": (".xml",), "points": (".csv",), "mask": _MASK_SUFFIXES, "painted": IMAGE_SUFFIXES,
    "geojson": (".geojson", ".json"), "coco": (".json",), "labelstudio": (".json",),
}


def _index_label_files(folder: Path, label_format: str, image_files: set) -> dict[str, Path]:
    suffixes = _LABEL_SUFFIXES[label_format]
    index: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in suffixes or p.name.startswith("."):
            continue
        if p.resolve() in image_files:  # labels kept in the images folder (LabelImg does this)
            continue
        stem = _stem_of(p, label_format)
        if stem in index and label_format != "mask":
            raise InputError(p, f"two label files for image {stem!r} ({index[stem].name} and {p.name})")
        # masks: prefer the plain "<stem>.png" over "<stem>_mask.png" when both exist
        if stem not in index or p.stem == stem:
            index[stem] = p
    return index


def _match_qupath_names(label_files: dict[str, Path], image_paths: list[Path]) -> dict[str, Path]:
    """GeoJSON files keyed by the stem of their image. QuPath names an export after its image with
    or without the extension (``a.ome.tif`` -> ``a.geojson``, ``a.ome.tif.geojson``): a file named
    like no image stem goes to the one image, still unlabelled, whose full name is its name, or
    whose name up to the first dot is; other files stay as they are (reported as unmatched)."""
    stems = {p.stem for p in image_paths}
    out = {k: v for k, v in label_files.items() if k in stems}
    for key, path in label_files.items():
        if key in stems:
            continue
        hits = [p for p in image_paths if p.stem not in out and key in (p.name, p.name.split(".")[0])]
        out[hits[0].stem if len(hits) == 1 else key] = path
    return out


def _one_label_file(labels: Path, label_format: str) -> Path:
    """The JSON file of a one-file format: ``labels`` itself, or the one JSON file in that folder."""
    if labels.is_file():
        return labels
    found = sorted(p for p in labels.iterdir() if p.is_file() and p.suffix.lower() == ".json"
                   and not p.name.startswith("."))
    if len(found) == 1:
        return found[0]
    what = {"coco": "COCO", "labelstudio": "Label Studio export"}[label_format]
    if not found:
        raise InputError(labels, f"holds no JSON file (the {label_format} format is one {what} file for all images)",
                         option="labels")
    names = ", ".join(p.name for p in found[:3]) + (" ..." if len(found) > 3 else "")
    raise InputError(labels, f"holds {len(found)} JSON files ({names}); name the {what} file to read", option="labels")


def _read_one_file(path: Path, label_format: str, image_paths: list[Path]) -> tuple[dict, list[str]]:
    """The entries of a COCO file or Label Studio export keyed by the stem of the image each is of,
    and the names of those of no image. An entry is of the image whose stem is that of its file
    name, or of that name less Label Studio's upload prefix. A Label Studio task nobody annotated is
    of its image but holds no labels (left out of the table)."""
    from eosdetect.annotations.shapes import file_name_of, without_upload_prefix

    if label_format == "coco":
        from eosdetect.annotations.coco import read_coco

        entries = [(file_name_of(im.file_name), im, True) for im in read_coco(path)]
    else:
        from eosdetect.annotations.labelstudio import read_labelstudio

        entries = [(t.file_name, t, t.annotated) for t in read_labelstudio(path)]
    stems = {p.stem for p in image_paths}
    table: dict = {}
    owner: dict[str, str] = {}
    unmatched: list[str] = []
    for name, content, labelled in entries:
        stem = Path(name).stem
        if stem not in stems:
            bare = without_upload_prefix(name)
            if bare is None or Path(bare).stem not in stems:
                unmatched.append(name)
                continue
            stem = Path(bare).stem
        if stem in owner:
            raise InputError(path, f"two entries for image {stem!r} ({owner[stem]} and {name}); labels are matched "
                                   "by name")
        owner[stem] = name
        if labelled:
            table[stem] = content
    if entries and not owner:
        names = ", ".join(unmatched[:3]) + (" ..." if len(unmatched) > 3 else "")
        raise InputError(path, f"names none of the images ({len(entries)} image(s) in it: {names})", option="labels")
    return table, unmatched


def _read_points_table(path: Path) -> dict[str, tuple[np.ndarray, list[str] | None]]:
    """One CSV for all images: columns image (or filename), x, y[, class]."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a readable CSV file ({exc})") from None
    if not rows:
        raise InputError(path, "empty file (expected a header row 'image,x,y[,class]')")
    names = [h.strip().lower() for h in rows[0]]
    image_col = next((names.index(c) for c in _IMAGE_COLUMNS if c in names), None)
    if image_col is None or "x" not in names or "y" not in names:
        raise InputError(path, f"one CSV for all images needs columns image, x, y (header is {','.join(rows[0])!r})")
    ix, iy = names.index("x"), names.index("y")
    ic = names.index("class") if "class" in names else None
    table: dict[str, tuple[list, list | None]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        try:
            x, y = float(row[ix]), float(row[iy])
        except (ValueError, IndexError):
            raise InputError(path, f"line {line}: x or y is not a number") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InputError(path, f"line {line}: x or y is not finite")
        stem = Path(row[image_col].strip()).stem
        pts, classes = table.setdefault(stem, ([], [] if ic is not None else None))
        pts.append((x, y))
        if classes is not None:
            classes.append(row[ic].strip() if ic < len(row) else "")
    return {k: (np.asarray(v[0], dtype=float).reshape(-1, 2), v[1]) for k, v in table.items()}


def _read_label_file(path: Path, label_format: str):
    if label_format == "voc":
        from eosdetect.annotations.voc import read_voc

        return read_voc(path)
    if label_format == "points":
        from eosdetect.annotations.points import read_points_table

        return read_points_table(path)
    if label_format == "monuseg":
        from eosdetect.annotations.monuseg import read_monuseg_xml

        return read_monuseg_xml(path)
    if label_format == "geojson":
        from eosdetect.annotations.geojson import read_geojson

        return read_geojson(path)
    return path  # masks and painted copies are read with the image (their size is checked against it)


def _check_class(class_name, found: Counter, label_format: str) -> str | None:
    classes = sorted(c for c in found if c)
    if class_name is None:
        if len(classes) > 1:
            raise ConfigError(
                f"the labels hold several classes ({', '.join(classes)}); choose one", option="class_name"
            )
        return classes[0] if classes else None
    if classes and class_name not in found:
        raise ConfigError(f"class {class_name!r} occurs in no label file; classes found: {', '.join(classes)}")
    return class_name


def _make_item(path, lp, image, content, label_format, class_name, report) -> LabelledImage:
    h, w = image.shape[:2]
    name = path.stem
    empty = np.zeros((0, 2))
    if content is None:  # unlabelled, taken as empty
        return LabelledImage(name, path, None, image, empty,
                             boxes=np.zeros((0, 4)) if label_format == "voc" else None)
    if label_format == "voc":
        if content.width and content.height and (content.width, content.height) != (w, h):
            raise InputError(lp, f"<size> says {content.width}x{content.height} but the image is {w}x{h}")
        boxes, ignore = [], []
        for o in content.objects:
            if class_name is not None and o.name != class_name:
                continue
            b = np.array(o.edges(), dtype=float)
            c = np.clip(b, 0, [w, h, w, h])
            if o.is_degenerate or (c[2] - c[0]) < 1 or (c[3] - c[1]) < 1:
                report.skipped_boxes += 1
                continue
            if not np.array_equal(b, c):
                report.clipped_boxes += 1
            if o.difficult:
                report.difficult_boxes += 1
                ignore.append(c)
            else:
                boxes.append(c)
        b = np.asarray(boxes, dtype=float).reshape(-1, 4)
        # box centres as pixel positions (pixel k's centre is at k, its edges at k and k + 1)
        pts = np.stack([(b[:, 0] + b[:, 2]) / 2 - 0.5, (b[:, 1] + b[:, 3]) / 2 - 0.5], axis=1) if len(b) else empty
        return LabelledImage(name, path, lp, image, pts, boxes=b,
                             ignore_boxes=np.asarray(ignore, dtype=float).reshape(-1, 4), verified=content.verified)
    if label_format == "points":
        xy, classes = content
        if class_name is not None and classes is not None:
            xy = xy[[c == class_name for c in classes]] if len(xy) else xy
        outside = (xy[:, 0] < -0.5) | (xy[:, 1] < -0.5) | (xy[:, 0] > w - 0.5) | (xy[:, 1] > h - 0.5)
        if outside.any():
            raise InputError(lp or path, f"{int(outside.sum())} point(s) lie outside the {w}x{h} image")
        return LabelledImage(name, path, lp, image, xy.reshape(-1, 2))
    if label_format == "monuseg":
        from eosdetect.annotations.masks import centroids
        from eosdetect.annotations.monuseg import polygons_to_labels

        inst = polygons_to_labels(content, (h, w))
        inst = _compact(inst)
        return LabelledImage(name, path, lp, image, centroids(inst), instances=inst)
    if label_format == "geojson":
        return _geojson_item(name, path, lp, image, content, class_name, report)
    if label_format == "coco":
        if content.width and content.height and (content.width, content.height) != (w, h):
            raise InputError(lp, f"{content.file_name}: the file says {content.width}x{content.height} but the "
                                 f"image is {w}x{h}")
        for s in content.shapes:
            if s.rle is not None and (s.rle[1], s.rle[2]) != (h, w):
                raise InputError(lp, f"{content.file_name}: a run-length mask is {s.rle[2]}x{s.rle[1]} but the "
                                     f"image is {w}x{h}")
        return _shapes_item(name, path, lp, image, content.shapes, content.file_name, class_name, report)
    if label_format == "labelstudio":
        size = content.original_size
        if size is not None and size != (w, h):
            raise InputError(lp, f"task of {content.file_name}: Label Studio says {size[0]}x{size[1]} but the "
                                 f"image is {w}x{h}")
        return _shapes_item(name, path, lp, image, content.shapes(w, h), content.file_name, class_name, report)
    if label_format == "mask":
        from eosdetect.annotations.masks import centroids, instances_from_binary, is_soft_binary, read_label_image

        arr = read_label_image(lp)
        if arr.shape != (h, w):
            raise InputError(lp, f"mask is {arr.shape[1]}x{arr.shape[0]} but the image is {w}x{h}")
        values = np.unique(arr)
        binary = len(values) <= 2
        if not binary and is_soft_binary(arr):
            report.soft_masks += 1
            arr, binary = arr >= values[-1] / 2, True
        inst = instances_from_binary(arr) if binary else _compact(arr)
        return LabelledImage(name, path, lp, image, centroids(inst), instances=inst)
    # painted
    from eosdetect.annotations.painted import points_from_painted

    painted = read_image(lp)
    if painted.shape != image.shape:
        raise InputError(lp, f"painted copy is {painted.shape[1]}x{painted.shape[0]} but the image is {w}x{h}")
    return LabelledImage(name, path, lp, image, points_from_painted(painted, image))


def _geojson_item(name, path, lp, image, objects, class_name, report) -> LabelledImage:
    """The QuPath objects of the class as points, boxes (rectangles and ellipses) or instances (outlines)."""
    from eosdetect.annotations.geojson import objects_to_labels
    from eosdetect.annotations.masks import centroids

    h, w = image.shape[:2]
    if class_name is not None and any(report.classes_found):  # no object classified anywhere: all are of the class
        objects = [o for o in objects if (o.class_name or "") == class_name]
    outlines = [o for o in objects if not o.is_point]
    if len(outlines) < len(objects) or not outlines:  # points (with outlines: their centres)
        report.mixed_geojson += bool(outlines)
        xy = np.array([o.xy for o in objects], dtype=float).reshape(-1, 2)
        outside = (xy[:, 0] < -0.5) | (xy[:, 1] < -0.5) | (xy[:, 0] > w - 0.5) | (xy[:, 1] > h - 0.5)
        if outside.any():
            raise InputError(lp, f"{int(outside.sum())} point(s) lie outside the {w}x{h} image")
        return LabelledImage(name, path, lp, image, xy)
    if all(o.is_box_like for o in outlines):
        boxes = _clipped_boxes(np.array([o.box for o in outlines], dtype=float), w, h, report)
        pts = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 - 0.5, (boxes[:, 1] + boxes[:, 3]) / 2 - 0.5], axis=1)
        return LabelledImage(name, path, lp, image, pts.reshape(-1, 2), boxes=boxes)
    inst = _compact(objects_to_labels(outlines, (h, w)))
    return LabelledImage(name, path, lp, image, centroids(inst), instances=inst)


def _shapes_item(name, path, lp, image, shapes, entry, class_name, report) -> LabelledImage:
    """The shapes (:class:`~eosdetect.annotations.shapes.Shape`) of the class as points, boxes or
    instances, and its regions to ignore; ``entry`` names the image in the label file, for messages."""
    from eosdetect.annotations.masks import centroids
    from eosdetect.annotations.shapes import shapes_to_labels

    h, w = image.shape[:2]
    if class_name is not None and any(report.classes_found):  # nothing has a class anywhere: all are of it
        shapes = [s for s in shapes if (s.class_name or "") == class_name]
    empty = [s for s in shapes if not np.isfinite(s.xy).all()]  # outlines holding no pixel
    report.skipped_boxes += len(empty)
    shapes = [s for s in shapes if np.isfinite(s.xy).all()]
    ignore = np.array([s.box for s in shapes if s.ignore and s.box is not None], dtype=float).reshape(-1, 4)
    ignore = np.clip(ignore, 0, [w, h, w, h])
    ignore = ignore[(ignore[:, 2] > ignore[:, 0]) & (ignore[:, 3] > ignore[:, 1])]
    shapes = [s for s in shapes if not s.ignore]
    outlines = [s for s in shapes if s.kind != "point"]
    if len(outlines) < len(shapes) or not outlines:  # points (with boxes or outlines: their centres)
        report.mixed_shapes += bool(outlines)
        xy = np.array([s.xy for s in shapes], dtype=float).reshape(-1, 2)
        outside = (xy[:, 0] < -0.5) | (xy[:, 1] < -0.5) | (xy[:, 0] > w - 0.5) | (xy[:, 1] > h - 0.5)
        if outside.any():
            raise InputError(lp, f"{entry}: {int(outside.sum())} point(s) lie outside the {w}x{h} image")
        return LabelledImage(name, path, lp, image, xy, ignore_boxes=ignore)
    if all(s.kind == "box" for s in outlines):
        boxes = _clipped_boxes(np.array([s.box for s in outlines], dtype=float), w, h, report)
        pts = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 - 0.5, (boxes[:, 1] + boxes[:, 3]) / 2 - 0.5], axis=1)
        return LabelledImage(name, path, lp, image, pts.reshape(-1, 2), boxes=boxes, ignore_boxes=ignore)
    inst = _compact(shapes_to_labels(outlines, (h, w)))
    return LabelledImage(name, path, lp, image, centroids(inst), instances=inst, ignore_boxes=ignore)


def _clipped_boxes(boxes: np.ndarray, w: int, h: int, report: LabelReport) -> np.ndarray:
    """Boxes (pixel edges) clipped to a ``w`` x ``h`` image, those left under a pixel wide or high
    skipped; both counted in ``report``."""
    c = np.clip(boxes.reshape(-1, 4), 0, [w, h, w, h])
    keep = ((c[:, 2] - c[:, 0]) >= 1) & ((c[:, 3] - c[:, 1]) >= 1)
    report.skipped_boxes += int((~keep).sum())
    report.clipped_boxes += int((keep & (c != boxes.reshape(-1, 4)).any(axis=1)).sum())
    return c[keep]


def _compact(labels: np.ndarray) -> np.ndarray:
    """Renumber an instance image 1..n in order of first appearance of each present label."""
    labels = np.asarray(labels)
    values = np.unique(labels)
    values = values[values > 0]
    if len(values) == 0 or values[-1] == len(values):
        return labels.astype(np.int32)
    lut = np.zeros(int(values[-1]) + 1, dtype=np.int32)
    lut[values] = np.arange(1, len(values) + 1)
    return lut[labels]


def split_names(names: list[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """A fixed, reproducible train/validation split by image name.

    Names are ordered by a hash of ``seed`` and the name (independent of
    the order and of the other names, so adding images moves few of the
    others between the sets), and the first
    ``round(val_fraction * n)`` (at least 1) are validation.

    >>> split_names(["a", "b", "c", "d", "e"], 0.4)
    (['b', 'c', 'e'], ['a', 'd'])
    """
    if len(names) < 2:
        raise ConfigError(f"need at least 2 labelled images to hold some out for validation, got {len(names)}")
    order = sorted(names, key=lambda n: hashlib.sha256(f"{seed}:{n}".encode("utf-8", "surrogateescape")).hexdigest())
    n_val = min(len(names) - 1, max(1, int(round(val_fraction * len(names)))))
    val = set(order[:n_val])
    return [n for n in names if n not in val], [n for n in names if n in val]


# --------------------------------------------------------------------------- conversions


def eval_item(item: LabelledImage, radius_px: float):
    """An :class:`~eosdetect.training.evaluation.EvalItem`: a detection matches a true
    object inside its box or mask, or within ``radius_px`` of its centre."""
    from eosdetect.training.evaluation import EvalItem

    return EvalItem(
        name=item.name, image=item.image, true_xy=item.points, true_boxes=item.boxes,
        true_labels=item.instances, radius_px=float(radius_px),
        ignore_boxes=item.ignore_boxes if len(item.ignore_boxes) else None,
    )


def target_labels(item: LabelledImage, shape: tuple[int, int], scale: float, cell_diameter_px: float) -> np.ndarray:
    """Instance label image of the item's objects at ``scale`` (model pixels).

    How each label form becomes a training target:

    - masks and polygons: resized with nearest-neighbour interpolation;
    - boxes: the ellipse inscribed in each box at 90% of its size, pixels
      claimed by two boxes going to the nearer centre
      (:func:`~eosdetect.annotations.convert.boxes_to_labels`);
    - points: a disc of the model's cell diameter around each point, touching
      discs split along their bisector
      (:func:`~eosdetect.annotations.convert.points_to_labels`).

    Touching objects are then kept apart by a one-pixel gap
    (:func:`~eosdetect.annotations.masks.separate_touching`).
    """
    from eosdetect.annotations.convert import boxes_to_labels, points_to_labels
    from eosdetect.core.geometry import rescale_points, resize

    if item.instances is not None:
        lab = resize(item.instances, scale, nearest=True)
        if lab.shape != tuple(shape):
            import cv2

            lab = cv2.resize(item.instances.astype(np.int32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return lab.astype(np.int32)
    if item.boxes is not None:
        return boxes_to_labels(shape, item.boxes * scale, shrink=0.9)
    if not len(item.points):
        return np.zeros(shape, dtype=np.int32)
    return points_to_labels(np.zeros(shape), rescale_points(item.points, scale), cell_diameter_px / 2)


def training_sample(item: LabelledImage, config, input_pixel_size_um: float | None = None,
                    gap_weight: float = 1.0):
    """A :class:`~eosdetect.training.dataset.Sample` at the model's scale (target with
    gaps between touching objects, weighted ``gap_weight`` in the loss;
    difficult boxes weighted 0)."""
    from eosdetect.annotations.masks import separate_touching
    from eosdetect.core.geometry import rescale_points, resize
    from eosdetect.training.dataset import Sample

    scale = config.scale_for(input_pixel_size_um)
    image = resize(item.image, scale)
    f = image.shape[1] / item.image.shape[1]
    labels = target_labels(item, image.shape[:2], f, config.cell_diameter_px)
    target = separate_touching(labels).astype(np.float32)
    weight = np.ones(target.shape, dtype=np.float32)
    weight[_gaps(labels) & (target == 0)] = gap_weight
    for x0, y0, x1, y1 in item.ignore_boxes * f:
        weight[max(int(y0), 0): int(np.ceil(y1)), max(int(x0), 0): int(np.ceil(x1))] = 0
    return Sample(item.name, image, target, weight, points=rescale_points(item.points, f))


def _gaps(labels: np.ndarray) -> np.ndarray:
    """Pixels between touching objects: next to (or on the rim of) two different labels."""
    from scipy import ndimage as ndi

    big = int(labels.max()) + 1
    hi = ndi.grey_dilation(labels, size=(3, 3))
    lo = ndi.grey_erosion(np.where(labels > 0, labels, big), size=(3, 3))
    return (hi > 0) & (lo < big) & (hi != lo)


def target_preview(item: LabelledImage, sample) -> np.ndarray:
    """RGB picture of a training target at the image's own size: target
    outlines in green, object centres as crosses, ignored regions dimmed."""
    import cv2

    img = np.ascontiguousarray(item.image.copy())
    h, w = img.shape[:2]
    target = (cv2.resize(sample.target.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)
    ignored = cv2.resize((sample.weight <= 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    img[ignored] = (img[ignored] * 0.4).astype(np.uint8)
    thick = max(1, int(round(max(h, w) / 600)))
    contours, _ = cv2.findContours(target, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, contours, -1, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.drawContours(img, contours, -1, (0, 230, 64), thick, cv2.LINE_AA)
    size = max(7, int(round(max(h, w) / 100)))
    for x, y in item.points:
        cv2.drawMarker(img, (int(round(x)), int(round(y))), (255, 255, 0), cv2.MARKER_CROSS, size, thick, cv2.LINE_AA)
    return img
