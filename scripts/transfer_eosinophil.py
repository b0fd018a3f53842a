#!/usr/bin/env python
"""How the eosinophil model's multi-class helper transfers between labs, and how it adapts to a new one.

    python scripts/train_bundled.py configs/eosinophil-smear.yaml -o eosdetect/models/bundled/eosinophil-smear
    python scripts/transfer_eosinophil.py configs/eosinophil-smear.yaml \\
        -m eosdetect/models/bundled/eosinophil-smear --work-dir build/train/eosinophil-smear \\
        -o data/results/eosinophil_transfer.json [--steps all] [--record]

Every figure runs the whole pipeline (the bundled U-Net finds the cells, the
helper names them) on real photos at their pixel size on the red-cell ruler
(BCCD 0.08, PBC 0.10 um/px) and asks what the labelled cell is called:

``pbc-only``
    Leave BCCD out: the helper after its first stage (PBC alone, kept by
    ``train_bundled.py`` in the work folder), on all 277 subtype-labelled
    BCCD photos, and on PBC's validation split.
``crossval``
    BCCD's 277 photos, five-fold: for fold k the first stage is fine-tuned on
    PBC and BCCD's other four folds (``recipes.train_smear_helper_two_labs``;
    fold 0's is the bundled helper), then fold k is counted. Pooled.
``bccd-only``
    Leave PBC out: a helper trained on BCCD's audit-kept cells alone, on PBC's
    validation split.
``colour``
    The colour helper of version 1.1.0 (``--colour-model``) on PBC's
    validation split; its BCCD figures come from its committed
    cross-validation and audit (``data/results/crossval_eosinophil.json``).
``pixel-size``
    The bundled model with the pixel size given 20% too small or too large,
    on PBC's validation split and BCCD's validation fold.
``adapt``
    Adapting to a new lab: the PBC-only helper fine-tuned by ``eosdetect
    adapt``'s code (``helper_training.adapt_helper``) on 10, 25 and 50 BCCD
    eosinophils and the other white cells of the same draw of photos (BCCD's
    own proportion, 3.3 others per eosinophil; labels as they are, as a lab's
    annotator gives them), then judged on the remaining photos; three draws
    each. Plotted to ``<out stem>_adapt.png``.

BCCD's figures are given against its labels as they are and judged with the
committed blind audit (recall on the eosinophils graded G; share of
neutrophils, lymphocytes and monocytes counted). ``--record`` writes them into
the model's ``metrics.json`` (key ``transfer``) and regenerates its card.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.io import atomic_write_text, read_image, write_json  # noqa: E402
from eosdetect.models.helper_cnn import build_helper  # noqa: E402
from eosdetect.models.model import Model  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402
from eosdetect.training import recipes  # noqa: E402
from eosdetect.training import shared_data as sd  # noqa: E402
from eosdetect.training.labelset import LabelledImage  # noqa: E402
from eosdetect.training.train import TrainConfig, load_config_file, reproducible_threads  # noqa: E402

STEPS = ("pbc-only", "crossval", "bccd-only", "colour", "adapt", "pixel-size")
#: ``pixel-size``: the given pixel size off by these factors.
PIXEL_SIZE_ERRORS = (0.8, 1.0, 1.2)
ADAPT_SIZES = (10, 25, 50)
ADAPT_DRAWS = 3
BASE_HELPER_WEIGHTS = "helper_pbc_only.weights.h5"  # as scripts/train_bundled.py names it

log = logging.getLogger("transfer")


def with_helper(model: Model, helper) -> Model:
    """``model``'s U-Net, config and thresholds with another helper network."""
    m = Model.in_memory(model.config, model.thresholds, model.unet, helper)
    m.path = model.path
    return m


def pbc_only_helper(model: Model, tcfg: TrainConfig, work: Path):
    """The first-stage (PBC-only) helper: from the work folder, or trained again."""
    path = work / "helper" / BASE_HELPER_WEIGHTS
    helper = build_helper(model.config)
    if path.is_file():
        helper.load_weights(str(path))
        return helper
    log.info("%s missing: training the PBC-only helper again", path)
    sets = recipes.smear_helper_sets(model.config, 0)
    helper = recipes.train_smear_helper_base(model.config, tcfg, sets, work / "helper", verbose=0)
    helper.save_weights(str(path))
    return helper


