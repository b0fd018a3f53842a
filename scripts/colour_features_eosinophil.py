#!/usr/bin/env python
"""Cross-validated comparison for the helper CNN: colour statistics + logistic regression.

    python scripts/colour_features_eosinophil.py -o build/colour-features-eosinophil.json

The helper CNN learns "is this white cell an eosinophil" from about 50
labelled eosinophils, which is very little for a network of 300,000
weights. This script measures what a far smaller model does on the same
question: 20 colour statistics of each labelled white cell (percentiles of
L*, a*, b* over the stained pixels of the crop's centre, the stained
fraction, and the fraction of orange-red pixels), fed to an L2-regularised,
class-balanced logistic regression. Same crops (the helper's pixel size and
crop size, centred on the labelled white cell), same 5 BCCD folds as
``scripts/crossval_eosinophil.py``; each fold is scored by a model fitted on
the other four. The features were written once, from the description of
eosinophils in the data's README, and not tuned on these folds.

The figures are per labelled white cell (one per subtype-labelled image),
so they leave out the rare U-Net candidates that are not white cells.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import minimize

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect import recipes, shared_data  # noqa: E402
from eosdetect.io import write_json  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402


def colour_features(crop: np.ndarray) -> np.ndarray:
    """20 colour statistics of the stained pixels within 0.35 crop widths of the centre."""
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    sat = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)[..., 1].ravel().astype(np.float32)
    n = crop.shape[0]
    yy, xx = np.mgrid[:n, :n]
    inner = (np.hypot(yy - n / 2, xx - n / 2) < 0.35 * n).ravel()
    stained = sat[inner] > 40
    L, A, B = lab[inner].T
    f = []
    for ch in (L, A, B):
        v = ch[stained] if stained.sum() > 10 else ch
        f += list(np.percentile(v, [10, 50, 90]))
    f.append(stained.mean())
    f.append(((A > 150) & (B > 135) & stained).mean())  # orange-red
    return np.array(f)


def fit_logistic(z: np.ndarray, y: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """Class-balanced, L2-regularised logistic regression; returns ``[bias, weights...]``."""
    w_pos, w_neg = len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum()))
    sw = np.where(y == 1, w_pos, w_neg)

    def loss(w):
        p = 1 / (1 + np.exp(-(z @ w[1:] + w[0])))
        return -(sw * (y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9))).sum() + l2 * (w[1:] ** 2).sum()

    return minimize(loss, np.zeros(z.shape[1] + 1), method="L-BFGS-B").x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default="eosinophil-smear", help="model whose helper pixel/crop size is used")
    ap.add_argument("-o", "--out", default="build/colour-features-eosinophil.json")
    args = ap.parse_args(argv)
    cfg = load_model(args.model).config
    items = [i for i in shared_data.load_bccd() if i.subtype is not None]
    crops, labels, folds = [], [], []
    for k in range(shared_data.BCCD_FOLDS):
        x, y = recipes.smear_helper_crops([i for i in items if i.fold == k], cfg, negatives_per_image=0, extra=0)
        crops.append(x)
        labels.append(y)
        folds += [k] * len(y)
    y = np.concatenate(labels).astype(float)
    folds = np.array(folds)
    z = np.array([colour_features(c) for c in np.concatenate(crops)])
    p = np.zeros(len(y))
    for k in range(shared_data.BCCD_FOLDS):
        tr = folds != k
        mu, sd = z[tr].mean(0), z[tr].std(0) + 1e-6
        w = fit_logistic((z[tr] - mu) / sd, y[tr])
        p[~tr] = 1 / (1 + np.exp(-(((z[~tr] - mu) / sd) @ w[1:] + w[0])))
    pos, neg = p[y == 1], p[y == 0]
    auc = float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())
    curve = []
    for t in np.round(np.arange(0.1, 0.96, 0.05), 2):
        tp = int(((p >= t) & (y == 1)).sum())
        fp = int(((p >= t) & (y == 0)).sum())
        fn = int(((p < t) & (y == 1)).sum())
        curve.append({"threshold": float(t), "tp": tp, "fp": fp, "fn": fn,
                      "precision": round(tp / max(tp + fp, 1), 3), "recall": round(tp / max(tp + fn, 1), 3),
                      "f1": round(2 * tp / max(2 * tp + fp + fn, 1), 3)})
    best = max(curve, key=lambda r: r["f1"])
    out = {"method": " ".join(__doc__.split("\n\n")[2].split()), "white_cells": len(y),
           "eosinophils": int(y.sum()), "pooled_auc": round(auc, 4), "best_f1": best, "curve": curve}
    write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("white_cells", "eosinophils", "pooled_auc", "best_f1")}, indent=2))


if __name__ == "__main__":
    main()
