"""The ``eosdetect`` command line.

Exit codes: 0 success; 1 bad input or at least one failed image (a one-line
message names the file and the reason); 2 usage error. TensorFlow is imported
only by the commands that run a network.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import EosdetectError

log = logging.getLogger("eosdetect")


def _number(low: float, high: float = float("inf"), *, low_open: bool = False):
    """An argparse type: a float in ``[low, high]`` (``(low, high]`` when ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low or value > high or (low_open and value == low):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            rng = f"between {low:g} and {high:g}" if high != float("inf") else bound
            raise argparse.ArgumentTypeError(f"must be {rng}, got {text}")
        return value

    return parse


_positive_float = _number(0.0, low_open=True)
_unit_float = _number(0.0, 1.0)
_nonneg_float = _number(0.0)


def build_parser() -> argparse.ArgumentParser:
    from .models.store import DEFAULT_MODEL

    parser = argparse.ArgumentParser(
        prog="eosdetect",
        description="Find and count eosinophils (or other cells) in stained slide images.",
    )
    parser.add_argument("--version", action="version", version=f"eosdetect {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # -- count
    p = sub.add_parser(
        "count",
        help="count cells in images; write per-cell CSVs, overlays, counts.csv and summary.json",
        description="Count cells in every image (files or folders, searched recursively). "
        "Writes OUT_DIR/<name>_detections.csv, <name>_overlay.png, counts.csv and summary.json. "
        "A bad image is reported and skipped; images already done with the same settings are "
        "skipped unless --overwrite.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL,
                   help=f"bundled model name or model folder (default {DEFAULT_MODEL}; see 'eosdetect models')")
    p.add_argument("-o", "--out-dir", default="results", help="output folder (default ./results)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM",
                   help="micrometres per pixel of the input images; rescales them to the model and "
                   "enables densities (default: assume the model's training pixel size, no densities)")
    p.add_argument("--hpf-area", type=_positive_float, default=0.24, metavar="MM2",
                   help="area of one high-power field in mm^2 (default 0.24)")
    p.add_argument("--threshold", type=_nonneg_float, default=15, metavar="N",
                   help="flag images whose peak count per HPF is at least N (default 15)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    g = p.add_argument_group("post-processing (override the model's fitted thresholds.json)")
    g.add_argument("--prob-threshold", type=_unit_float, metavar="P", help="U-Net probability threshold")
    g.add_argument("--min-distance", type=_nonneg_float, metavar="UM", help="smallest distance between cell centres")
    g.add_argument("--min-area", type=_nonneg_float, metavar="UM2", help="smallest cell area")
    g.add_argument("--max-area", type=_nonneg_float, metavar="UM2", help="largest cell area")
    g.add_argument("--helper-threshold", type=_unit_float, metavar="P",
                   help="helper CNN probability needed to count a cell (two-stage models)")
    p.set_defaults(func=cmd_count)

    # -- models
    p = sub.add_parser("models", help="list the bundled models with their cards",
                       description="List the bundled models: what they count, on what data, how well.")
    p.add_argument("name", nargs="?", help="show the full model card of this model (name or folder)")
    p.set_defaults(func=cmd_models)
    return parser


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def cmd_count(args) -> int:
    from tqdm import tqdm

    from .io import find_images
    from .models.store import load_model
    from .runner import CountRun, CountSettings

    images = find_images(args.inputs)
    model = load_model(args.model)
    thresholds = model.thresholds.replace(
        prob_threshold=args.prob_threshold, min_distance_um=args.min_distance, min_area_um2=args.min_area,
        max_area_um2=args.max_area, helper_threshold=args.helper_threshold,
    )
    settings = CountSettings(
        pixel_size_um=args.pixel_size, hpf_area_mm2=args.hpf_area, threshold=args.threshold,
        thresholds=thresholds, overlay=not args.no_overlay, overwrite=args.overwrite,
    )
    run = CountRun(model, args.out_dir, settings)
    bar = tqdm(total=len(images), unit="image", desc=f"counting ({model.name})", disable=None, file=sys.stderr)

    def progress(rec):
        bar.update(1)
        if rec.status == "error":
            bar.write(f"eosdetect: error: {rec.error}", file=sys.stderr)

    try:
        records = run.run(images, progress=progress)
    finally:
        bar.close()
    failed = [r for r in records if r.status == "error"]
    done = [r for r in records if r.status != "error"]
    total = sum(int(r.row.get("count") or 0) for r in done)
    skipped = sum(r.status == "skipped" for r in records)
    print(
        f"{len(done)} image(s) counted"
        + (f" ({skipped} already done, skipped)" if skipped else "")
        + f", {total} {model.config.class_name}(s) in all"
        + (f"; {len(failed)} failed" if failed else "")
        + f". Results in {Path(args.out_dir)}/ (counts.csv, summary.json)"
    )
    return 1 if failed else 0


def cmd_models(args) -> int:
    from .models.store import DEFAULT_MODEL, bundled_names, load_model

    if args.name:
        model = load_model(args.name)
        print(model.card or f"{model.name}: no MODEL_CARD.md in {model.path}")
        return 0
    names = bundled_names()
    if not names:
        print("no bundled models found")
        return 1
    for name in names:
        m = load_model(name)
        v = (m.metrics or {}).get("validation", {})
        metric = f"validation F1 {v['f1']:.3f} (P {v['precision']:.3f}, R {v['recall']:.3f})" if "f1" in v else "no metrics"
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}  v{m.config.version}  counts: {m.config.class_name}  {metric}")
        if m.config.description:
            print(f"    {m.config.description}")
    print("\n'eosdetect models NAME' shows a model's full card.")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _quiet_tensorflow()
    try:
        return int(args.func(args) or 0)
    except EosdetectError as exc:
        print(f"eosdetect: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # cannot write outputs: full disk, permissions, a file where a folder should be
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"eosdetect: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("eosdetect: interrupted; finished images are kept, re-run to resume", file=sys.stderr)
        return 130


def entry_point() -> None:  # console_scripts target
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
