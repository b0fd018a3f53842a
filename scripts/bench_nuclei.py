#!/usr/bin/env python
"""Speed of the `nuclei-he` model against the classical nuclei pipeline, per 1000x1000 tile, in one process.

    python scripts/bench_nuclei.py [--runs 3] [--tiles 3]

Baseline: :func:`eosdetect.core.candidates.classical_nuclei` (haematoxylin
channel by colour deconvolution, Otsu threshold, distance watershed) with
the parameters fitted on the validation tiles (``baseline_classical`` in the
model's metrics.json). eosdetect: ``model.detect`` of the bundled model as
configured (LiteRT, test-time augmentation as in its config), and with
test-time augmentation turned on, for comparison. Marginal time: median over
``--runs`` runs of each of ``--tiles`` MoNuSeg validation tiles, after one
warm-up, so start-up is not counted. Also printed: validation F1 of each, as
measured in the model's metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.core.candidates import classical_nuclei  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402
from eosdetect.training import recipes  # noqa: E402
from eosdetect.training import shared_data as sd  # noqa: E402


def per_tile_seconds(run, images, runs: int) -> float:
    """Median seconds of ``run(image)`` per image, after one warm-up call."""
    run(images[0])
    times = []
    for _ in range(runs):
        for image in images:
            t0 = time.perf_counter()
            run(image)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=3)
    args = ap.parse_args(argv)
    _, val = sd.monuseg_split(sd.load_monuseg())
    images = [recipes.nuclei_eval_item(i).image for i in val[: args.tiles]]
    model = load_model("nuclei-he")
    params = model.metrics["baseline_classical"]["params"]
    px = sd.MONUSEG_PIXEL_SIZE_UM
    classical = per_tile_seconds(lambda im: classical_nuclei(im, pixel_size_um=px, **params), images, args.runs)
    default = per_tile_seconds(lambda im: model.detect(im, pixel_size_um=px), images, args.runs)
    tta_model = load_model("nuclei-he")
    tta_model.config = dataclasses.replace(model.config, unet_tta=True)
    tta = per_tile_seconds(lambda im: tta_model.detect(im, pixel_size_um=px), images, args.runs)
    f1 = model.metrics["validation"]["f1"]
    tta_f1 = next((r["validation_before"]["f1"] for r in model.metrics.get("remeasured", [])
                   if r["changed"].get("unet_tta") == [True, False]), None)
    print(f"per {images[0].shape[1]}x{images[0].shape[0]} tile, median of {args.runs} runs x {len(images)} tiles "
          f"(runtime {model.runtime_used}):")
    rows = [("classical pipeline (baseline)", classical, model.metrics["baseline_classical"]["summary"]["f1"]),
            (f"nuclei-he, unet_tta={model.config.unet_tta}", default, f1),
            ("nuclei-he, unet_tta=True", tta, tta_f1)]
    for label, seconds, score in rows:
        print(f"  {label:<34} {seconds:.3f} s  {seconds / classical:.2f}x"
              + (f"  validation F1 {score:.4f}" if score is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
