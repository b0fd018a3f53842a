"""How the bundled models are built from the shared public data (BCCD, MoNuSeg).

``scripts/train_bundled.py`` calls these with a config from ``configs/``;
the real-data tests and ``scripts/evaluate_bundled.py`` use the same
validation items, so every number in a model's ``metrics.json`` can be
reproduced.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from eosdetect.annotations.convert import boxes_to_mask
from eosdetect.annotations.masks import centroids, instances_from_binary, separate_touching
from eosdetect.core.geometry import resize
from eosdetect.core.postprocess import segment
from eosdetect.io import read_image
from eosdetect.models.config import ModelConfig
from eosdetect.models.crops import helper_crops
from eosdetect.training import shared_data as sd
from eosdetect.training.dataset import Sample
from eosdetect.training.evaluation import EvalItem
from eosdetect.training.helper import HELPER_CROP_EXTRA

log = logging.getLogger(__name__)

#: Matching radius for nuclei: a detection within 2 um of a true centre (or on its mask) may match it.
NUCLEI_MATCH_RADIUS_UM = 2.0


# --------------------------------------------------------------------------- nuclei-he


def nuclei_sample(item: sd.MonusegImage, config: ModelConfig, gap_weight: float = 1.0,
                  split_binary: bool = True) -> Sample:
    """Training sample for the nucleus U-Net.

    Touching nuclei are separated by a one-pixel gap in the target (weighted
    ``gap_weight`` in the loss), so the network learns to leave a valley
    between them that the watershed can split. Instance-annotated tiles give
    the gaps exactly; on binary-only tiles, where touching nuclei merge, the
    merged blobs are first split by the distance-transform watershed
    (``split_binary``) so that all targets follow the same convention.
    """
    scale = config.scale_for(sd.MONUSEG_PIXEL_SIZE_UM)
    image = resize(read_image(item.path), scale)
    inst = item.instances()
    if inst is None:
        binary = item.binary()
        if split_binary:
            px = sd.MONUSEG_PIXEL_SIZE_UM
            inst = segment(binary.astype(np.float32), min_distance=2.5 / px, smooth=0.5 / px, seed_h=0.5 / px)
        else:
            inst = instances_from_binary(binary)
    labels = resize(inst, scale, nearest=True)
    target = separate_touching(labels)
    weight = np.ones(target.shape, dtype=np.float32)
    weight[(labels > 0) & ~target] = gap_weight
    return Sample(item.name, image, target.astype(np.float32), weight, points=centroids(labels))


def nuclei_eval_item(item: sd.MonusegImage) -> EvalItem:
    return EvalItem(
        name=item.name,
        image=read_image(item.path),
        true_xy=item.true_centroids(),
        true_labels=item.instances(),
        radius_px=NUCLEI_MATCH_RADIUS_UM / sd.MONUSEG_PIXEL_SIZE_UM,
    )


def nuclei_data(config: ModelConfig, gap_weight: float = 1.0):
    """Training samples, validation samples and validation eval items."""
    train, val = sd.monuseg_split(sd.load_monuseg())
    return (
        [nuclei_sample(i, config, gap_weight) for i in train],
        [nuclei_sample(i, config) for i in val],
        [nuclei_eval_item(i) for i in val],
    )


# --------------------------------------------------------------------------- eosinophil-smear


def smear_sample(item: sd.BccdImage, config: ModelConfig) -> Sample:
    """U-Net sample: every white cell (ellipse in its box) is foreground."""
    scale = config.scale_for(None)
    image = read_image(item.path)
    small = resize(image, scale)
    f = small.shape[1] / image.shape[1]
    boxes = item.wbc_boxes * f
    target = boxes_to_mask(small.shape[:2], boxes, shrink=0.9)
    pts = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1) if len(boxes) else None
    return Sample(item.name, small, target.astype(np.float32), points=pts if pts is not None else np.zeros((0, 2)))


def smear_wbc_eval_item(item: sd.BccdImage) -> EvalItem:
    """White-cell ground truth (all subtypes): what the U-Net of the two-stage model finds."""
    boxes = item.wbc_boxes
    xy = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    return EvalItem(item.name, read_image(item.path), xy, true_boxes=boxes)


def smear_eval_item(item: sd.BccdImage, image: np.ndarray | None = None) -> EvalItem:
    """Eosinophil ground truth: a detection inside the eosinophil's box matches it."""
    boxes = sd.bccd_eosinophil_truth(item)
    xy = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    return EvalItem(item.name, read_image(item.path) if image is None else image, xy, true_boxes=boxes)


def red_cell_negatives(config: ModelConfig) -> int:
    """Red cells or platelets per image among a smear helper's negatives (see :func:`smear_helper_crops`)."""
    return 0 if config.helper_kind == "colour" else 1


