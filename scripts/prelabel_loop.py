#!/usr/bin/env python
"""Simulate the annotation loop on BCCD: pre-label, correct, retrain the helper, pre-label again.

    python scripts/prelabel_loop.py -o build/prelabel-loop [--batch 40 --rounds 2]

Round 0 pre-labels the evaluation images with the bundled model's U-Net alone
(every white cell boxed as a candidate eosinophil, all marked difficult): what
an annotator gets before any eosinophil has been labelled. Then, each round,
the "annotator" corrects the next ``--batch`` images of the training folds
(their pre-labels are replaced by the true eosinophil boxes and saved as
verified LabelImg files), a helper (of the base model's kind) is trained with ``train-helper`` on
every verified file so far (``--verified-only``), and the evaluation images
are pre-labelled again with ``prelabel --helper`` (default band: every
candidate scoring at least half the counting threshold, the uncertain ones
``difficult``; and, as ``at_counting_threshold``, only the candidates the
model would count). Reported per round: the
corrections an annotator makes per evaluation image (boxes to delete = false
positives, boxes to draw = missed eosinophils), recall and precision of the
pre-labels. The evaluation images are the validation fold (never corrected,
never trained on). All files go through the same code as the CLI: VOC
written by ``prelabel``, read back by the label reader.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.annotations.voc import VocAnnotation, VocObject, read_voc, write_voc  # noqa: E402
from eosdetect.apps.prelabel import PrelabelSettings, prelabel_image  # noqa: E402
from eosdetect.core.metrics import match_points, summarize  # noqa: E402
from eosdetect.io import write_json  # noqa: E402
from eosdetect.models.model import Model  # noqa: E402
from eosdetect.models.store import load_model, with_helper_of  # noqa: E402
from eosdetect.training import shared_data as sd  # noqa: E402
from eosdetect.training.labelset import load_labelled  # noqa: E402
from eosdetect.training.train import TrainConfig, load_config_file, reproducible_threads, train_helper_from_labels  # noqa: E402

sys.path.insert(0, str(HERE))
from learning_curve import stratified_order  # noqa: E402


def unet_only(base: Model) -> Model:
    """The base model's U-Net with no helper: every candidate is a pre-label."""
    import dataclasses

    cfg = dataclasses.replace(base.config, helper_enabled=False)
    m = Model.in_memory(cfg, base.thresholds, base.unet)
    m.path = base.path
    return m


def score_prelabels(model, items, out: Path, settings: PrelabelSettings) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results, per_image = [], []
    for it in items:
        xml = out / f"{it.path.stem}.xml"
        prelabel_image(model, it.path, xml, settings)
        boxes = read_voc(xml).objects
        pred = np.array([o.centre for o in boxes]).reshape(-1, 2)
        truth = sd.bccd_eosinophil_truth(it)
        txy = np.stack([(truth[:, 0] + truth[:, 2]) / 2, (truth[:, 1] + truth[:, 3]) / 2], axis=1)
        r = match_points(pred, txy, true_boxes=truth)
        results.append(r)
        per_image.append({"image": it.path.stem, "boxes": len(boxes), "difficult": sum(o.difficult for o in boxes),
                          "fp": r.fp, "fn": r.fn})
    s = summarize(results)
    return {"images": len(items), "corrections_per_image": round((s["fp"] + s["fn"]) / len(items), 3),
            "boxes_to_delete": s["fp"], "boxes_to_draw": s["fn"], "precision": s["precision"],
            "recall": s["recall"], "f1": s["f1"],
            "difficult_boxes": sum(p["difficult"] for p in per_image),
            "boxes": sum(p["boxes"] for p in per_image)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", default="build/prelabel-loop")
    ap.add_argument("--config", default=str(HERE.parent / "configs" / "eosinophil-smear.yaml"))
    ap.add_argument("--batch", type=int, default=60, help="images corrected per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    reproducible_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    base = load_model("eosinophil-smear")
    file_cfg = load_config_file(args.config)
    file_cfg = {"model": {k: v for k, v in file_cfg["model"].items() if k.startswith("helper_")},
                "train": file_cfg.get("train", {})}
    TrainConfig.from_dict(file_cfg["train"])
    train, val = sd.bccd_split(sd.load_bccd(), 0)
    eval_items = [i for i in val if i.subtype is not None]
    pool = stratified_order([i for i in train if i.subtype is not None], args.seed)
    corrected = out / "corrected"
    corrected.mkdir(exist_ok=True)
    images_dir = sd.shared_root() / "bccd" / "images"

    rounds = []
    t0 = time.time()
    row = score_prelabels(unet_only(base), eval_items, out / "round0",
                          PrelabelSettings(class_name="eosinophil", min_score=0.0, uncertain_below=1.01))
    rounds.append({"round": 0, "corrected_images": 0, "pre-labeller": "U-Net candidates, no helper", **row})
    logging.info("%s", rounds[-1])
    for k in range(1, args.rounds + 1):
        batch = pool[(k - 1) * args.batch: k * args.batch]
        for it in batch:  # the annotator's corrected, verified file
            objects = [VocObject("eosinophil", *(int(round(v)) for v in b)) for b in sd.bccd_eosinophil_truth(it)]
            write_voc(corrected / f"{it.path.stem}.xml",
                      VocAnnotation(it.path.name, 640, 480, verified=True, objects=objects))
        done = [p.stem for p in corrected.glob("*.xml")]
        items, report = load_labelled(images_dir, corrected, "voc", class_name="eosinophil", verified_only=True,
                                      subset=done)
        helper_dir = out / f"helper-round{k}"
        metrics = train_helper_from_labels(base, items, helper_dir, file_cfg=file_cfg, class_name="eosinophil",
                                           verbose=0)
        model = with_helper_of(base, load_model(helper_dir))
        threshold = json.loads((helper_dir / "thresholds.json").read_text())["helper_threshold"]
        row = score_prelabels(model, eval_items, out / f"round{k}", PrelabelSettings(class_name="eosinophil"))
        strict = score_prelabels(model, eval_items, out / f"round{k}-strict",
                                 PrelabelSettings(class_name="eosinophil", min_score=threshold))
        rounds.append({"round": k, "corrected_images": len(items),
                       "corrected_eosinophils": int(report.objects),
                       "pre-labeller": f"U-Net + helper trained on {len(items)} corrected images",
                       "helper_validation_f1": metrics["validation"]["f1"], "helper_threshold": threshold,
                       **row, "at_counting_threshold": strict})
        logging.info("%s", rounds[-1])
    result = {"method": __doc__.strip().splitlines()[0], "evaluation_images": len(eval_items),
              "evaluation_eosinophils": int(sum(len(sd.bccd_eosinophil_truth(i)) for i in eval_items)),
              "rounds": rounds, "seconds": round(time.time() - t0, 1)}
    write_json(out / "loop.json", result)
    print(json.dumps(rounds, indent=2))


if __name__ == "__main__":
    main()
