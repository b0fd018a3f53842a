#!/usr/bin/env python
"""Re-measure the bundled models on their validation split with `eosdetect evaluate`.

    python scripts/evaluate_bundled.py [-o build/eval] [--model nuclei-he|eosinophil-smear]

The labels are handed to the command the way a user would give them:
MoNuSeg instance masks (``--label-format mask``) for ``nuclei-he``; for
``eosinophil-smear``, LabelImg VOC files holding the eosinophil box of each
scored validation image (written to a temporary folder from
``bccd/wbc_subtypes.csv``; images without an eosinophil get a file without
boxes). Prints the command's figures next to the ones in the model's
``metrics.json`` and exits 1 when F1 differs by more than 0.005.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.annotations.voc import VocAnnotation, VocObject, write_voc  # noqa: E402
from eosdetect.apps.cli import main as cli  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402
from eosdetect.training import shared_data as sd  # noqa: E402
from eosdetect.training.recipes import NUCLEI_MATCH_RADIUS_UM  # noqa: E402


def nuclei_args(tmp: Path) -> list[str]:
    root = sd.shared_root() / "monuseg"
    subset = tmp / "nuclei_validation.txt"
    subset.write_text("\n".join(sd.MONUSEG_VAL) + "\n")
    return ["--images", str(root / "images"), "--labels", str(root / "instances"), "--label-format", "mask",
            "--subset", str(subset), "--radius", str(NUCLEI_MATCH_RADIUS_UM)]


def smear_args(tmp: Path, fold: int = 0) -> list[str]:
    items = sd.load_bccd()
    _, val = sd.bccd_split(items, fold)
    scored = [i for i in val if i.subtype is not None]
    labels = tmp / "eosinophil_voc"
    labels.mkdir()
    for it in scored:
        objects = [VocObject("eosinophil", *(int(round(v)) for v in box)) for box in sd.bccd_eosinophil_truth(it)]
        write_voc(labels / f"{it.path.stem}.xml",
                  VocAnnotation(filename=it.path.name, width=640, height=480, objects=objects))
    subset = tmp / "eosinophil_validation.txt"
    subset.write_text("\n".join(i.path.stem for i in scored) + "\n")
    return ["--images", str(sd.shared_root() / "bccd" / "images"), "--labels", str(labels), "--label-format", "voc",
            "--class", "eosinophil", "--subset", str(subset), "--radius", "0"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", default="build/eval", help="report folders go here (one per model)")
    ap.add_argument("--model", action="append", choices=["nuclei-he", "eosinophil-smear"],
                    help="model(s) to evaluate (default both)")
    args = ap.parse_args(argv)
    worst = 0.0
    for name in args.model or ["nuclei-he", "eosinophil-smear"]:
        with tempfile.TemporaryDirectory() as tmp:
            extra = nuclei_args(Path(tmp)) if name == "nuclei-he" else smear_args(Path(tmp))
            out = Path(args.out) / name
            cmd = ["evaluate", "-m", name, *extra, "-o", str(out)]
            print("eosdetect " + " ".join(cmd))
            rc = cli(cmd)
            if rc:
                return rc
        got = json.loads((out / "metrics.json").read_text())["summary"]
        want = load_model(name).metrics["validation"]
        diff = abs(got["f1"] - want["f1"])
        worst = max(worst, diff)
        print(f"{name}: F1 {got['f1']:.4f} (metrics.json {want['f1']:.4f}), precision {got['precision']:.4f} "
              f"({want['precision']:.4f}), recall {got['recall']:.4f} ({want['recall']:.4f})\n")
    return 1 if worst > 0.005 else 0


if __name__ == "__main__":
    sys.exit(main())