def smear_helper_crops(items: list[sd.BccdImage], config: ModelConfig, *, extra: int = 40,
                       negatives_per_image: int | None = None, seed: int = 0):
    """Crops for the helper at its pixel size, ``extra`` pixels larger than
    the crop size (room for shift augmentation).

    Positives: eosinophil boxes. Negatives: the other labelled white cells
    (neutrophils, lymphocytes, monocytes, basophils), every white cell of
    images whose subtype is unknown is skipped, plus ``negatives_per_image``
    red cells or platelets per image. By default that is 1 for a CNN helper
    and 0 for a colour helper: the U-Net hands the helper white cells only,
    and red cells (orange-red, like eosinophil granules) pull a linear
    colour model away from the white-cell decision (cross-validated
    per-crop ROC AUC 0.86 with them, 0.93 without).
    """
    if negatives_per_image is None:
        negatives_per_image = red_cell_negatives(config)
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for item in items:
        if item.subtype is None:
            continue
        image = read_image(item.path)
        b = item.subtype_box
        pts = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)]
        lab = [1 if item.subtype == "eosinophil" else 0]
        if len(item.other_boxes) and negatives_per_image:
            pick = rng.choice(len(item.other_boxes), size=min(negatives_per_image, len(item.other_boxes)), replace=False)
            for ob in item.other_boxes[pick]:
                pts.append(((ob[0] + ob[2]) / 2, (ob[1] + ob[3]) / 2))
                lab.append(0)
        crops.append(helper_crops(image, config, np.array(pts), extra=extra))
        labels.extend(lab)
    return np.concatenate(crops), np.array(labels)


def smear_data(config: ModelConfig, val_fold: int = 0, *, unet: bool = True):
    """U-Net samples (``unet``), one-class helper crops (helpers without
    ``helper_classes``; see :func:`smear_helper_sets` for the multi-class one) and
    validation eval items for one BCCD fold."""
    items = sd.load_bccd()
    train, val = sd.bccd_split(items, val_fold)
    one_class = config.helper_enabled and not config.multiclass
    return {
        "unet_train": [smear_sample(i, config) for i in train] if unet else [],
        "unet_val": [smear_sample(i, config) for i in val] if unet else [],
        "helper_train": smear_helper_crops(train, config) if one_class else None,
        "helper_val": smear_helper_crops(val, config, negatives_per_image=0) if one_class else None,
        # only images with a subtype label can be scored (others may hide an unlabelled eosinophil)
        "eval_val": [smear_eval_item(i) for i in val if i.subtype is not None],
        "wbc_val": [smear_wbc_eval_item(i) for i in val],
    }


# --------------------------------------------------------------------------- the multi-class smear helper

#: The multi-class helper's classes: PBC's eight (``ig``: immature granulocytes) and
#: ``other`` (red cells, background: not a white cell).
SMEAR_CLASSES = ["eosinophil", "neutrophil", "lymphocyte", "monocyte", "basophil", "ig", "erythroblast",
                 "platelet", "other"]
#: Left out of the differential's percentages: not white cells.
SMEAR_NOT_WHITE_CELLS = ["erythroblast", "platelet", "other"]
#: The committed blind audit of BCCD's labels (scripts/audit_eosinophil_labels.py).
AUDIT_PATH = Path(__file__).resolve().parents[2] / "data" / "results" / "eosinophil_label_audit.json"


def bccd_audit_grades(path: Path = AUDIT_PATH) -> dict[str, str]:
    """File name -> the audit's grade (G granules, P pink, N neutrophil-like) of its labelled cell
    (the eosinophils' first-round grade; every neutrophil and monocyte)."""
    import json

    cells = json.loads(Path(path).read_text())["cells"]
    return {c["filename"]: c["grade"] for c in cells}


def bccd_label_kept(subtype: str, grade: str | None) -> bool:
    """Whether a BCCD white cell trains the helper: its label is kept unless the
    blind audit saw something else. Eosinophils need visible granules (G);
    neutrophils must look like neutrophils (N: the 21 pink ones are left out);
    lymphocytes, monocytes and the basophil are kept (the audit saw nothing
    to contradict them)."""
    if subtype == "eosinophil":
        return grade == "G"
    if subtype == "neutrophil":
        return grade == "N"
    return subtype in SMEAR_CLASSES


