#!/usr/bin/env python
"""Images per second when counting a folder: the runner (several images at
once in threads) against a serial loop, in one process.

    python scripts/bench_folder.py ../shared/data/bccd/images            # all 292 BCCD photos
    python scripts/bench_folder.py IMAGE_DIR -n 100 -m eosinophil-smear

Baseline: ``CountRun.count_image`` called image after image (read, detect,
draw, encode and write, one at a time: what `eosdetect count` did before).
Runner: ``CountRun.run`` with ``--workers`` threads (default: CPU cores + 1,
at most 4), each counting whole images, results kept in input order. Both
write the same files to fresh folders with the same model, after a warm-up
image; the ratio is printed with the wall times and the detections compared.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.apps.batch.local import default_workers  # noqa: E402
from eosdetect.apps.batch.naming import output_names  # noqa: E402
from eosdetect.apps.batch.run import CountRun, CountSettings  # noqa: E402
from eosdetect.io import find_images  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images")
    ap.add_argument("-m", "--model", default="eosinophil-smear")
    ap.add_argument("-n", type=int, default=0, help="first n images only (default all)")
    ap.add_argument("--workers", type=int, default=0, help="runner threads (default: CPU cores + 1, at most 4)")
    args = ap.parse_args(argv)
    files = find_images([args.images], recursive=False)
    if args.n:
        files = files[: args.n]
    model = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        CountRun(model, tmp / "warm").run(files[:1])  # trace the graphs
        serial = CountRun(model, tmp / "serial", CountSettings())
        serial.out_dir.mkdir()
        t0 = time.perf_counter()
        for f, name in zip(files, output_names(files)):
            serial.count_image(f, name)
        t_serial = time.perf_counter() - t0

        t0 = time.perf_counter()
        recs = CountRun(model, tmp / "pipe", CountSettings(workers=args.workers)).run(files)
        t_pipe = time.perf_counter() - t0
        failed = [r for r in recs if r.status != "ok"]
        same = all(filecmp.cmp(tmp / "serial" / f"{n}_detections.csv", tmp / "pipe" / f"{n}_detections.csv",
                               shallow=False) for n in output_names(files) if (tmp / "serial" / f"{n}_detections.csv").exists())
    n = len(files)
    print(f"{n} images, model {model.name}")
    print(f"serial loop: {t_serial:7.1f} s  {n / t_serial:6.2f} images/s")
    print(f"runner:      {t_pipe:7.1f} s  {n / t_pipe:6.2f} images/s   ({t_serial / t_pipe:.2f}x, "
          f"{args.workers or default_workers()} threads)")
    print(f"same detections: {same}; failed images: {len(failed)}")
    return 0 if same and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
