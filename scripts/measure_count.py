#!/usr/bin/env python
"""Seconds per image and peak memory of `eosdetect count`, as a user runs it.

    python scripts/measure_count.py IMAGE_DIR [-m MODEL] [-n 20]

Runs ``eosdetect count`` in a child process on the first ``n`` images of the
folder (sorted by name), then prints the median and spread of the per-image
seconds recorded in ``counts.csv`` (reading, U-Net, watershed, helper and
writing the outputs; the first image includes TensorFlow's graph tracing and
is reported apart), the wall time of the whole command (including Python and
TensorFlow start-up) and the child's peak resident memory.
"""

from __future__ import annotations

import argparse
import csv
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.io import find_images  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images")
    ap.add_argument("-m", "--model", default="eosinophil-smear")
    ap.add_argument("-n", type=int, default=20)
    args = ap.parse_args(argv)
    files = find_images([args.images], recursive=False)[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for p in files:
            (inputs / p.name).symlink_to(p.resolve())
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "eosdetect", "count", str(inputs), "-m", args.model,
                               "-o", str(Path(tmp) / "out")], capture_output=True, text=True,
                              cwd=HERE.parent)
        wall = time.perf_counter() - t0
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        rows = list(csv.DictReader(open(Path(tmp) / "out" / "counts.csv")))
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    seconds = [float(r["seconds"]) for r in rows]
    first, rest = seconds[0], sorted(seconds[1:])
    print(f"{args.model} on {len(rows)} image(s) from {args.images}")
    print(f"  median {statistics.median(rest):.3f} s/image after the first (min {rest[0]:.3f}, max {rest[-1]:.3f}); "
          f"first image {first:.2f} s (includes graph tracing)")
    print(f"  whole command {wall:.1f} s including start-up; peak resident memory {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