def pbc_crops(cells: list[sd.PbcCell], config: ModelConfig, *, other_every: int = 4, seed: int = 0):
    """Helper crops of PBC cells (their centres), plus an ``other`` crop (red
    cells beside the labelled cell, 11 um off-centre diagonally) from every
    ``other_every``-th image."""
    from eosdetect.training.helper import CropSet

    classes = config.helper_classes
    rng = np.random.default_rng(seed)
    crops, labels, names = [], [], []
    offset = 11.0 / sd.PBC_PIXEL_SIZE_UM
    for k, cell in enumerate(cells):
        image = read_image(cell.path)
        centre = np.array([image.shape[1] / 2 - 0.5, image.shape[0] / 2 - 0.5])
        pts, labs = [centre], [classes.index(cell.cls)]
        if other_every and k % other_every == 0 and "other" in classes:
            pts.append(centre + offset * rng.choice([-1, 1], size=2))
            labs.append(classes.index("other"))
        crops.append(helper_crops(image, config, np.array(pts), sd.PBC_PIXEL_SIZE_UM, extra=HELPER_CROP_EXTRA))
        labels += labs
        names += [cell.name] * len(labs)
    return CropSet(np.concatenate(crops), labels, sources=["pbc"] * len(labels), names=names)


def bccd_crops(items: list[sd.BccdImage], config: ModelConfig, *, grades: dict[str, str] | None = None,
               others: bool = True, seed: int = 0):
    """Helper crops of BCCD's subtype-labelled white cells whose label the audit
    keeps (:func:`bccd_label_kept`; every label when ``grades`` is None), plus
    one red cell or platelet per image as ``other``."""
    from eosdetect.training.helper import CropSet

    classes = config.helper_classes
    rng = np.random.default_rng(seed)
    crops, labels, names = [], [], []
    for item in items:
        pts, labs = [], []
        if item.subtype is not None and (grades is None or bccd_label_kept(item.subtype, grades.get(item.name))):
            b = item.subtype_box
            pts.append(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))
            labs.append(classes.index(item.subtype))
        if others and len(item.other_boxes) and "other" in classes:
            ob = item.other_boxes[rng.integers(len(item.other_boxes))]
            pts.append(((ob[0] + ob[2]) / 2, (ob[1] + ob[3]) / 2))
            labs.append(classes.index("other"))
        if not pts:
            continue
        crops.append(helper_crops(read_image(item.path), config, np.array(pts), sd.BCCD_PIXEL_SIZE_UM,
                                  extra=HELPER_CROP_EXTRA))
        labels += labs
        names += [item.name] * len(labs)
    return CropSet(np.concatenate(crops), labels, sources=["bccd"] * len(labels), names=names)


def smear_helper_sets(config: ModelConfig, val_fold: int = 0) -> dict:
    """The multi-class helper's crops: PBC's training and validation split
    (:func:`eosdetect.training.shared_data.load_pbc`), and BCCD's cells of the training
    folds (labels the audit keeps) and of the validation fold (every label)."""
    grades = bccd_audit_grades()
    cells = sd.load_pbc()
    pbc = pbc_crops(cells, config)
    val_names = {c.name for c in cells if c.val}
    is_val = np.array([n in val_names for n in pbc.names])
    train_items, val_items = sd.bccd_split(sd.load_bccd(), val_fold)
    return {
        "pbc_train": pbc.subset(~is_val),
        "pbc_val": pbc.subset(is_val),
        "bccd_train": bccd_crops(train_items, config, grades=grades),
        "bccd_val": bccd_crops(val_items, config, grades=None, others=False),
    }


def train_smear_helper_base(config: ModelConfig, tcfg, sets: dict, work_dir, verbose: int = 2):
    """Stage 1: the helper trained on PBC alone (early stopping on PBC's validation split)."""
    from eosdetect.training.helper import train_multiclass_helper

    return train_multiclass_helper(config, tcfg, sets["pbc_train"], sets["pbc_val"], Path(work_dir) / "base",
                                   verbose=verbose)


def train_smear_helper_two_labs(config: ModelConfig, tcfg, sets: dict, base, work_dir, *,
                                second_lab=None, verbose: int = 2):
    """Stage 2: ``base`` (stage 1) fine-tuned on both labs, PBC's training crops
    and BCCD's (``second_lab``, default ``sets["bccd_train"]``) repeated
    ``helper_second_lab_repeat`` times, for ``helper_finetune_epochs`` epochs of
    ``helper_finetune_steps_per_epoch`` steps;
    the last epoch is kept (BCCD's validation fold is not looked at)."""
    from eosdetect.training.helper import CropSet, train_multiclass_helper

    second = sets["bccd_train"] if second_lab is None else second_lab
    data = CropSet.concat([sets["pbc_train"]] + [second] * tcfg.helper_second_lab_repeat)
    return train_multiclass_helper(config, tcfg, data, None, Path(work_dir) / "two_labs", init=base,
                                   epochs=tcfg.helper_finetune_epochs,
                                   learning_rate=tcfg.helper_finetune_learning_rate,
                                   steps_per_epoch=tcfg.helper_finetune_steps_per_epoch, verbose=verbose)


