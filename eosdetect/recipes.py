"""How the bundled models are built from the shared public data (BCCD, MoNuSeg).

``scripts/train_bundled.py`` calls these with a config from ``configs/``;
the real-data tests and ``scripts/evaluate_bundled.py`` use the same
validation items, so every number in a model's ``metrics.json`` can be
reproduced.
"""

from __future__ import annotations

import logging

import numpy as np

from . import shared_data as sd
from .annotations.convert import boxes_to_mask
from .annotations.masks import centroids, instances_from_binary, separate_touching
from .dataset import Sample, axis_factors, resize
from .evaluation import EvalItem
from .io import read_image
from .models.config import ModelConfig
from .postprocess import segment

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
    from .models.helper_cnn import extract_crops, helper_view

    rng = np.random.default_rng(seed)
    size = config.helper_crop_size + extra
    crops, labels = [], []
    for item in items:
        if item.subtype is None:
            continue
        image = read_image(item.path)
        small = helper_view(image, config)
        f = small.shape[1] / image.shape[1]
        b = item.subtype_box
        pts = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)]
        lab = [1 if item.subtype == "eosinophil" else 0]
        if len(item.other_boxes) and negatives_per_image:
            pick = rng.choice(len(item.other_boxes), size=min(negatives_per_image, len(item.other_boxes)), replace=False)
            for ob in item.other_boxes[pick]:
                pts.append(((ob[0] + ob[2]) / 2, (ob[1] + ob[3]) / 2))
                lab.append(0)
        xy = (np.array(pts) + 0.5) * f - 0.5
        crops.append(extract_crops(small, xy, size))
        labels.extend(lab)
    return np.concatenate(crops), np.array(labels)


def smear_data(config: ModelConfig, val_fold: int = 0):
    """U-Net samples, helper crops and validation eval items for one BCCD fold."""
    items = sd.load_bccd()
    train, val = sd.bccd_split(items, val_fold)
    return {
        "unet_train": [smear_sample(i, config) for i in train],
        "unet_val": [smear_sample(i, config) for i in val],
        "helper_train": smear_helper_crops(train, config),
        "helper_val": smear_helper_crops(val, config, negatives_per_image=0),
        # only images with a subtype label can be scored (others may hide an unlabelled eosinophil)
        "eval_val": [smear_eval_item(i) for i in val if i.subtype is not None],
        "wbc_val": [smear_wbc_eval_item(i) for i in val],
    }


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
    red_negatives = config is None or red_cell_negatives(config) > 0
    train, val = sd.bccd_split(items, fold)
    scored = [i for i in val if i.subtype is not None]
    return {
        "dataset": "BCCD (Shenggan/BCCD_Dataset), Wright/Giemsa peripheral blood smears, 640x480, MIT licence",
        "split": f"5 folds stratified by white-cell subtype (stable hash order, eosdetect/shared_data.py); "
                 f"validation fold {fold}, training folds the rest",
        "train_images": len(train),
        "validation_images": [i.name for i in scored],
        "validation_eosinophils": sum(i.subtype == "eosinophil" for i in scored),
        "validation_other_white_cells": sum(i.subtype not in (None, "eosinophil") for i in scored),
        "unet_targets": "every WBC box (ellipse inscribed, 90%) is foreground",
        "helper_targets": "eosinophil WBC boxes positive; other labelled white cells "
                          + ("and one red cell or platelet per image " if red_negatives else "")
                          + "negative; images without a subtype label unused",
    }


def matching_description(recipe: str) -> str:
    if recipe == "nuclei-he":
        return (f"one-to-one Hungarian matching; a detection may match a true nucleus if it lies on its "
                f"instance mask or within {NUCLEI_MATCH_RADIUS_UM} um of its centroid")
    return ("one-to-one Hungarian matching; a detection may match the true eosinophil if its centre lies "
            "inside the eosinophil's labelled box; every detection on an image without an eosinophil is a "
            "false positive")


def classical_nuclei_baseline(items: list[EvalItem], grid: dict | None = None) -> dict:
    """Score the classical pipeline (:func:`eosdetect.candidates.classical_nuclei`)
    with its parameters fitted on the same items by the same pooled F1."""
    import itertools

    from .candidates import classical_nuclei
    from .metrics import summarize

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

    from .metrics import summarize
    from .postprocess import detections_from_labels, segment
    from .predict import predict_probability, thresholds_in_pixels

    cfg, thr = model.config, model.thresholds
    dets = []
    for it in items:
        im = resize(it.image, cfg.scale_for(None))
        prob = predict_probability(model.predict_fn, im, cfg)
        labels = segment(prob, **thresholds_in_pixels(thr, cfg.pixel_size_um))
        eosin = rgb2hed(im)[..., 1]
        dets.append(detections_from_labels(labels, eosin).rescaled(axis_factors(it.image.shape, im.shape)))
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
        "For Wright/Giemsa peripheral blood smears photographed like BCCD (640x480, 100x oil); "
        "not for H&E tissue sections, where eosinophils look different.",
        "BCCD does not publish its pixel size: inputs are assumed to be 0.06 um/px (a white cell "
        "~200 px across). Give --pixel-size for other cameras or magnifications.",
        "BCCD's subtype labels are noisy. In a blind visual audit (scripts/audit_eosinophil_labels.py, "
        "data/results/eosinophil_label_audit.json) 35 of the 64 cells labelled eosinophil show orange-red "
        "granules, 18 only pink cytoplasm and 11 look like neutrophils; 21 and 145 of the 166 neutrophils "
        "look the same as those last two groups. Cross-validated, the model finds 34 of the 35 granular "
        "eosinophils; its misses are the other two groups. Telling the cells apart only as well as these "
        "grades gives F1 0.77 against these labels; the model does a little better within the grades, "
        "not much. Figures are measured against the labels as they are, never relabelled.",
        "The validation fold holds 13 eosinophils: one cell more or less found moves recall by 0.08, so "
        "the F1 has a wide uncertainty. Thresholds were fitted on the same fold.",
        "False positives are mostly neutrophils and monocytes with coarse or pink-tinged cytoplasm; the "
        "grey outlines in the overlay show every white cell that was considered and not counted.",
        "Only images with exactly one labelled white cell and one subtype label are scored.",
    ],
}


