"""Machine pre-labels for LabelImg: one Pascal VOC file per image, for a person to correct.

Every cell the model finds with a score of at least ``min_score`` becomes a
box sized to its segment. Cells the model would count are plain boxes; those
it is unsure about (score below the model's counting threshold) are marked
``difficult`` so that the annotator checks them first. In LabelImg, the
annotator deletes wrong boxes, adds missed cells, clears ``difficult`` on the
ones confirmed, and saves with "verify image": such files are never touched
again. An unverified file that already exists keeps every box in it (the
human's work) and only gains new candidates that do not overlap a box of the
same class, nor sit on a box of another class (a box the annotator renamed, say
from eosinophil to neutrophil, is not proposed again). A file that gains nothing
is not rewritten. Boxes the annotator deleted are not proposed again: each run
records what it proposed in ``.eosdetect-prelabel/<stem>.json`` beside the XML.
With ``--yolo``, a ``<stem>.txt`` that no longer matches its XML (edited in
LabelImg's YOLO mode) is never overwritten.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eosdetect.annotations.voc import VocAnnotation, VocObject, box_to_voc, read_voc, voc_added_bytes, write_voc
from eosdetect.errors import EosdetectError, InputError
from eosdetect.io import atomic_write_bytes, atomic_write_text, is_grey, printable, read_image

log = logging.getLogger(__name__)

#: A new candidate overlapping an existing box of its class by more than this IoU is a duplicate.
DUPLICATE_IOU = 0.3
#: ... and a box of another class by more than this: the same cell, named otherwise by the annotator.
SAME_OBJECT_IOU = 0.5


@dataclass
class PrelabelSettings:
    class_name: str | None = None  # default: the model's class
    min_score: float | None = None  # default: half the counting threshold (two-stage) / 0 (one-stage)
    uncertain_below: float | None = None  # default: the counting threshold (two-stage) / prob + 0.2
    pixel_size_um: float | None = None
    #: Overrides the model's fitted thresholds (the score band follows them).
    thresholds: object = None
    yolo: bool = False
    database: str = "eosdetect pre-labels"
    #: Without a model: "smear" (white cells in Wright/Giemsa smears) or "he" (nuclei in H&E), every box difficult.
    classical: str | None = None


@dataclass
class PrelabelRecord:
    image: str
    xml: str = ""
    status: str = "written"  # written | merged | unchanged | verified (left alone) | error
    new_boxes: int = 0
    uncertain: int = 0
    kept_boxes: int = 0
    error: str = ""
    detections: object = field(default=None, repr=False)


def score_band(model, settings: PrelabelSettings) -> tuple[float, float]:
    """``(min_score, uncertain_below)`` for this model: boxes need ``score >=
    min_score`` and are ``difficult`` when ``score < uncertain_below``."""
    thr = settings.thresholds if settings.thresholds is not None else model.thresholds
    if model.config.helper_enabled:
        lo_default, hi_default = thr.helper_threshold / 2, thr.helper_threshold
    else:  # scores are the mean U-Net probability of each segment
        lo_default, hi_default = 0.0, min(thr.prob_threshold + 0.2, 0.95)
    lo = lo_default if settings.min_score is None else settings.min_score
    hi = hi_default if settings.uncertain_below is None else settings.uncertain_below
    return lo, max(hi, lo)


CLASSICAL_DEFAULTS = {"smear": ("white cell", 0.06), "he": ("nucleus", 0.25)}


def candidate_boxes(model, image: np.ndarray, settings: PrelabelSettings, result=None):
    """Candidates kept for pre-labelling, and which of them are uncertain.

    ``result`` is :func:`eosdetect.models.predict.detect`'s answer for this image
    with ``settings.thresholds`` (default the model's own), when already at hand."""
    if settings.classical:
        from eosdetect.core.candidates import classical_nuclei, classical_white_cells

        px = settings.pixel_size_um or CLASSICAL_DEFAULTS[settings.classical][1]
        if settings.classical == "smear":
            _, cands = classical_white_cells(image, pixel_size_um=px)
        else:
            _, cands = classical_nuclei(image, pixel_size_um=px)
        return cands, np.ones(len(cands), dtype=bool)  # nothing scored them: all to be checked
    lo, hi = score_band(model, settings)
    res = result if result is not None else model.detect(image, pixel_size_um=settings.pixel_size_um,
                                                   thresholds=settings.thresholds)
    cands = res.candidates if model.config.helper_enabled else res.detections
    keep = cands.subset(cands.score >= lo)
    return keep, keep.score < hi


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def is_duplicate(new: VocObject, existing: list[VocObject]) -> bool:
    """A new box duplicates an existing one of its class when its centre lies in it or their IoU
    is over :data:`DUPLICATE_IOU`, and one of another class when each box holds the other's
    centre or their IoU is over :data:`SAME_OBJECT_IOU` (the same cell, which the annotator
    named otherwise; a red cell's box reaching over a white cell's edge holds one centre at most)."""
    def holds(box: VocObject, point) -> bool:
        return box.xmin <= point[0] <= box.xmax and box.ymin <= point[1] <= box.ymax

    nb = (new.xmin, new.ymin, new.xmax, new.ymax)
    for o in existing:
        iou = _iou(nb, (o.xmin, o.ymin, o.xmax, o.ymax))
        if o.name != new.name:
            if iou > SAME_OBJECT_IOU or (holds(o, new.centre) and holds(new, o.centre)):
                return True
            continue
        if holds(o, new.centre) or iou > DUPLICATE_IOU:
            return True
    return False


def _class_name(model, settings: PrelabelSettings) -> str:
    if settings.class_name:
        return settings.class_name
    return CLASSICAL_DEFAULTS[settings.classical][0] if settings.classical else model.config.class_name


def image_depth(image: np.ndarray) -> int:
    """``<depth>`` as LabelImg writes it: 1 for an image whose every pixel is grey
    (Qt's ``QImage.isGrayscale()``), else 3."""
    return 1 if is_grey(image) else 3


def prelabel_annotation(model, image: np.ndarray, settings: PrelabelSettings, *, filename: str,
                        existing: VocAnnotation | None = None, folder: str = "", path: str = "", result=None,
                        proposed_before: list[VocObject] = ()):
    """The VOC annotation for one image: the boxes of ``existing`` (kept as
    they are) plus the new candidates that duplicate none of them, nor any box
    in ``proposed_before`` (boxes proposed by an earlier run: those no longer in
    ``existing`` were deleted by the annotator and stay deleted).

    Returns ``(annotation, candidates, new_objects)``.
    """
    h, w = image.shape[:2]
    class_name = _class_name(model, settings)
    cands, uncertain = candidate_boxes(model, image, settings, result=result)
    kept = list(existing.objects) if existing is not None else []
    new = []
    for i in np.argsort(-cands.score):  # most certain first, so a duplicate keeps the better box
        x0, y0, x1, y1 = box_to_voc(cands.xmin[i], cands.ymin[i], cands.xmax[i], cands.ymax[i], w, h)
        obj = VocObject(class_name, x0, y0, x1, y1, difficult=bool(uncertain[i]))
        if obj.is_degenerate or is_duplicate(obj, [*kept, *new, *proposed_before]):
            continue
        new.append(obj)
    new = sorted(new, key=lambda o: (o.ymin, o.xmin))
    ann = VocAnnotation(
        filename=filename, width=w, height=h, depth=image_depth(image),
        folder=existing.folder if existing is not None else folder,
        path=existing.path if existing is not None else path,
        database=existing.database if existing is not None else settings.database,
        objects=kept + new,
    )
    return ann, cands, new


def prelabel_image(model, image_path, xml_path, settings: PrelabelSettings) -> PrelabelRecord:
    """Pre-label one image into ``xml_path`` (see the module docstring for the rules)."""
    image_path, xml_path = Path(image_path), Path(xml_path)
    rec = PrelabelRecord(image=str(image_path), xml=str(xml_path))
    existing = None
    if xml_path.exists():
        existing = read_voc(xml_path)  # InputError: not valid VOC, left untouched
        if existing.verified:
            rec.status = "verified"
            rec.kept_boxes = len(existing.objects)
            return rec
    image = read_image(image_path)
    h, w = image.shape[:2]
    if existing is not None and not _names_this_image(existing, image_path, xml_path):
        owner = existing.path if (existing.filename or "").strip() in (image_path.name, image_path.stem) \
            else existing.filename
        raise InputError(xml_path, f"is the label file of {owner}, not of {image_path}; left "
                                   "untouched (images of one name share a label file: rename one, or pre-label "
                                   "it into another -o folder)")
    if existing is not None and existing.width and existing.height and (existing.width, existing.height) != (w, h):
        raise InputError(xml_path, f"<size> says {existing.width}x{existing.height} but {image_path.name} is "
                                   f"{w}x{h}; left untouched")
    sized = None if existing is None else dataclasses.replace(existing, width=w, height=h)
    if settings.yolo or existing is None:
        _check_yolo_untouched(xml_path, sized, _class_name(model, settings))
    # YOLO files eosdetect wrote and nobody edited are kept in step even by a run without --yolo,
    # so that a later --yolo run does not take them for hand edits
    yolo = settings.yolo or (existing is not None and _yolo_in_step(xml_path, sized, _class_name(model, settings)))
    memory = _memory_path(xml_path)
    proposed = _read_memory(memory) if existing is not None else []
    ann, cands, new = prelabel_annotation(
        model, image, settings, filename=image_path.name, existing=existing,
        folder=image_path.parent.name, path=str(image_path.resolve()), proposed_before=proposed,
    )
    rec.detections = cands
    rec.new_boxes = len(new)
    rec.uncertain = sum(o.difficult for o in new)
    rec.kept_boxes = len(ann.objects) - len(new)
    txt_path = xml_path.with_suffix(".txt")
    if existing is not None and not new:
        rec.status = "unchanged"  # nothing to add: the file stays as the annotator left it
        if settings.yolo and not txt_path.is_file():
            write_yolo(txt_path, ann, xml_path.parent / "classes.txt", _class_name(model, settings))
        return rec
    rec.status = "merged" if existing is not None else "written"
    if existing is not None:
        atomic_write_bytes(xml_path, voc_added_bytes(xml_path, ann, new))  # the annotator's file, only added to
    else:
        write_voc(xml_path, ann)
    _write_memory(memory, proposed + new)
    if yolo:
        write_yolo(txt_path, ann, xml_path.parent / "classes.txt", _class_name(model, settings))
    return rec


#: Beside the label files: what earlier runs proposed, per image, so that boxes the annotator deleted stay deleted.
MEMORY_DIR = ".eosdetect-prelabel"


def _names_this_image(ann: VocAnnotation, image_path: Path, xml_path: Path) -> bool:
    """Whether a label file is this image's, not another image's of the same stem: ``x.jpg``
    beside ``x.png`` (``<filename>``; one without an extension is a stem), or ``a/x.png`` and
    ``b/x.png`` pre-labelled into the same ``-o`` (``<path>``)."""
    import filecmp

    name = (ann.filename or "").strip()
    if name and name not in (printable(image_path.name), printable(image_path.stem)):  # "a.v2": stem of a.v2.jpg
        return False
    if xml_path.parent.resolve() == image_path.parent.resolve():
        return True  # beside an image of its name: that image's, as LabelImg reads it (a copied folder too)
    # same name: another image still where <path> says, and not a copy of this one (a label file
    # moved or copied with its images keeps its old path; that is no reason to refuse it)
    other = Path(ann.path.strip()) if ann.path and ann.path.strip() else None
    try:
        return (other is None or not other.is_file() or other.resolve() == image_path.resolve()
                or filecmp.cmp(other, image_path, shallow=False))
    except OSError:
        return True


def _memory_path(xml_path: Path) -> Path:
    return xml_path.parent / MEMORY_DIR / f"{xml_path.stem}.json"


def _read_memory(path: Path) -> list[VocObject]:
    """Boxes proposed by earlier runs (none when the record is missing or unreadable)."""
    import json

    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["proposed"]
        return [VocObject(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return []


def _write_memory(path: Path, proposed: list[VocObject]) -> None:
    import json

    rows = [[o.name, o.xmin, o.ymin, o.xmax, o.ymax] for o in proposed]
    note = "boxes eosdetect prelabel proposed for this image; one the annotator deleted is not proposed again"
    atomic_write_text(path, json.dumps({"note": note, "proposed": rows}) + "\n")


def _check_yolo_untouched(xml_path: Path, existing: VocAnnotation | None, class_name: str) -> None:
    """Refuse to rewrite a LabelImg YOLO file that a person may have edited: one
    without its XML, or one that no longer says what its XML says."""
    txt_path, classes_path = xml_path.with_suffix(".txt"), xml_path.parent / "classes.txt"
    if not txt_path.is_file():
        return
    if existing is None:
        raise InputError(txt_path, f"YOLO labels without {xml_path.name}; left untouched (a new "
                                   f"{xml_path.name} would hide them: LabelImg opens the .xml first); "
                                   "pre-label into another folder with -o")
    if not classes_path.is_file():
        raise InputError(txt_path, "YOLO labels without a classes.txt beside them (eosdetect always writes "
                                   "one), so not written by eosdetect; left untouched: pre-label into "
                                   "another folder with -o")
    classes = _yolo_classes(classes_path, existing, class_name)[1]
    if _read_text(txt_path) != _yolo_text(existing, classes):
        raise InputError(txt_path, f"no longer agrees with {xml_path.name} (one of them was edited since "
                                   "eosdetect wrote them); both left untouched: keep one of them and re-run")


def _yolo_in_step(xml_path: Path, existing: VocAnnotation, class_name: str) -> bool:
    """Whether the YOLO files beside ``xml_path`` say what ``existing`` says (eosdetect's, untouched)."""
    try:
        _check_yolo_untouched(xml_path, existing, class_name)
    except InputError:
        return False
    return xml_path.with_suffix(".txt").is_file()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text (LabelImg writes UTF-8); left untouched") from None


def _yolo_classes(classes_path: Path, ann: VocAnnotation, class_name: str | None) -> tuple[list[str], list[str]]:
    """The lines of ``classes.txt`` with any new class names appended, and the
    names by index. Lines are read as LabelImg reads them (split at newlines,
    blank lines kept), so every existing index keeps its class."""
    lines = []
    if classes_path.is_file():
        text = _read_text(classes_path).strip("\n")
        lines = text.split("\n") if text else []
    names = [line.strip() for line in lines]
    for name in ([class_name] if class_name else []) + [o.name for o in ann.objects]:
        if name not in names:
            lines.append(name)
            names.append(name)
    return lines, names


def _yolo_text(ann: VocAnnotation, classes: list[str]) -> str:
    lines = []
    for o in ann.objects:
        # LabelImg's YoloWriter: centre and size from the integer VOC box, 6 decimals
        xc = (o.xmin + o.xmax) / 2 / ann.width
        yc = (o.ymin + o.ymax) / 2 / ann.height
        bw = (o.xmax - o.xmin) / ann.width
        bh = (o.ymax - o.ymin) / ann.height
        lines.append(f"{classes.index(o.name)} {xc:.6f} {yc:.6f} {bw:.6f} {bh:.6f}\n")
    return "".join(lines)


def write_yolo(txt_path: Path, ann: VocAnnotation, classes_path: Path, class_name: str | None = None) -> None:
    """LabelImg's YOLO format: ``classes.txt`` (one name per line) and per image
    ``class_index x_centre y_centre width height`` relative to the image size."""
    lines, names = _yolo_classes(classes_path, ann, class_name)
    text = "".join(f"{c}\n" for c in lines)
    if not classes_path.is_file() or _read_text(classes_path).strip("\n") != text.strip("\n"):
        atomic_write_text(classes_path, text)
    atomic_write_text(txt_path, _yolo_text(ann, names))


def prelabel_all(model, images: list[Path], out_dir: Path | None, settings: PrelabelSettings, progress=None):
    """Pre-label every image; errors are recorded per image and the rest carry on."""
    records = []
    claimed: dict[Path, Path] = {}  # label file -> the image it is for, in this run
    for path in images:
        xml_path = (Path(out_dir) if out_dir else path.parent) / f"{path.stem}.xml"
        key = xml_path.resolve()
        try:
            if key in claimed:
                raise InputError(path, f"has the same name as {claimed[key]}, whose label file is "
                                       f"{xml_path.name} (LabelImg names it after the image): rename one, "
                                       "or pre-label them into different -o folders")
            claimed[key] = path
            rec = prelabel_image(model, path, xml_path, settings)
        except EosdetectError as exc:
            rec = PrelabelRecord(image=str(path), xml=str(xml_path), status="error", error=str(exc))
        except OSError as exc:
            rec = PrelabelRecord(image=str(path), xml=str(xml_path), status="error",
                                 error=f"{exc.filename or path}: {exc.strerror or exc}")
        records.append(rec)
        if progress:
            progress(rec)
    return records
