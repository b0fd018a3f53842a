#!/usr/bin/env python
"""Blind visual audit of BCCD's eosinophil labels, and the F1 those labels allow.

    python scripts/audit_eosinophil_labels.py sheets --round 1 -o build/label-audit
    python scripts/audit_eosinophil_labels.py sheets --round 2 -o build/label-audit
    #   look at build/label-audit/blind_r*_*.png and write, per round, one
    #   "<number> <grade>" pair per crop; do not open the key_*.json files first
    python scripts/audit_eosinophil_labels.py score \\
        --grades data/results/eosinophil_label_grades_r1.txt \\
        --grades2 data/results/eosinophil_label_grades_r2.txt \\
        -o data/results/eosinophil_label_audit.json

The sheets show BCCD's labelled white cells (rows of `wbc_subtypes.csv`)
shuffled and numbered, with no file name, label or model score on them.
Round 1: the 64 cells labelled eosinophil and 32 randomly drawn neutrophils
(seed 2026). Round 2: the other 134 neutrophils, the 17 monocytes and the 64
eosinophils again, in a new order (which measures how consistently one cell
is graded). Each crop is graded by its cytoplasm alone:

- G: coarse orange-red granules visible (what an eosinophil looks like);
- P: pink or salmon cytoplasm, no granules resolved;
- N: pale grey-lilac cytoplasm, like a neutrophil.

`score` unblinds the grades and reports, per grade, how many labelled
eosinophils there are, how many the cross-validated model missed (from
`data/results/crossval_eosinophil.json`), and how many neutrophils and
monocytes look the same. From that it computes the best F1 of a classifier
that tells the cells apart only as well as the grades do: such a classifier
can count a grade or leave it, and counting a grade brings in that grade's
neutrophils and monocytes as false positives. That is the level of what the
eye sees in these crops, not a hard limit: a classifier that uses finer
colour differences can do better within a grade (the model does, a little).
The 30 lymphocytes and basophils are assumed never to be counted. With round
1 alone, the neutrophils' grade shares are scaled up from the sample of 32.

The grades are one person's reading of 640x480 JPEG crops: a measurement of
how the labelled cells look, used to explain the figures. Nothing is
relabelled; every model figure is still measured against the labels as they
are.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.io import atomic_write_text, read_csv, read_image, write_image  # noqa: E402
from eosdetect.training import shared_data  # noqa: E402

SEED = 2026
N_NEUTROPHILS = 32
GRADES = {
    "G": "coarse orange-red granules visible",
    "P": "pink or salmon cytoplasm, no granules resolved",
    "N": "pale grey-lilac cytoplasm, like a neutrophil",
}
CROP, SHOWN, PER_SHEET, COLS = 220, 190, 32, 8


def blind_order(rows: list[dict], round_: int = 1) -> list[dict]:
    """The cells audited in one round, in their blind order (fixed by SEED).

    Round 1: the 64 eosinophils and 32 sampled neutrophils. Round 2: every
    other neutrophil, every monocyte, and the 64 eosinophils again (to
    measure how consistently the same cell is graded).
    """
    rng = np.random.default_rng(SEED)
    eos = [r for r in rows if r["subtype"] == "eosinophil"]
    neu = [r for r in rows if r["subtype"] == "neutrophil"]
    sample = rng.choice(len(neu), N_NEUTROPHILS, replace=False)
    first = eos + [neu[i] for i in sample]
    order = rng.permutation(len(first))
    if round_ == 1:
        return [first[i] for i in order]
    second = [r for k, r in enumerate(neu) if k not in set(sample)] + [r for r in rows if r["subtype"] == "monocyte"] + eos
    return [second[i] for i in np.random.default_rng(SEED + 1).permutation(len(second))]


def subtype_rows(root: Path) -> list[dict]:
    return read_csv(root / "wbc_subtypes.csv")


def sheets(args) -> None:
    import cv2

    root = shared_data.shared_root() / "bccd"
    cells = blind_order(subtype_rows(root), args.round)
    out = Path(args.out)
    tag = f"r{args.round}_"
    half = CROP // 2
    crops = []
    for k, r in enumerate(cells, start=1):
        image = read_image(root / "images" / r["filename"])
        image = cv2.copyMakeBorder(image, half, half, half, half, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        cx, cy = int(float(r["cx"])), int(float(r["cy"]))
        crop = cv2.resize(image[cy : cy + CROP, cx : cx + CROP], (SHOWN, SHOWN), interpolation=cv2.INTER_AREA)
        cv2.putText(crop, str(k), (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 2, cv2.LINE_AA)
        crops.append(crop)
    write_sheets(crops, out, f"blind_{tag}")
    key = [{"number": k, "filename": r["filename"], "subtype": r["subtype"]} for k, r in enumerate(cells, start=1)]
    atomic_write_text(out / f"key_{tag}.json", json.dumps(key, indent=1) + "\n")
    print(f"{len(cells)} crops on {-(-len(cells) // PER_SHEET)} sheets in {out}; grade them before opening the key")


def write_sheets(crops: list[np.ndarray], out: Path, prefix: str, per_sheet: int = PER_SHEET, cols: int = COLS) -> None:
    """The numbered crops as contact sheets ``<prefix><k>.png`` of ``per_sheet`` crops in rows of ``cols``."""
    for s in range(0, len(crops), per_sheet):
        part = crops[s : s + per_sheet]
        part += [np.full_like(part[0], 255)] * (-len(part) % cols)
        write_image(out / f"{prefix}{s // per_sheet}.png", np.vstack([np.hstack(part[i : i + cols]) for i in range(0, len(part), cols)]))


def read_grades(path: Path, n: int, known: dict = GRADES) -> dict[int, str]:
    """The ``<number> <grade>`` pairs of a grades file (``#`` starts a comment): one grade of
    ``known`` for each of the numbers 1..n, or the script exits naming the file."""
    words = " ".join(line.split("#")[0] for line in path.read_text().splitlines()).split()
    if len(words) % 2:
        sys.exit(f"{path}: expected pairs '<number> <grade>'")
    grades = {int(words[i]): words[i + 1].upper() for i in range(0, len(words), 2)}
    bad = sorted(set(grades.values()) - set(known))
    if bad or sorted(grades) != list(range(1, n + 1)):
        sys.exit(f"{path}: need one grade ({'/'.join(known)}) for each of the numbers 1..{n}; got {len(grades)}, unknown {bad}")
    return grades


def ceiling(eos: dict[str, int], others: dict[str, float]) -> list[dict]:
    """Precision, recall and F1 of counting exactly the cells of some grades.

    ``eos``: labelled eosinophils per grade; ``others``: other labelled white
    cells per grade (counted or estimated), each a false positive if counted.
    """
    rows = []
    total = sum(eos.values())
    for n in range(1, len(GRADES) + 1):
        for kept in combinations(GRADES, n):
            tp = sum(eos[g] for g in kept)
            fp = sum(others[g] for g in kept)
            p, r = tp / (tp + fp), tp / total
            rows.append({"grades_counted": "".join(kept), "tp": tp, "fp": round(fp, 1),
                         "precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / (p + r), 3)})
    return sorted(rows, key=lambda d: -d["f1"])


def graded(cells: list[dict], grades: dict[int, str]) -> list[dict]:
    return [{"number": k, "filename": r["filename"], "subtype": r["subtype"], "grade": grades[k]}
            for k, r in enumerate(cells, start=1)]


def score(args) -> None:
    root = shared_data.shared_root() / "bccd"
    rows = subtype_rows(root)
    first = graded(cells := blind_order(rows, 1), read_grades(Path(args.grades), len(cells)))
    second = graded(cells := blind_order(rows, 2), read_grades(Path(args.grades2), len(cells))) if args.grades2 else []
    crossval = json.loads(Path(args.crossval).read_text())
    missed = set(crossval["missed_eosinophils"])
    false_pos = set(crossval["images_with_false_positives"])
    eos = [dict(a, missed_in_crossval=a["filename"] in missed) for a in first if a["subtype"] == "eosinophil"]
    others = [a for a in first + second if a["subtype"] != "eosinophil"]
    n_neutrophils = sum(r["subtype"] == "neutrophil" for r in rows)
    n_neu_graded = sum(a["subtype"] == "neutrophil" for a in others)
    by_grade = {}
    for g in GRADES:
        e = [a for a in eos if a["grade"] == g]
        by_grade[g] = {
            "meaning": GRADES[g],
            "eosinophils": len(e),
            "eosinophils_missed_in_crossval": sum(a["missed_in_crossval"] for a in e),
            "missed": sorted(a["filename"] for a in e if a["missed_in_crossval"]),
            "neutrophils": sum(a["grade"] == g and a["subtype"] == "neutrophil" for a in others),
            "monocytes": sum(a["grade"] == g and a["subtype"] == "monocyte" for a in others),
            "crossval_false_positive_images": sorted(a["filename"] for a in others if a["grade"] == g and a["filename"] in false_pos),
        }
    # graded look-alikes; neutrophils scaled up to all of them when only a sample was graded
    scale = n_neutrophils / n_neu_graded
    fps = {g: by_grade[g]["neutrophils"] * scale + by_grade[g]["monocytes"] for g in GRADES}
    ceil = ceiling({g: by_grade[g]["eosinophils"] for g in GRADES}, fps)
    high_recall = [c for c in ceil if c["recall"] >= 0.95]
    retest = {}
    if second:
        again = {a["filename"]: a["grade"] for a in second if a["subtype"] == "eosinophil"}
        for a in eos:
            key = f"{a['grade']}->{again[a['filename']]}"
            retest[key] = retest.get(key, 0) + 1
    report = {
        "method": __doc__.split("\n\n", 2)[2].strip(),
        "grader": "one developer, from the blind sheets, before unblinding",
        "seed": SEED,
        "neutrophils_graded": f"{n_neu_graded} of {n_neutrophils}",
        "by_grade": by_grade,
        "eosinophil_regrade_round1_to_round2": retest,
        "ceiling": ceil,
        "best_f1_counting_whole_grades": ceil[0],
        "best_precision_at_recall_0.95": max(high_recall, key=lambda d: d["precision"]) if high_recall else None,
        "crossval_pooled": crossval["pooled"],
        "cells": eos + others,
    }
    atomic_write_text(Path(args.out), json.dumps(report, indent=1) + "\n")
    for g, d in by_grade.items():
        print(f"{g} ({d['meaning']}): {d['eosinophils']} labelled eosinophils, {d['eosinophils_missed_in_crossval']} missed "
              f"in cross-validation; {d['neutrophils']} of {n_neu_graded} graded neutrophils, {d['monocytes']} monocytes "
              f"({len(d['crossval_false_positive_images'])} counted in cross-validation)")
    if retest:
        same = sum(v for k, v in retest.items() if k[0] == k[-1])
        print(f"eosinophils graded twice: {same} of {len(eos)} got the same grade ({retest})")
    best = ceil[0]
    print(f"best F1 counting whole grades: {best['f1']:.3f} (count grades {best['grades_counted']}: "
          f"P {best['precision']:.3f}, R {best['recall']:.3f}); cross-validated model: F1 {crossval['pooled']['f1']:.3f}")
    hr = report["best_precision_at_recall_0.95"]
    if hr:
        print(f"recall >= 0.95 needs grades {hr['grades_counted']}: precision {hr['precision']:.3f} at best")
    print(f"-> {args.out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)
    s = sub.add_parser("sheets", help="write the blind contact sheets")
    s.add_argument("--round", type=int, choices=(1, 2), default=1, help="1: eosinophils and 32 neutrophils; 2: the other neutrophils, the monocytes, the eosinophils again")
    s.add_argument("-o", "--out", default="build/label-audit")
    s.set_defaults(func=sheets)
    s = sub.add_parser("score", help="unblind the grades and estimate the F1 these labels allow")
    s.add_argument("--grades", required=True, help="round 1: text file of '<number> <grade>' pairs")
    s.add_argument("--grades2", help="round 2 (optional): the same for the second round's sheets")
    s.add_argument("--crossval", default=str(HERE.parent / "data" / "results" / "crossval_eosinophil.json"))
    s.add_argument("-o", "--out", default=str(HERE.parent / "data" / "results" / "eosinophil_label_audit.json"))
    s.set_defaults(func=score)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