#: A candidate within this distance of a single-cell image's centre is its labelled cell.
CELL_MATCH_RADIUS_UM = 4.0
#: What a labelled cell is called when the U-Net returns no candidate on it.
MISSED = "(not found)"


def _called(res, k: int, threshold: float) -> str:
    """The class ``detect``'s result gives candidate ``k``: its class for a
    multi-class helper, else ``counted`` or ``not counted`` by ``threshold``."""
    if res.candidate_class is not None:
        return res.class_names[int(res.candidate_class[k])]
    return "counted" if res.candidates.score[k] >= threshold else "not counted"


def call_single_cells(model, cells: list[sd.PbcCell], *, pixel_size_um: float = sd.PBC_PIXEL_SIZE_UM,
                      progress=None) -> list[dict]:
    """Run the whole pipeline (``detect``) on single-cell images and say what it
    calls the labelled cell: the class of the candidate nearest the centre
    (within :data:`CELL_MATCH_RADIUS_UM`), or :data:`MISSED`.

    Returns one ``{"name", "true", "called", "counted", "score"}`` per cell
    (``score``: the helper's probability of the counted class; 0 when missed).
    """

    threshold = model.thresholds.helper_threshold if model.config.helper_enabled else 0.0
    out = []
    for cell in cells:
        image = read_image(cell.path)
        res = model.detect(image, pixel_size_um=pixel_size_um)
        called, counted, score = MISSED, False, 0.0
        if len(res.candidates):
            d = np.hypot(res.candidates.x - (image.shape[1] / 2 - 0.5), res.candidates.y - (image.shape[0] / 2 - 0.5))
            k = int(np.argmin(d))
            if d[k] * pixel_size_um <= CELL_MATCH_RADIUS_UM:
                called = _called(res, k, threshold)
                score = float(res.candidates.score[k])
                counted = bool(score >= threshold)
        out.append({"name": cell.name, "true": cell.cls, "called": called, "counted": counted, "score": score})
        if progress:
            progress()
    return out


def call_bccd_cells(model, items: list[sd.BccdImage], *, pixel_size_um: float = sd.BCCD_PIXEL_SIZE_UM,
                    grades: dict[str, str] | None = None) -> list[dict]:
    """Run the pipeline on BCCD's subtype-labelled photos: per photo, the
    labelled cell's subtype and audit grade, what the candidate inside its box
    nearest its centre is called (or :data:`MISSED`), and how many cells were
    counted inside and outside the box (for detection P/R/F1 against the labels)."""

    threshold = model.thresholds.helper_threshold if model.config.helper_enabled else 0.0
    out = []
    for item in items:
        if item.subtype is None:
            continue
        res = model.detect(read_image(item.path), pixel_size_um=pixel_size_um)
        b = item.subtype_box
        c = res.candidates
        inside = (c.x >= b[0]) & (c.x <= b[2]) & (c.y >= b[1]) & (c.y <= b[3])
        called = MISSED
        if inside.any():
            d = np.where(inside, np.hypot(c.x - (b[0] + b[2]) / 2, c.y - (b[1] + b[3]) / 2), np.inf)
            called = _called(res, int(np.argmin(d)), threshold)
        det = res.detections
        det_in = (det.x >= b[0]) & (det.x <= b[2]) & (det.y >= b[1]) & (det.y <= b[3])
        counted_in = bool(det_in.any())
        out.append({"name": item.name, "true": item.subtype, "grade": (grades or {}).get(item.name),
                    "called": called, "counted_on_cell": counted_in,
                    "counted_elsewhere": int((~det_in).sum()) + max(int(det_in.sum()) - 1, 0)})
    return out


def confusion(calls: list[dict], classes: list[str] | None = None) -> dict:
    """``{true class: {called class: n}}`` of :func:`call_single_cells` / :func:`call_bccd_cells` rows."""
    table: dict[str, dict[str, int]] = {}
    for r in calls:
        row = table.setdefault(r["true"], {})
        row[r["called"]] = row.get(r["called"], 0) + 1
    order = classes or sorted(table)
    return {t: dict(sorted(table[t].items(), key=lambda kv: -kv[1])) for t in order if t in table}


def single_cell_scores(calls: list[dict], counted_class: str = "eosinophil", threshold: float | None = None) -> dict:
    """Precision, recall and F1 of counting ``counted_class`` among labelled single cells
    (each cell is counted or not; a cell not found is not counted). ``threshold``
    re-decides "counted" from each row's score."""
    from eosdetect.core.metrics import prf

    counted = [r["counted"] if threshold is None else (r["called"] != MISSED and r["score"] >= threshold)
               for r in calls]
    tp = sum(c and r["true"] == counted_class for c, r in zip(counted, calls))
    fp = sum(c and r["true"] != counted_class for c, r in zip(counted, calls))
    fn = sum((not c) and r["true"] == counted_class for c, r in zip(counted, calls))
    return {"n_cells": len(calls), "tp": tp, "fp": fp, "fn": fn, **prf(tp, fp, fn)}