def step_pbc_only(model, tcfg, work, items):
    m = with_helper(model, pbc_only_helper(model, tcfg, work))
    return {"bccd_all": recipes.bccd_report(m, items), "pbc_validation": recipes.pbc_report(m)}


def step_crossval(model, tcfg, work, items):
    base = pbc_only_helper(model, tcfg, work)
    grades = recipes.bccd_audit_grades()
    calls, per_fold = [], []
    sets = None
    for k in range(sd.BCCD_FOLDS):
        train_items, test_items = sd.bccd_split(items, k)
        if k == 0:  # the bundled helper was fine-tuned without fold 0
            helper = model.helper
        else:
            sets = sets or recipes.smear_helper_sets(model.config, 0)
            sets["bccd_train"] = recipes.bccd_crops(train_items, model.config, grades=grades)
            helper = recipes.train_smear_helper_two_labs(model.config, tcfg, sets, base, work / f"crossval{k}",
                                                         verbose=0)
        fold_calls = recipes.call_bccd_cells(with_helper(model, helper), test_items, grades=grades)
        per_fold.append({"fold": k, **recipes.bccd_scores(fold_calls)["labels"]})
        calls += fold_calls
        log.info("crossval fold %d: %s", k, per_fold[-1])
    return {**recipes.bccd_scores(calls), "confusion": recipes.confusion(calls, recipes.SMEAR_CLASSES),
            "per_fold": per_fold}


