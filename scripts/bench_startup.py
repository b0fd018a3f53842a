#!/usr/bin/env python
"""Whole-process times of ``eosdetect`` against a bare import of its light dependencies, in one run.

    python scripts/bench_startup.py                  # 5 repeats each, a 640x480 sample photo
    python scripts/bench_startup.py -n 3 --image PHOTO.jpg

Baseline: ``python -c "import numpy, scipy.ndimage, skimage, cv2, PIL.Image"``
(what any image tool in Python pays to start). Measured, each as its own
process, the median of ``-n`` runs:

* usage errors: a missing input folder, an unknown model, an impossible
  ``--pixel-size`` (issue 21 asks for <= 0.5 s);
* ``eosdetect count PHOTO -o OUT`` with the default model (issue 21 asks for
  <= 1.5 s and <= 5x the baseline).

Each figure is printed with its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "import numpy, scipy.ndimage, skimage, cv2, PIL.Image"


def seconds(cmd: list[str], repeats: int) -> float:
    """The median wall time of running ``cmd`` ``repeats`` times."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5, help="runs of each (default 5)")
    ap.add_argument("--image", default=str(ROOT / "data" / "samples" / "synthetic_smear_01.jpg"))
    args = ap.parse_args(argv)
    eos = [sys.executable, "-m", "eosdetect.apps.cli"]
    with tempfile.TemporaryDirectory(prefix="eosdetect-bench-") as tmp:
        cases = {
            "usage error: missing folder": eos + ["count", str(Path(tmp) / "missing"), "-o", tmp],
            "usage error: unknown model": eos + ["count", args.image, "-m", "no-such-model", "-o", tmp],
            "usage error: --pixel-size 50": eos + ["count", args.image, "--pixel-size", "50", "-o", tmp],
            "count one photo": eos + ["count", args.image, "-o", str(Path(tmp) / "out"), "--overwrite"],
        }
        base = seconds([sys.executable, "-c", BASELINE], args.n)
        print(f"baseline ({BASELINE}): {base:.2f} s")
        for name, cmd in cases.items():
            t = seconds(cmd, args.n)
            print(f"{name:32s} {t:6.2f} s   {t / base:5.1f}x the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