def bccd_scores(calls: list[dict]) -> dict:
    """Eosinophil figures of :func:`call_bccd_cells` rows.

    ``labels``: detection P/R/F1 against BCCD's labels as they are (a count on
    the eosinophil's box is a true positive, every other count a false
    positive). ``audit``: recall on the eosinophils the blind audit grades
    granular (G), and the share of neutrophils, lymphocytes and monocytes
    whose own cell is counted.
    """
    from eosdetect.core.metrics import prf

    eos = [r for r in calls if r["true"] == "eosinophil"]
    tp = sum(r["counted_on_cell"] for r in eos)
    fn = len(eos) - tp
    fp = sum(r["counted_elsewhere"] for r in calls) + sum(r["counted_on_cell"] for r in calls if r["true"] != "eosinophil")
    g = [r for r in eos if r.get("grade") == "G"]
    look_alikes = [r for r in calls if r["true"] in ("neutrophil", "lymphocyte", "monocyte")]
    by_grade = {}
    for grade in ("G", "P", "N"):
        cells = [r for r in eos if r.get("grade") == grade]
        if cells:
            by_grade[grade] = {"eosinophils": len(cells), "counted": sum(r["counted_on_cell"] for r in cells)}
    per_class = {}
    for cls in ("neutrophil", "lymphocyte", "monocyte", "basophil"):
        cells = [r for r in calls if r["true"] == cls]
        if cells:
            per_class[cls] = {"cells": len(cells), "counted": sum(r["counted_on_cell"] for r in cells)}
    return {
        "labels": {"n_images": len(calls), "tp": tp, "fp": fp, "fn": fn, **prf(tp, fp, fn)},
        "audit": {
            "recall_granular": round(sum(r["counted_on_cell"] for r in g) / len(g), 4) if g else None,
            "granular_eosinophils": len(g),
            "look_alikes_counted": sum(r["counted_on_cell"] for r in look_alikes),
            "look_alikes": len(look_alikes),
            "look_alike_rate": round(sum(r["counted_on_cell"] for r in look_alikes) / len(look_alikes), 4)
            if look_alikes else None,
            "eosinophils_by_grade": by_grade,
            "other_classes": per_class,
        },
    }


def pbc_report(model, cells: list[sd.PbcCell] | None = None, calls: list[dict] | None = None) -> dict:
    """Eosinophil scores and confusion matrix of ``model`` on PBC's validation cells (whole pipeline)."""
    calls = calls if calls is not None else call_single_cells(model, cells or [c for c in sd.load_pbc() if c.val])
    return {"scores": single_cell_scores(calls, model.config.class_name),
            "confusion": confusion(calls, SMEAR_CLASSES)}


def bccd_report(model, items: list[sd.BccdImage]) -> dict:
    """Eosinophil scores (against the labels, and judged with the audit) and confusion matrix on BCCD photos."""
    calls = call_bccd_cells(model, items, grades=bccd_audit_grades())
    return {**bccd_scores(calls), "confusion": confusion(calls, SMEAR_CLASSES)}


def fit_smear_helper_threshold(model, grid: list[float]):
    """The counting threshold with the best eosinophil F1 on PBC's validation
    split (pathologists' labels), and the PBC report at it (with the F1 at
    every threshold of ``grid``). ``model.thresholds`` is set to it."""
    calls = call_single_cells(model, [c for c in sd.load_pbc() if c.val])
    curve = [{"helper_threshold": t, **single_cell_scores(calls, model.config.class_name, t)} for t in grid]
    best = max(curve, key=lambda r: (r["f1"], -abs(r["helper_threshold"] - 0.5)))
    thr = model.thresholds.replace(helper_threshold=best["helper_threshold"])
    model.thresholds = thr  # classes are assigned at the threshold: the confusion matrix is made again
    report = pbc_report(model)
    report["helper_threshold_curve"] = curve
    return thr, {"pbc_validation": report}


# --------------------------------------------------------------------------- descriptions, baselines, cards


def nuclei_data_description() -> dict:
    train, val = sd.monuseg_split(sd.load_monuseg())
    return {
        "dataset": "MoNuSeg 2018 training set (TCGA H&E, 40x, 1000x1000 tiles, 0.25 um/px), CC BY-NC-SA 4.0",
        "train_images": [i.name for i in train],
        "validation_images": [i.name for i in val],
        "targets": "nuclei with a 1-px gap between touching ones (from the instance masks; on binary-only "
                   "tiles merged blobs are first split by a distance-transform watershed)",
    }