def step_bccd_only(model, tcfg, work, items):
    from eosdetect.training.helper import train_multiclass_helper

    crops = recipes.bccd_crops(items, model.config, grades=recipes.bccd_audit_grades())
    steps = max(10, len(crops) // tcfg.helper_batch_size)
    helper = train_multiclass_helper(model.config, tcfg, crops, None, work / "bccd_only",
                                     epochs=max(tcfg.helper_epochs * 6, 40), steps_per_epoch=steps, verbose=0)
    return {"pbc_validation": recipes.pbc_report(with_helper(model, helper)), "training_crops": len(crops)}


def step_colour(args):
    old = load_model(args.colour_model)
    scale = old.config.input_pixel_size_um / sd.BCCD_PIXEL_SIZE_UM  # its ruler: BCCD at 0.06 um/px
    cells = [c for c in sd.load_pbc() if c.val]
    calls = recipes.call_single_cells(old, cells, pixel_size_um=sd.PBC_PIXEL_SIZE_UM * scale)
    audit = json.loads(recipes.AUDIT_PATH.read_text())
    crossval = json.loads((HERE.parent / "data" / "results" / "crossval_eosinophil.json").read_text())
    fp_images = set(crossval["images_with_false_positives"])
    rows = {r["filename"]: r["subtype"] for r in sd.read_csv(sd.shared_root() / "bccd" / "wbc_subtypes.csv")}
    look = [n for n, s in rows.items() if s in ("neutrophil", "lymphocyte", "monocyte")]
    return {
        "model": f"{old.name} {old.config.version}",
        "pixel_size_um_given": round(sd.PBC_PIXEL_SIZE_UM * scale, 4),
        "pbc_validation": {"scores": recipes.single_cell_scores(calls), "confusion": recipes.confusion(calls)},
        "bccd_crossval_labels": crossval["pooled"],
        "bccd_audit": {
            "recall_granular": round(1 - audit["by_grade"]["G"]["eosinophils_missed_in_crossval"]
                                     / audit["by_grade"]["G"]["eosinophils"], 4),
            "look_alikes_with_a_false_positive": sum(n in fp_images for n in look),
            "look_alikes": len(look),
        },
    }


def step_pixel_size(model, tcfg, work, items):
    val_items = sd.bccd_split(items, 0)[1]
    cells = [c for c in sd.load_pbc() if c.val]
    grades = recipes.bccd_audit_grades()
    rows = []
    for f in PIXEL_SIZE_ERRORS:
        pbc = recipes.single_cell_scores(recipes.call_single_cells(model, cells, pixel_size_um=sd.PBC_PIXEL_SIZE_UM * f))
        bccd = recipes.bccd_scores(recipes.call_bccd_cells(model, val_items, pixel_size_um=sd.BCCD_PIXEL_SIZE_UM * f,
                                                           grades=grades))
        rows.append({"factor": f, "pbc_validation_f1": pbc["f1"], "pbc_validation": pbc,
                     "bccd_fold0_f1_labels": bccd["labels"]["f1"], "bccd_fold0": bccd})
    return {"rows": rows}


def bccd_draw(items, n_eos: int, seed: int):
    """Photos of ``n_eos`` labelled eosinophils and, in BCCD's own proportion, of other white cells."""
    rng = np.random.default_rng(seed)
    eos = [i for i in items if i.subtype == "eosinophil"]
    others = [i for i in items if i.subtype not in (None, "eosinophil")]
    n_other = int(round(n_eos * len(others) / len(eos)))
    pick = [eos[j] for j in rng.choice(len(eos), n_eos, replace=False)]
    pick += [others[j] for j in rng.choice(len(others), n_other, replace=False)]
    return pick


def labelled(item: sd.BccdImage) -> LabelledImage:
    """A BCCD photo as a lab's corrected pre-label gives it: eosinophil boxes only."""
    boxes = sd.bccd_eosinophil_truth(item)
    pts = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    return LabelledImage(item.name, item.path, None, read_image(item.path), pts.reshape(-1, 2), boxes=boxes)


def step_adapt(model, tcfg, work, items):
    from eosdetect.training.helper import adapt_helper, adaptation_crops

    base = with_helper(model, pbc_only_helper(model, tcfg, work))
    grades = recipes.bccd_audit_grades()
    subtyped = [i for i in items if i.subtype is not None]
    runs = []
    for n in ADAPT_SIZES:
        for draw in range(ADAPT_DRAWS):
            local = bccd_draw(subtyped, n, seed=1000 * n + draw)
            names = {i.name for i in local}
            rest = [i for i in subtyped if i.name not in names]
            t0 = time.time()
            crops = adaptation_crops(base, [labelled(i) for i in local], base.config)
            helper = adapt_helper(base, crops, tcfg, work / f"adapt{n}_{draw}", verbose=0)
            seconds = time.time() - t0
            scores = recipes.bccd_scores(recipes.call_bccd_cells(with_helper(model, helper), rest, grades=grades))
            runs.append({"eosinophils": n, "other_cells": len(local) - n, "draw": draw, "crops": len(crops),
                         "seconds": round(seconds, 1), "test_images": len(rest), **scores})
            log.info("adapt %d draw %d: %s %s (%.0f s)", n, draw, scores["labels"], scores["audit"], seconds)
    zero = recipes.bccd_scores(recipes.call_bccd_cells(base, subtyped, grades=grades))
    return {"zero_shot": zero, "runs": runs, "summary": adapt_summary(zero, runs)}


def adapt_summary(zero: dict, runs: list[dict]) -> list[dict]:
    """Mean over the draws of each size (size 0: the PBC-only helper on all photos)."""
    rows = [{"eosinophils": 0, "f1_labels": zero["labels"]["f1"], "recall_granular": zero["audit"]["recall_granular"],
             "look_alike_rate": zero["audit"]["look_alike_rate"]}]
    for n in sorted({r["eosinophils"] for r in runs}):
        rs = [r for r in runs if r["eosinophils"] == n]
        rows.append({"eosinophils": n,
                     "f1_labels": round(float(np.mean([r["labels"]["f1"] for r in rs])), 4),
                     "f1_labels_range": [min(r["labels"]["f1"] for r in rs), max(r["labels"]["f1"] for r in rs)],
                     "recall_granular": round(float(np.mean([r["audit"]["recall_granular"] for r in rs])), 4),
                     "look_alike_rate": round(float(np.mean([r["audit"]["look_alike_rate"] for r in rs])), 4),
                     "seconds": round(float(np.mean([r["seconds"] for r in rs])), 1)})
    return rows


def plot_adapt(summary: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a script, not the library: no display here
    import matplotlib.pyplot as plt

    n = [r["eosinophils"] for r in summary]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(n, [r["f1_labels"] for r in summary], "o-", label="F1 against BCCD's labels")
    ax.plot(n, [r["recall_granular"] for r in summary], "s-", label="recall, granular (G) eosinophils")
    ax.plot(n, [r["look_alike_rate"] for r in summary], "^-", label="look-alikes counted (share)")
    for r in summary[1:]:
        lo, hi = r["f1_labels_range"]
        ax.vlines(r["eosinophils"], lo, hi, colors="C0", alpha=0.4)
    ax.set_xlabel("BCCD eosinophils labelled for adaptation (0: PBC-only helper)")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(n)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    ax.set_title("Adapting the helper to a new lab (BCCD, remaining photos)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def record(model_dir: str, result: dict) -> None:
    model = load_model(model_dir)
    metrics = json.loads((model.path / "metrics.json").read_text())
    metrics["data"] = recipes.smear_data_description(0, model.config)  # (the description's current wording)
    metrics["transfer"] = {k: v for k, v in result.items() if k != "adapt"}
    if "crossval" in result:  # the honest BCCD figure, where `eosdetect models` and the server look for it
        cv = result["crossval"]
        metrics["crossval"] = {
            "method": "five-fold on BCCD's 277 subtype-labelled photos: for each fold the helper's second (two-lab) "
                      "stage is trained again without it (fold 0's is the bundled helper), from the same PBC-only "
                      "first stage; the bundled U-Net and thresholds; judged against the labels as they are "
                      "(scripts/transfer_eosinophil.py)",
            "folds": len(cv["per_fold"]),
            "pooled": cv["labels"],
            "f1_per_fold": [f["f1"] for f in cv["per_fold"]],
        }
    if "adapt" in result:
        metrics["transfer"]["adapt"] = {"method": "eosdetect adapt's fine-tuning of the PBC-only helper",
                                        "summary": result["adapt"]["summary"]}
    write_json(model.path / "metrics.json", metrics)
    atomic_write_text(model.path / "MODEL_CARD.md", recipes.bundled_card(model.config, metrics))
    print(f"recorded in {model.path}/metrics.json and MODEL_CARD.md")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("-m", "--model", default="eosdetect/models/bundled/eosinophil-smear")
    ap.add_argument("--work-dir", default="build/train/eosinophil-smear")
    ap.add_argument("--colour-model", default="build/eosinophil-smear-1.1.0",
                    help="version 1.1.0's model folder (git show it out of the history)")
    ap.add_argument("-o", "--out", default="data/results/eosinophil_transfer.json")
    ap.add_argument("--steps", default="all", help=f"comma-separated of {', '.join(STEPS)} (default all)")
    ap.add_argument("--record", action="store_true", help="write the figures into the model's metrics.json and card "
                    "(with --steps none: those of -o, nothing measured again)")
    args = ap.parse_args(argv)
    reproducible_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    steps = STEPS if args.steps == "all" else () if args.steps == "none" else tuple(args.steps.split(","))
    tcfg = TrainConfig.from_dict(load_config_file(args.config).get("train", {}))
    model = load_model(args.model)
    work = Path(args.work_dir)
    items = sd.load_bccd()
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.is_file() else {}
    result["method"] = " ".join(__doc__.split("\n\n")[1].split())
    result["model"] = f"{model.name} {model.config.version}"
    for step in steps:
        t0 = time.time()
        if step == "colour":
            result[step] = step_colour(args)
        else:
            fn = {"pbc-only": step_pbc_only, "crossval": step_crossval, "bccd-only": step_bccd_only,
                  "adapt": step_adapt, "pixel-size": step_pixel_size}[step]
            result[step] = fn(model, dataclasses.replace(tcfg), work, items)
        result[step]["seconds"] = round(time.time() - t0, 1)
        write_json(out, result)
        log.info("%s done in %.0f s", step, time.time() - t0)
    if "adapt" in result:
        plot_adapt(result["adapt"]["summary"], out.with_name(out.stem + "_adapt.png"))
    print(json.dumps({k: v for k, v in result.items() if k != "method"}, indent=1)[:4000])
    if args.record:
        record(args.model, result)


if __name__ == "__main__":
    main()
