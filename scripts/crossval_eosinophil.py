#!/usr/bin/env python
"""Five-fold cross-validation of the eosinophil model's helper on BCCD.

    python scripts/crossval_eosinophil.py configs/eosinophil-smear.yaml \
        -m eosdetect/models/bundled/eosinophil-smear -o build/crossval-eosinophil.json [--record]

``--record`` also writes the pooled figures into the model folder's
``metrics.json`` (key ``crossval``) and regenerates its ``MODEL_CARD.md``;
with ``--reuse`` an existing ``-o`` file is recorded without retraining.

The bundled model's validation F1 is measured on the fold its thresholds were
fitted on (and a CNN helper early-stopped on), so it is optimistic. Here every
labelled BCCD image is scored by a helper trained without it: for each fold
k, a helper of the bundled model's kind is trained on the four other folds
(a CNN helper on three, early-stopping on fold k+1, never on k), then fold k
is counted with the bundled model's U-Net and its fixed thresholds (no
refitting). The pooled precision, recall and F1 over all folds
estimate what the model does on new smears of this kind. The U-Net (white
cells, not subtypes) is the bundled one; it saw folds 1-4 in training, which
flatters white-cell detection a little but not the eosinophil decision.

The output also holds the pooled precision and recall at other helper
thresholds (the same out-of-fold scores, ``helper_threshold_curve``): what a
pre-labelling band trades between missed eosinophils and boxes to delete.
With ``--casts``, every test fold is also counted under four colour casts
(R, G, B gains of a warmer or cooler lamp, a brighter or darker exposure;
``colour_casts``): how much the counts depend on the camera's colour.
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

from eosdetect.core.colour import apply_gains  # noqa: E402
from eosdetect.core.metrics import MatchResult, summarize  # noqa: E402
from eosdetect.io import atomic_write_text, write_json  # noqa: E402
from eosdetect.models.model import Model  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402
from eosdetect.training import recipes, shared_data  # noqa: E402
from eosdetect.training.evaluation import PredictionCache, evaluate_model  # noqa: E402
from eosdetect.training.train import TrainConfig, load_config_file, reproducible_threads, train_helper  # noqa: E402

#: Counting thresholds at which the pooled out-of-fold precision and recall are also reported.
CURVE_THRESHOLDS = [float(round(t, 2)) for t in np.arange(0.05, 0.96, 0.05)]


#: Per-channel (R, G, B) gains that imitate another lamp or camera (``--casts``).
COLOUR_CASTS = {
    "warmer": (1.04, 1.0, 0.96),
    "cooler": (0.96, 1.0, 1.04),
    "brighter": (1.05, 1.05, 1.05),
    "darker": (0.95, 0.95, 0.95),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("-m", "--model", default="eosinophil-smear")
    ap.add_argument("-o", "--out", default="build/crossval-eosinophil.json")
    ap.add_argument("--work-dir", default="build/crossval-eosinophil")
    ap.add_argument("--record", action="store_true", help="write the pooled figures into the model folder")
    ap.add_argument("--reuse", action="store_true", help="record the existing -o file instead of recomputing it")
    ap.add_argument("--casts", action="store_true",
                    help="also count every test fold under four colour casts (another lamp or camera)")
    args = ap.parse_args(argv)
    if args.reuse:
        if not args.record:
            ap.error("--reuse only makes sense with --record")
        record(args.model, json.loads(Path(args.out).read_text()))
        return
    reproducible_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    cfg = load_config_file(args.config)
    tcfg = TrainConfig.from_dict(cfg.get("train", {}))
    base = load_model(args.model)
    if base.config.multiclass:
        sys.exit(f"{args.model}: this script measures a one-class helper (version 1.1.0's colour helper: "
                 "git show it out of the history); the multi-class helper is measured by "
                 "scripts/transfer_eosinophil.py")
    items = shared_data.load_bccd()
    folds = shared_data.BCCD_FOLDS
    per_image, per_fold, curve_counts, cast_counts = [], [], {}, {}
    t0 = time.time()
    for k in range(folds):
        # a CNN helper early-stops on fold k+1; a colour helper has no epochs and trains on all four
        stop_fold = (k + 1) % folds if base.config.helper_kind == "cnn" else None
        train = [i for i in items if i.fold not in (k, stop_fold)]
        stop = [i for i in items if i.fold == stop_fold]
        test = [i for i in items if i.fold == k and i.subtype is not None]
        hx, hy = recipes.smear_helper_crops(train, base.config)
        vx, vy = (recipes.smear_helper_crops(stop, base.config, negatives_per_image=0) if stop
                  else (hx[:0, :0, :0], hy[:0]))
        helper = train_helper(base.config, tcfg, hx, hy, vx, vy, Path(args.work_dir) / f"fold{k}", verbose=0)
        model = Model.in_memory(base.config, base.thresholds, base.unet, helper)
        test_items = [recipes.smear_eval_item(i) for i in test]
        cache = PredictionCache(model, test_items)
        ev = evaluate_model(model, test_items, cache=cache)
        per_fold.append({"fold": k, **ev["summary"]})
        per_image += ev["per_image"]
        for t in CURVE_THRESHOLDS:  # the same out-of-fold scores at other counting thresholds
            e = evaluate_model(model, test_items, cache=cache, thresholds=base.thresholds.replace(helper_threshold=t))
            curve_counts.setdefault(t, []).extend(MatchResult(r["tp"], r["fp"], r["fn"]) for r in e["per_image"])
        if args.casts:
            for name, gains in COLOUR_CASTS.items():
                cast_items = [dataclasses.replace(it, image=apply_gains(it.image, gains)) for it in test_items]
                e = evaluate_model(model, cast_items)
                cast_counts.setdefault(name, []).extend(MatchResult(r["tp"], r["fp"], r["fn"]) for r in e["per_image"])
        logging.info("fold %d: %s", k, ev["summary"])
    pooled = summarize([MatchResult(r["tp"], r["fp"], r["fn"]) for r in per_image])
    missed = [r["image"] for r in per_image if r["fn"]]
    false_pos = [r["image"] for r in per_image if r["fp"]]
    out = {
        "method": __doc__.strip().splitlines()[0],
        "thresholds": base.thresholds.to_dict(),
        "pooled": pooled,
        "per_fold": per_fold,
        "missed_eosinophils": missed,
        "images_with_false_positives": false_pos,
        "helper_threshold_curve": [{"helper_threshold": t, **{k: v for k, v in summarize(r).items()
                                                               if k in ("tp", "fp", "fn", "precision", "recall", "f1")}}
                                   for t, r in curve_counts.items()],
        "seconds": round(time.time() - t0, 1),
    }
    if cast_counts:
        out["colour_casts"] = {name: {"gains": list(COLOUR_CASTS[name]), **summarize(r)}
                               for name, r in cast_counts.items()}
    write_json(args.out, out)
    print(json.dumps({"pooled": pooled, "per_fold": per_fold}, indent=2))
    if args.record:
        record(args.model, out)


def record(model_dir: str, result: dict) -> None:
    """Put the pooled cross-validation figures into a model folder's metrics and card."""
    model = load_model(model_dir)
    if not (model.path / "metrics.json").is_file():
        raise SystemExit(f"{model_dir}: not a model folder with metrics.json")
    metrics = json.loads((model.path / "metrics.json").read_text())
    metrics["crossval"] = {
        "method": " ".join(next(p for p in __doc__.split("\n\n") if "Here every" in p).split()),
        "folds": len(result["per_fold"]),
        "pooled": result["pooled"],
        "f1_per_fold": [round(f["f1"], 4) for f in result["per_fold"]],
        "thresholds": result["thresholds"],
    }
    write_json(model.path / "metrics.json", metrics)
    atomic_write_text(model.path / "MODEL_CARD.md", recipes.bundled_card(model.config, metrics))
    print(f"recorded in {model.path}/metrics.json and MODEL_CARD.md")


if __name__ == "__main__":
    main()