def smear_data_description(fold: int, config: ModelConfig | None = None) -> dict:
    items = sd.load_bccd()
    train, val = sd.bccd_split(items, fold)
    scored = [i for i in val if i.subtype is not None]
    bccd = "BCCD (Shenggan/BCCD_Dataset), Wright/Giemsa peripheral blood smears, 640x480, MIT licence"
    split = (f"5 folds stratified by white-cell subtype (stable hash order, eosdetect/training/shared_data.py); "
             f"validation fold {fold}, training folds the rest")
    common = {
        "train_images": len(train),
        "validation_images": [i.name for i in scored],
        "validation_eosinophils": sum(i.subtype == "eosinophil" for i in scored),
        "validation_other_white_cells": sum(i.subtype not in (None, "eosinophil") for i in scored),
    }
    if config is None or not config.multiclass:
        red_negatives = config is None or red_cell_negatives(config) > 0
        return {"dataset": bccd, "split": split, **common,
                "unet_targets": "every WBC box (ellipse inscribed, 90%) is foreground",
                "helper_targets": "eosinophil WBC boxes positive; other labelled white cells "
                                  + ("and one red cell or platelet per image " if red_negatives else "")
                                  + "negative; images without a subtype label unused"}
    return {
        "dataset": f"{bccd}; and for the helper PBC (Acevedo A, Merino A, Alferez S, Molina A, Boldu L, "
                   "Rodellar J. A dataset of microscopic peripheral blood cell images for development of automatic "
                   "recognition systems. Data in Brief 30, 105474, 2020; Hospital Clinic de Barcelona, CellaVision "
                   "DM96, May-Gruenwald-Giemsa), CC BY 4.0: a subset of 6,200 cells labelled by clinical "
                   "pathologists",
        "pixel_sizes": f"one ruler, the {sd.RED_CELL_DIAMETER_UM} um red cell: BCCD {sd.BCCD_PIXEL_SIZE_UM} "
                       f"um/px, PBC {sd.PBC_PIXEL_SIZE_UM} um/px",
        "split": f"BCCD: {split}; PBC: {sd.PBC_VAL_FRACTION:.0%} of each class held out by a stable hash (no "
                 "patient identifiers: optimistic)",
        **common,
        "unet_targets": "every BCCD WBC box (ellipse inscribed, 90%) is foreground (the U-Net of version 1.1.0)",
        "helper_targets": "stage 1: PBC's training cells, their class, plus an 'other' crop of red cells beside "
                          "every fourth; stage 2: the same with BCCD's subtype-labelled white cells of the training "
                          "folds, keeping only labels the blind audit agrees with (eosinophils graded G, "
                          "neutrophils graded N, all lymphocytes, monocytes, basophils), and one red cell or "
                          "platelet per photo as 'other'",
    }


def matching_description(recipe: str) -> str:
    if recipe == "nuclei-he":
        return (f"one-to-one Hungarian matching; a detection may match a true nucleus if it lies on its "
                f"instance mask or within {NUCLEI_MATCH_RADIUS_UM} um of its centroid")
    return ("one-to-one Hungarian matching; a detection may match the true eosinophil if its centre lies "
            "inside the eosinophil's labelled box; every detection on an image without an eosinophil is a "
            "false positive")


def classical_nuclei_baseline(items: list[EvalItem], grid: dict | None = None) -> dict:
    """Score the classical pipeline (:func:`eosdetect.core.candidates.classical_nuclei`)
    with its parameters fitted on the same items by the same pooled F1."""
    import itertools

    from eosdetect.core.candidates import classical_nuclei
    from eosdetect.core.metrics import summarize

    grid = grid or {"threshold_offset": [-0.05, 0.0, 0.05], "min_distance_um": [2.0, 3.0], "seed_h_um": [0.25, 0.5]}
    keys = list(grid)
    best = None
    for values in itertools.product(*[grid[k] for k in keys]):
        params = dict(zip(keys, values))
        results = []
        for it in items:
            _, det = classical_nuclei(it.image, pixel_size_um=sd.MONUSEG_PIXEL_SIZE_UM, **params)
            results.append(it.match(det.xy))
        s = summarize(results)
        if best is None or s["f1"] > best["summary"]["f1"]:
            best = {"summary": s, "params": params}
    best["method"] = ("haematoxylin channel (rgb2hed), Gaussian smoothing, Otsu threshold, opening, distance "
                      "transform, h-maxima seeds, watershed, area filter; parameters fitted on the validation tiles")
    return best