def _card_row(label: str, s: dict) -> str:
    """One row of the model card's validation table."""
    from .metrics import fmt_rate

    mape = f"{s['count_mape'] * 100:.1f}%" if s.get("count_mape") is not None else "n/a"
    return (f"| {label} | {fmt_rate(s['precision'])} | {fmt_rate(s['recall'])} | {s['f1']:.3f} | "
            f"{s['count_mae']:.2f} | {mape} |")


def model_card(config: ModelConfig, metrics: dict) -> str:
    v = metrics["validation"]
    # a model trained without a pixel size works at a fraction of the image size, not at um/px
    scale = (f"at 1/{config.pixel_size_um:g} of the image size" if config.sizes_in_pixels
             else f"at {config.pixel_size_um} um/px")
    helper_scale = (f"at 1/{config.helper_pixel_size_um:g} of the image size" if config.sizes_in_pixels
                    else f"at {config.helper_pixel_size_um} um/px")
    fitted_on = metrics["thresholds_fitted_on"]
    fitted = "not fitted" not in fitted_on
    lines = [
        f"# {config.name} {config.version}",
        "",
        config.description,
        "",
        "## What it does",
        "",
        f"Counts **{config.class_name}** objects. "
        + (f"A U-Net segments {config.unet_class_name} objects {scale}; "
           + ("a helper (a logistic regression on 11 colour statistics of the cell's stained pixels"
              if config.helper_kind == "colour" else "a helper (a small CNN")
           + (", on the image white-balanced so that its background is neutral grey) "
              if config.helper_white_balance else ") ")
           + f"re-scores each one on a {config.helper_crop_size}-px crop {helper_scale} and "
           f"only those above `helper_threshold` are counted."
           if config.helper_enabled else
           f"A U-Net ({config.unet_depth} poolings, {config.unet_base_filters} base filters) predicts a "
           f"probability map {scale}; distance transform + watershed split it into objects."),
        "",
        (f"Inputs are assumed to be {config.input_pixel_size_um} um/px unless `--pixel-size` says otherwise"
         + ("" if config.pixel_size_measured else " (an estimate: the training images' pixel size is not published)")
         + "."
         if not config.sizes_in_pixels else
         "Trained without a pixel size: sizes are in pixels of the training images, so use it on images "
         "taken at the same magnification and resolution."),
        "",
        "## Training data",
        "",
    ]
    for k, val in metrics["data"].items():
        if isinstance(val, list):
            val = f"{len(val)} images" if len(val) > 8 else ", ".join(map(str, val))
        elif isinstance(val, dict):
            val = ", ".join(f"{a.replace('_', ' ')} {b}" for a, b in val.items() if isinstance(b, (int, float, str)))
        lines.append(f"- {k.replace('_', ' ')}: {val}")
    t = metrics["training"]
    lines += [
        "",
        "## How it was trained",
        "",
        (f"`{t['command']}` " if t.get("command") else
         f"`python scripts/train_bundled.py configs/{_basename(t['config_file'])} -o <model folder>` ")
        +
        f"(seed {t['train']['train_seed']}; {t['seconds']['unet'] + t['seconds']['helper']:.0f} s of training "
        f"on {t['machine']}). "
        + (f"Thresholds fitted on {fitted_on}." if fitted else f"{fitted_on[0].upper()}{fitted_on[1:]}."),
        "",
        "## Validation",
        "",
        f"Matching: {metrics['matching']}.",
        "",
        "| model | precision | recall | F1 | count MAE | count error (mean relative) |",
        "| --- | --- | --- | --- | --- | --- |",
        _card_row(config.name, v),
    ]
    for key, b in metrics.items():
        if key.startswith("baseline"):
            lines.append(_card_row(f"{key.replace('baseline_', '')} baseline", b["summary"]))
    cv = metrics.get("crossval")
    if cv:
        lines.append(_card_row(f"{config.name}, {cv.get('folds', 5)}-fold cross-validation", cv["pooled"]))
        lines += ["", f"Cross-validation: {cv['method']}"]
    if v.get("tp", 0) + v.get("fn", 0) == 0:
        lines += ["", "**Not measured:** no labelled cell is among the validation images, so the figures above "
                  "say nothing of this model. Validate it on labelled images with `eosdetect evaluate`."]
    limits = LIMITS.get(config.training.get("recipe", config.name)) or [
        f"Validated on {v['n_images']} held-out image(s) of the same set it was trained on"
        + ("; the thresholds were fitted on them, so expect" if fitted else ", too few to fit its threshold on; expect")
        + " lower figures on images from other labs, stains or scanners.",
        "Check it on your own labelled images with `eosdetect evaluate` before relying on its counts.",
    ]
    lines += ["", "## Limits", ""] + [f"- {x}" for x in limits] + [""]
    return "\n".join(lines)


def _basename(p: str) -> str:
    return p.replace("\\", "/").split("/")[-1]
