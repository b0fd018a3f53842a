#!/usr/bin/env python
"""Train a bundled model from the shared public data, reproducibly.

    python scripts/train_bundled.py configs/nuclei-he.yaml -o eosdetect/models/bundled/nuclei-he
    python scripts/train_bundled.py configs/eosinophil-smear.yaml -o eosdetect/models/bundled/eosinophil-smear

Reads ``../shared/data`` (or ``$EOSDETECT_SHARED_DATA``), trains the U-Net
(and the helper for two-stage models), fits thresholds on the validation
split, scores the model and the classical baseline on it, and writes a
complete model folder: config, weights, thresholds, metrics.json, MODEL_CARD.md.
Checkpoints and epoch logs go to ``--work-dir`` (default ``build/train/<name>``),
never into the model folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.models.card import model_metrics  # noqa: E402
from eosdetect.models.config import ModelConfig, Thresholds  # noqa: E402
from eosdetect.models.store import load_model, save_model  # noqa: E402
from eosdetect.training import recipes  # noqa: E402
from eosdetect.training import shared_data as sd  # noqa: E402
from eosdetect.training.evaluation import evaluate_model, fit_thresholds  # noqa: E402
from eosdetect.training.train import (  # noqa: E402
    TrainConfig,
    load_config_file,
    reproducible_threads,
    train_helper,
    train_unet,
    training_record,
)

log = logging.getLogger("train_bundled")
#: The multi-class smear helper after its first stage (PBC alone), kept in the work folder.
BASE_HELPER_WEIGHTS = "helper_pbc_only.weights.h5"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML config in configs/")
    ap.add_argument("-o", "--out", required=True, help="model folder to write")
    ap.add_argument("--work-dir", help="checkpoints and logs (default build/train/<name>)")
    ap.add_argument("--epochs", type=int, help="override train_epochs")
    ap.add_argument("--helper-epochs", type=int, help="override helper_epochs")
    ap.add_argument("--val-fold", type=int, help="BCCD validation fold (default from config)")
    ap.add_argument("--resume", action="store_true", help="resume an interrupted run from --work-dir")
    ap.add_argument("--retrain-unet", action="store_true", help="train the U-Net even where the config's "
                    "data section keeps one (unet_from)")
    args = ap.parse_args(argv)
    reproducible_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    cfg = load_config_file(args.config)
    mcfg = ModelConfig.from_dict(cfg["model"], source=f"{args.config}:model")
    tcfg = TrainConfig.from_dict(cfg.get("train", {}), source=f"{args.config}:train")
    if args.epochs:
        tcfg.train_epochs = args.epochs
    if args.helper_epochs:
        tcfg.helper_epochs = args.helper_epochs
    base_thr = Thresholds.from_dict(cfg.get("thresholds", {}))
    grid = cfg.get("threshold_grid", {})
    data_cfg = cfg.get("data", {})
    recipe = data_cfg.get("recipe", mcfg.name)
    work = Path(args.work_dir or HERE.parent / "build" / "train" / mcfg.name)

    t0 = time.time()
    helper = None
    if recipe == "nuclei-he":
        train_s, val_s, val_items = recipes.nuclei_data(mcfg, float(data_cfg.get("gap_weight", 1.0)))
        unet_val_items = val_items
        data_desc = recipes.nuclei_data_description()
    elif recipe == "eosinophil-smear":
        fold = args.val_fold if args.val_fold is not None else int(data_cfg.get("val_fold", 0))
        keep_unet = data_cfg.get("unet_from") and not args.retrain_unet
        d = recipes.smear_data(mcfg, fold, unet=not keep_unet)
        train_s, val_s, val_items = d["unet_train"], d["unet_val"], d["eval_val"]
        unet_val_items = d["wbc_val"]
        data_desc = recipes.smear_data_description(fold, mcfg)
        if mcfg.multiclass:
            helper_sets = recipes.smear_helper_sets(mcfg, fold)
    else:
        ap.error(f"unknown data recipe {recipe!r}")
    t_data = time.time() - t0

    if recipe == "eosinophil-smear" and keep_unet:
        unet = load_model(HERE.parent / data_cfg["unet_from"]).unet  # read before the folder is rewritten
        log.info("U-Net kept from %s (data: unet_from)", data_cfg["unet_from"])
    else:
        unet = train_unet(mcfg, tcfg, train_s, val_s, work / "unet", val_items=unet_val_items, thresholds=base_thr,
                          resume=args.resume)
    t_unet = time.time() - t0 - t_data
    if mcfg.multiclass:
        base_helper = recipes.train_smear_helper_base(mcfg, tcfg, helper_sets, work / "helper")
        base_helper.save_weights(str(work / "helper" / BASE_HELPER_WEIGHTS))  # scripts/transfer_eosinophil.py
        helper = recipes.train_smear_helper_two_labs(mcfg, tcfg, helper_sets, base_helper, work / "helper")
    elif mcfg.helper_enabled:
        (hx, hy), (vx, vy) = d["helper_train"], d["helper_val"]
        helper = train_helper(mcfg, tcfg, hx, hy, vx, vy, work / "helper", resume=args.resume)
    t_helper = time.time() - t0 - t_data - t_unet

    # Fit thresholds and score the model as it is shipped: written, then loaded back.
    save_model(args.out, mcfg, base_thr, unet, helper)
    model = load_model(args.out)
    extra = {}
    if mcfg.multiclass:  # the counting threshold from pathologists' labels (PBC), judged on BCCD
        thr, extra = recipes.fit_smear_helper_threshold(model, grid.get("helper_threshold", [base_thr.helper_threshold]))
        model.thresholds = thr
        ev = evaluate_model(model, val_items)
        extra["bccd_validation_cells"] = recipes.bccd_report(model, sd.bccd_split(sd.load_bccd(), fold)[1])
        fitted_on = "PBC's validation split (helper threshold by eosinophil F1); nothing on BCCD"
    else:
        thr, ev = fit_thresholds(model, val_items, grid, base=base_thr)
        model.thresholds = thr
        fitted_on = "the same validation images (pooled F1 over the grid in the config)"
    t_fit = time.time() - t0 - t_data - t_unet - t_helper

    metrics = model_metrics(
        mcfg, validation=ev["summary"], per_image=ev["per_image"], data=data_desc,
        matching=recipes.matching_description(recipe), thresholds_fitted_on=fitted_on,
        training=training_record(tcfg, {"data": t_data, "unet": t_unet, "helper": t_helper, "thresholds": t_fit},
                                 file_cfg={"_path": str(Path(args.config).as_posix())}, grid=grid),
    )
    metrics.update(extra)
    metrics.update(recipes.baselines(recipe, val_items, model))
    mcfg.training = {"config_file": Path(args.config).name, "recipe": recipe, "seed": tcfg.train_seed}
    card = recipes.bundled_card(mcfg, metrics)
    save_model(args.out, mcfg, thr, unet, helper, metrics=metrics, card=card)
    print(json.dumps({"out": args.out, "validation": ev["summary"],
                      **{k: v.get("summary", v) for k, v in metrics.items() if k.startswith("baseline")}}, indent=2))


if __name__ == "__main__":
    main()
