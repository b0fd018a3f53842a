#!/usr/bin/env python
"""How eosinophil F1 grows with the number of labelled training images (BCCD).

    python scripts/learning_curve.py configs/eosinophil-smear.yaml -o build/learning-curve

Like the original EOS-Detection table (10, 20, ... images), so that a lab can
judge how many images to label. For each size N the helper (the part
that tells eosinophils from other white cells) is trained on the first N
subtype-labelled images of the training folds, in a fixed random order with
every class kept in proportion, and scored on the validation fold with the
bundled model's U-Net and fixed thresholds (nothing refitted per point, so
the points differ only in the training images). The U-Net, which finds white
cells of any kind, is the bundled one throughout.

Writes ``learning_curve.csv``, ``learning_curve.json`` and
``learning_curve.png`` in the output folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.io import write_json  # noqa: E402
from eosdetect.models.model import Model  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402
from eosdetect.training import recipes, shared_data  # noqa: E402
from eosdetect.training.evaluation import evaluate_model  # noqa: E402
from eosdetect.training.train import TrainConfig, load_config_file, reproducible_threads, train_helper  # noqa: E402


def stratified_order(items, seed: int) -> list:
    """Training images in an order where every prefix keeps the subtypes in proportion."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list] = {}
    for it in items:
        groups.setdefault(it.subtype, []).append(it)
    keyed = []
    for members in groups.values():
        rng.shuffle(members)
        n = len(members)
        keyed += [((j + rng.random()) / n, it) for j, it in enumerate(members)]  # evenly spread ranks
    return [it for _, it in sorted(keyed, key=lambda t: t[0])]


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["train_images"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for key, colour, marker in (("f1", "#D55E00", "o"), ("precision", "#0072B2", "s"), ("recall", "#009E73", "^")):
        ax.plot(n, [r[key] for r in rows], marker=marker, color=colour, label=key)
    for r in rows:
        ax.annotate(f"{r['train_eosinophils']} eos", (r["train_images"], r["f1"]), textcoords="offset points",
                    xytext=(0, -14), ha="center", fontsize=7, color="0.4")
    ax.set(xlabel="labelled training images", ylabel="validation score", ylim=(0, 1.02), title=title)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(n)
    ax.set_xticklabels([str(v) for v in n])
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="the bundled model's config (its train section is used)")
    ap.add_argument("-m", "--model", default="eosinophil-smear")
    ap.add_argument("-o", "--out", default="build/learning-curve")
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 40, 80, 0],
                    help="training set sizes (0 = all training images)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    reproducible_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    tcfg = TrainConfig.from_dict(load_config_file(args.config).get("train", {}))
    base = load_model(args.model)
    if base.config.multiclass:
        sys.exit(f"{args.model}: this script measures a one-class helper (version 1.1.0's colour helper: "
                 "git show it out of the history); the multi-class helper is measured by "
                 "scripts/transfer_eosinophil.py")
    train, val = shared_data.bccd_split(shared_data.load_bccd(), 0)
    order = stratified_order([i for i in train if i.subtype is not None], args.seed)
    val_items = [recipes.smear_eval_item(i) for i in val if i.subtype is not None]
    vx, vy = recipes.smear_helper_crops(val, base.config, negatives_per_image=0)
    rows = []
    for size in args.sizes:
        subset = order[: size or len(order)]
        t0 = time.time()
        hx, hy = recipes.smear_helper_crops(subset, base.config)
        helper = train_helper(base.config, tcfg, hx, hy, vx, vy, out / "work" / f"n{len(subset)}", verbose=0)
        model = Model.in_memory(base.config, base.thresholds, base.unet, helper)
        s = evaluate_model(model, val_items)["summary"]
        row = {"train_images": len(subset), "train_eosinophils": sum(i.subtype == "eosinophil" for i in subset),
               "precision": s["precision"], "recall": s["recall"], "f1": s["f1"], "tp": s["tp"], "fp": s["fp"],
               "fn": s["fn"], "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        logging.info("%s", row)
    with open(out / "learning_curve.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_json(out / "learning_curve.json", {"method": __doc__.strip().splitlines()[0],
                                              "validation_images": len(val_items),
                                              "validation_eosinophils": int(sum(len(i.true_xy) for i in val_items)),
                                              "thresholds": base.thresholds.to_dict(), "rows": rows})
    plot(rows, out / "learning_curve.png",
         f"eosinophil F1 vs training images (BCCD, {len(val_items)} validation images)")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