def eosin_rule_baseline(model, items: list[EvalItem]) -> dict:
    """Two-stage baseline without the helper: the model's U-Net finds white
    cells, and a cell counts as an eosinophil when its mean eosin concentration
    (colour deconvolution, ``rgb2hed``) is above a threshold fitted on the same
    items by F1 — the "orange-red granules" rule a person would try first."""
    from skimage.color import rgb2hed

    from eosdetect.core.metrics import summarize
    from eosdetect.core.postprocess import detections_from_labels

    cfg = model.config
    dets = []
    for it in items:
        pmap = model.predict_prob(it.image)
        labels, _ = model.segment(pmap)
        eosin = rgb2hed(resize(it.image, cfg.scale_for(None)))[..., 1]
        dets.append(detections_from_labels(labels, eosin).rescaled(pmap.factors))
    scores = np.concatenate([d.score for d in dets]) if dets else np.zeros(0)
    best = None
    for t in np.unique(np.quantile(scores, np.linspace(0, 1, 101))) if len(scores) else []:
        s = summarize([it.match(d.subset(d.score >= t).xy) for it, d in zip(items, dets)])
        if best is None or s["f1"] > best["summary"]["f1"]:
            best = {"summary": s, "params": {"eosin_threshold": round(float(t), 5)}}
    best = best or {"summary": summarize([it.match(np.zeros((0, 2))) for it in items]), "params": {}}
    best["method"] = ("U-Net white-cell candidates, counted when their mean eosin concentration (rgb2hed) "
                      "exceeds a threshold fitted on the validation images")
    return best


def baselines(recipe: str, items: list[EvalItem], model=None) -> dict:
    if recipe == "nuclei-he":
        return {"baseline_classical": classical_nuclei_baseline(items)}
    if recipe == "eosinophil-smear" and model is not None:
        return {"baseline_eosin_rule": eosin_rule_baseline(model, items)}
    return {}


LIMITS = {
    "nuclei-he": [
        "Trained on 25 tiles of MoNuSeg 2018 (TCGA, 40x, 7 organs); other stains, scanners and "
        "magnifications are untested. Give --pixel-size for images not at about 0.25 um/px.",
        "17 of the 30 MoNuSeg tiles have only binary masks in which touching nuclei merge; they were split "
        "by a distance-transform watershed for training, which is imperfect in crowded tissue.",
        "Counts are off by 5-16% per validation tile, above the 8% aimed for, with mixed signs: pale nuclei "
        "that the annotators marked are missed on two tiles, faint ones they left unmarked are counted on "
        "two others (a blind look at the error crops agrees). Neither a network at full 40x resolution "
        "(data/results/nuclei_fullres.json) nor perfect splitting of touching nuclei (10.1%) nor any "
        "threshold setting (10.3% at best) reaches 8% (data/results/nuclei_error_audit.json).",
        "Validation is 5 tiles (about 2,000 nuclei), one per organ group; thresholds were fitted on them, "
        "so expect slightly lower figures on new tissue.",
    ],
    "eosinophil-smear": [
        "For Wright/Giemsa or May-Gruenwald-Giemsa peripheral blood smears photographed at 100x oil; not for "
        "H&E tissue sections, where eosinophils look different.",
        "Neither training set publishes its pixel size: both are measured on red cells (7.5 um), BCCD at 0.08 "
        "and PBC at 0.10 um/px; inputs are assumed to be 0.08 um/px. Give --pixel-size (measure a red cell if "
        "unsure); a pixel size 20% off changes the figures little (metrics.json, transfer.pixel-size).",
        "The helper was trained on two labs (PBC, BCCD). A third lab's stain, camera or focus can still shift "
        "its calls: check a few dozen of your cells with prelabel and evaluate, and adapt it with "
        "`eosdetect adapt` from your corrected labels (minutes on a CPU).",
        "BCCD's subtype labels are noisy: in the blind visual audit (scripts/audit_eosinophil_labels.py) 35 of "
        "its 64 labelled eosinophils show orange-red granules, 18 only pink cytoplasm and 11 look like "
        "neutrophils. The helper learnt from the granular ones of its training folds only (and from the "
        "neutrophils that look like neutrophils), so it counts cells with visible granules and leaves the "
        "others: its F1 against BCCD's labels as they are stays below what it reaches on PBC's pathologist "
        "labels.",
        "PBC has no patient identifiers: its validation split may share patients with training, so its "
        "figures are optimistic; BCCD, another lab, is the honest check.",
        "The differential names PBC's classes: basophils, monocytes and immature granulocytes (ig) are the "
        "classes it confuses most (see the confusion matrices); platelets are mostly not found by the U-Net, "
        "which was trained on white cells.",
        "Only BCCD photos with exactly one labelled white cell and one subtype label are scored.",
    ],
}


