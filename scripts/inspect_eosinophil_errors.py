#!/usr/bin/env python
"""Pictures of what the eosinophil model gets right and wrong on BCCD.

    python scripts/inspect_eosinophil_errors.py -m eosinophil-smear --fold 0 -o build/eos-errors.png

Writes one contact sheet: every labelled eosinophil of the chosen fold(s)
(green frame: found, red: missed) and every false positive (orange frame),
each crop captioned with the image number and the helper's score. This
is how the label noise in BCCD is shown rather than asserted: missed
"eosinophils" without orange-red granules are neutrophil-like labels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.core.geometry import extract_crops  # noqa: E402
from eosdetect.io import read_image, write_image  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402
from eosdetect.training import shared_data  # noqa: E402
from eosdetect.training.recipes import smear_eval_item  # noqa: E402

FOUND, MISSED, FALSE = (0, 200, 60), (220, 30, 30), (255, 150, 0)


def tile(image, xy, colour, caption, size=120):
    import cv2

    crop = extract_crops(image, [xy], 260)[0]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    cv2.rectangle(crop, (0, 0), (size - 1, size - 1), colour, 4)
    cv2.putText(crop, caption, (5, size - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(crop, caption, (5, size - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return crop


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default="eosinophil-smear")
    ap.add_argument("--fold", type=int, action="append", help="BCCD fold(s) to show (default 0)")
    ap.add_argument("-o", "--out", default="build/eos-errors.png")
    args = ap.parse_args(argv)
    folds = args.fold or [0]
    model = load_model(args.model)
    items = [i for i in shared_data.load_bccd() if i.fold in folds and i.subtype is not None]
    tiles, n_found, n_missed, n_fp = [], 0, 0, 0
    for item in items:
        image = read_image(item.path)
        res = model.detect(image)
        ev = smear_eval_item(item, image)
        r = ev.match(res.detections.xy)
        for k, xy in enumerate(ev.true_xy):
            hit = k in set(r.pairs[:, 1])
            # the helper's best score for any candidate inside the true box
            b = ev.true_boxes[k]
            c = res.candidates
            inside = (c.x >= b[0]) & (c.x <= b[2]) & (c.y >= b[1]) & (c.y <= b[3])
            score = float(c.score[inside].max()) if inside.any() else float("nan")
            tiles.append(tile(image, xy, FOUND if hit else MISSED, f"{item.name[11:16]} p={score:.2f}"))
            n_found += hit
            n_missed += not hit
        matched = set(r.pairs[:, 0])
        for k in range(len(res.detections)):
            if k not in matched:
                d = res.detections
                tiles.append(tile(image, (d.x[k], d.y[k]), FALSE,
                                  f"{item.name[11:16]} {item.subtype[:5]} p={d.score[k]:.2f}"))
                n_fp += 1
    cols = 8
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    sheet = np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
    write_image(args.out, sheet)
    print(f"fold(s) {folds}: {n_found} eosinophils found, {n_missed} missed, {n_fp} false positives -> {args.out}")


if __name__ == "__main__":
    main()