def bundled_card(config: ModelConfig, metrics: dict) -> str:
    """The MODEL_CARD.md of a model built by a recipe here: the generic card
    (:func:`eosdetect.models.card.model_card`) with the recipe's limits and,
    for the multi-class smear helper, its sections on other labs."""
    from eosdetect.models.card import model_card

    return model_card(config, metrics, limits=LIMITS.get(config.training.get("recipe")),
                      sections=transfer_card_lines(config, metrics))


def _confusion_table(conf: dict, classes: list[str]) -> list[str]:
    """A markdown confusion matrix (rows: true class; columns: what the model called it)."""
    cols = [c for c in classes + [MISSED] if any(c in row for row in conf.values())]
    short = {MISSED: "not found"}
    lines = ["| true \\ called | " + " | ".join(short.get(c, c) for c in cols) + " |",
             "| --- |" + " --- |" * len(cols)]
    for true, row in conf.items():
        lines.append(f"| {true} | " + " | ".join(str(row.get(c, 0)) for c in cols) + " |")
    return lines


def _bccd_row(label: str, r: dict) -> str:
    lab, aud = r["labels"], r["audit"]
    from eosdetect.core.metrics import fmt_rate

    return (f"| {label} | {fmt_rate(lab['precision'])} | {fmt_rate(lab['recall'])} | {lab['f1']:.3f} | "
            f"{fmt_rate(aud['recall_granular'])} ({aud['granular_eosinophils']}) | "
            f"{aud['look_alikes_counted']} of {aud['look_alikes']} |")


def transfer_card_lines(config: ModelConfig, metrics: dict) -> list[str]:
    """The model card's sections on a multi-class helper: PBC's validation split,
    BCCD judged with the audit, the transfer experiments (if recorded)."""
    if not config.multiclass or "pbc_validation" not in metrics:
        return []
    from eosdetect.core.metrics import fmt_rate

    pv = metrics["pbc_validation"]
    s = pv["scores"]
    lines = ["", "## The helper across labs", "",
             f"PBC validation split ({s['n_cells']} cells, pathologists' labels; whole pipeline at "
             f"{sd.PBC_PIXEL_SIZE_UM} um/px; optimistic, PBC has no patient identifiers): eosinophil precision "
             f"{fmt_rate(s['precision'])}, recall {fmt_rate(s['recall'])}, F1 {s['f1']:.3f}.", ""]
    lines += _confusion_table(pv["confusion"], config.helper_classes)
    header = ["", "BCCD (another lab), against its labels as they are and judged with the committed blind audit "
              "(recall on the eosinophils graded granular, G; neutrophils, lymphocytes and monocytes counted):", "",
              "| setting | precision | recall | F1 (labels) | recall, G | look-alikes counted |",
              "| --- | --- | --- | --- | --- | --- |"]
    rows = []
    if "bccd_validation_cells" in metrics:
        rows.append(_bccd_row("validation fold 0", metrics["bccd_validation_cells"]))
    t = metrics.get("transfer", {})
    if "crossval" in t:
        rows.append(_bccd_row("five-fold cross-validation (277 photos)", t["crossval"]))
    if "pbc-only" in t:
        rows.append(_bccd_row("leave BCCD out (PBC-only helper)", t["pbc-only"]["bccd_all"]))
    lines += header + rows if rows else []
    if "crossval" in t:
        lines += ["", "What it calls BCCD's labelled cells (five-fold cross-validation):", ""]
        lines += _confusion_table(t["crossval"]["confusion"], config.helper_classes)
    if "bccd-only" in t:
        b = t["bccd-only"]["pbc_validation"]["scores"]
        lines += ["", f"Leave PBC out (a helper trained on BCCD alone) on PBC's validation split: eosinophil "
                  f"precision {fmt_rate(b['precision'])}, recall {fmt_rate(b['recall'])}, F1 {b['f1']:.3f}."]
    if "pixel-size" in t:
        rows = t["pixel-size"]["rows"]
        lines += ["", "The pixel size given off by a factor (eosinophil F1 on PBC's validation split; on BCCD's "
                  "fold 0 against its labels): " + "; ".join(
                      f"x{r['factor']:g}: {r['pbc_validation_f1']:.3f}, {r['bccd_fold0_f1_labels']:.3f}" for r in rows)
                  + "."]
    if "adapt" in t:
        lines += ["", "Adapting to a new lab (`eosdetect adapt`, from the PBC-only helper; BCCD's remaining "
                  "photos, mean of 3 draws):", "",
                  "| BCCD eosinophils labelled | F1 (labels) | recall, G | look-alikes counted (share) |",
                  "| --- | --- | --- | --- |"]
        for r in t["adapt"]["summary"]:
            lines.append(f"| {r['eosinophils']} | {r['f1_labels']:.3f} | {fmt_rate(r['recall_granular'])} | "
                         f"{fmt_rate(r['look_alike_rate'])} |")
    return lines
