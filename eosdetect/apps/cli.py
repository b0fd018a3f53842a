"""The ``eosdetect`` command line.

Exit codes: 0 success; 1 bad input or at least one failed image (a one-line
message names the file and the reason); 2 usage error. TensorFlow is imported
only by the commands that run a network.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from eosdetect import __version__
from eosdetect.apps.batch.naming import EXPORT_FORMATS
from eosdetect.errors import ConfigError, EosdetectError

log = logging.getLogger("eosdetect")


def _number(low: float, high: float = float("inf"), *, low_open: bool = False):
    """An argparse type: a float in ``[low, high]`` (``(low, high]`` when ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or value > high or (low_open and value == low):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            rng = f"between {low:g} and {high:g}" if high != float("inf") else bound
            raise argparse.ArgumentTypeError(f"must be {rng}, got {text}")
        return value

    return parse


_positive_float = _number(0.0, low_open=True)
_unit_float = _number(0.0, 1.0)
_nonneg_float = _number(0.0)


def _integer(low: int, high: int | None = None):
    """An argparse type: an integer >= ``low`` (and <= ``high``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            rng = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {rng}, got {text}")
        return value

    return parse


def _noun(n: int, word: str) -> str:
    """``"1 eosinophil"``, ``"3 eosinophils"``, ``"2 nuclei"``: a count with its class name."""
    if n == 1:
        return f"{n} {word}"
    irregular = {"nucleus": "nuclei", "bacterium": "bacteria"}
    if word in irregular:
        return f"{n} {irregular[word]}"
    return f"{n} {word}" if word.endswith("s") else f"{n} {word}s"


_positive_int = _integer(1)
_nonneg_int = _integer(0)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from eosdetect.models.store import DEFAULT_MODEL

    parser = _Parser(
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
    p.add_argument("--threshold", type=_nonneg_float, metavar="N",
                   help="flag images whose peak count per HPF is at least N (default 15 for eosinophil "
                   "models; other models are not flagged unless N is given)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    p.add_argument("--export", action="append", choices=EXPORT_FORMATS, default=[], metavar="FORMAT",
                   help="also write each image's cells in this format (repeatable): geojson, <name>.geojson as "
                        "QuPath reads it (outlines, classes, scores, the densest high-power field); napari, "
                        "<name>_napari.csv, a Points layer napari opens as is")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="images counted at once on this machine (default: CPU cores + 1, at most 4)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="count on a Dask cluster, e.g. tcp://host:8786 (workers need eosdetect installed; "
                   "this machine reads the images and writes every output; pip install 'eosdetect[distributed]')")
    p.add_argument("--block-size", type=_positive_int, default=1024, metavar="PX",
                   help="whole-slide images (SVS, NDPI, pyramidal TIFF over 64 MP) are counted block by block: "
                   "block side in pixels at the model's scale (default 1024; smaller uses less memory)")
    _threshold_options(p)
    p.set_defaults(func=cmd_count)

    # -- prelabel
    p = sub.add_parser(
        "prelabel",
        help="write machine pre-labels as LabelImg Pascal VOC XML, for a person to correct",
        description="Detect cells and write <name>.xml (Pascal VOC, exactly as LabelImg writes it) next to "
        "each image or in OUT_DIR. Uncertain cells are marked 'difficult' to be checked first. Files marked "
        "verified in LabelImg are never touched; other existing files keep their boxes and gain only new, "
        "non-overlapping candidates.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"bundled model name or model folder (default {DEFAULT_MODEL})")
    p.add_argument("-o", "--out-dir", help="write the XML files here (default: next to each image)")
    p.add_argument("--class-name", help="class name written in the boxes (default the model's class)")
    p.add_argument("--min-score", type=_unit_float, metavar="S",
                   help="lowest score written as a box (default: half the model's counting threshold for "
                   "two-stage models, every detection otherwise)")
    p.add_argument("--uncertain-below", type=_unit_float, metavar="S",
                   help="boxes scoring below this are marked difficult (default: the counting threshold of "
                   "two-stage models; the probability threshold + 0.2 for one-stage ones)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM", help="micrometres per pixel of the images")
    p.add_argument("--classical", choices=["smear", "he"],
                   help="no network: classical candidates (smear: white cells in Wright/Giemsa smears, "
                   "he: nuclei in H&E), every box marked difficult")
    p.add_argument("--helper", metavar="MODEL", help="take the helper (and its threshold) from this "
                   "two-stage model folder, on top of the U-Net of -m")
    p.add_argument("--yolo", action="store_true", help="also write LabelImg's YOLO files (<name>.txt, classes.txt)")
    p.set_defaults(func=cmd_prelabel)

    # -- evaluate
    p = sub.add_parser(
        "evaluate",
        help="measure a model on labelled images: precision, recall, F1, count error, PR curve, error overlays",
        description="Detect cells in labelled images and match them one-to-one to the labels. Writes "
        "OUT_DIR/metrics.json, per_image.csv, pr_curve.csv/.png and <name>_errors.png (correct, false "
        "and missed cells in three colours).",
    )
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"bundled model name or model folder (default {DEFAULT_MODEL})")
    _label_options(p)
    p.add_argument("-o", "--out-dir", default="report", help="report folder (default ./report)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM",
                   help="micrometres per pixel of the images (default: the model's training pixel size)")
    p.add_argument("--radius", type=_nonneg_float, metavar="UM",
                   help="a detection within this distance of a true cell's centre may match it (default half "
                   "the model's cell diameter); a detection inside a true box or mask always may")
    p.add_argument("--count-threshold", type=_nonneg_float, metavar="N",
                   help="also report agreement on 'count >= N' per image (e.g. 15)")
    p.add_argument("--subset", metavar="FILE", help="text file naming the images to use, one per line")
    p.add_argument("--no-overlays", action="store_true", help="do not write the error overlays")
    _threshold_options(p)
    p.set_defaults(func=cmd_evaluate)

    # -- train
    p = sub.add_parser(
        "train",
        help="train a U-Net model folder from labelled images",
        description="Train a U-Net on labelled images and write a complete model folder (config, weights, "
        "thresholds fitted on the validation images, metrics, model card, epoch log). Images are split into "
        "training and validation by a fixed hash of their names.",
    )
    _label_options(p)
    p.add_argument("-o", "--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    p.add_argument("--config", metavar="FILE", help="YAML config (model, thresholds, threshold_grid, train "
                   "sections; see configs/unet.yaml). Command-line options override it.")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="number of epochs (overrides the config)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM", help="micrometres per pixel of the images")
    p.add_argument("--cell-diameter", type=_positive_float, metavar="UM",
                   help="typical cell diameter (micrometres; pixels without --pixel-size). Needed for point "
                   "labels; measured from boxes and masks otherwise")
    p.add_argument("--name", help="model name (default the folder name)")
    p.add_argument("--val-fraction", type=_number(0.0, 0.9, low_open=True), default=0.2, metavar="F",
                   help="fraction of images held out for validation (default 0.2)")
    p.add_argument("--val-images", metavar="FILE", help="text file naming the validation images (instead of the hash split)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training in MODEL_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.add_argument("--dry-run", action="store_true",
                   help="only write MODEL_DIR/dry-run/<name>_target.png pictures of the training targets "
                   "for a few images, and report what would be trained")
    p.set_defaults(func=cmd_train)

    # -- train-helper
    p = sub.add_parser(
        "train-helper",
        help="train the helper classifier that tells the target class from look-alikes; writes a two-stage model folder",
        description="Train a helper classifier on crops around the base model's U-Net candidates: positives at "
        "the labelled cells of --class, negatives at the other candidates. Writes a model folder combining "
        "the base model's U-Net with the new helper, its counting threshold fitted on the validation images. "
        "The helper is of the base model's kind (helper_kind: cnn, a small CNN, or colour, a logistic regression "
        "on colour statistics) unless --config says otherwise.",
    )
    _label_options(p)
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"base model whose U-Net finds the candidates (default {DEFAULT_MODEL})")
    p.add_argument("-o", "--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    p.add_argument("--config", metavar="FILE", help="YAML config: helper_* keys in 'model' (e.g. helper_kind: colour), "
                   "helper_* keys in 'train'")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="CNN helper epochs (overrides the config)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM", help="micrometres per pixel of the images")
    p.add_argument("--name", help="model name (default the folder name)")
    p.add_argument("--val-fraction", type=_number(0.0, 0.9, low_open=True), default=0.2, metavar="F",
                   help="fraction of images held out for validation (default 0.2)")
    p.add_argument("--val-images", metavar="FILE", help="text file naming the validation images")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=cmd_train_helper)

    # -- adapt
    p = sub.add_parser(
        "adapt",
        help="adapt a model's multi-class helper to your lab from a few dozen labelled cells; writes a model folder",
        description="Fine-tune the helper of a model with a white-cell differential (the default "
        f"{DEFAULT_MODEL}) on your own labelled images, e.g. pre-labels corrected in LabelImg: the cells of "
        "--class you labelled are positives, every other cell the U-Net finds there keeps the model's own "
        "class but is not the counted one. Minutes on a CPU. The new folder works with count, prelabel and "
        "evaluate (-m MODEL_DIR); check it with evaluate on images not used here.",
    )
    _label_options(p)
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"model to adapt (default {DEFAULT_MODEL})")
    p.add_argument("-o", "--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM",
                   help="micrometres per pixel of the images; becomes the new model's default")
    p.add_argument("--name", help="model name (default the folder name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=cmd_adapt)

    # -- models
    p = sub.add_parser("models", help="list the bundled models with their cards",
                       description="List the bundled models: what they count, on what data, how well.")
    p.add_argument("name", nargs="?", help="show the full model card of this model (name or folder)")
    p.set_defaults(func=cmd_models)

    # -- export
    p = sub.add_parser(
        "export", help="convert a model folder's networks to LiteRT (needs TensorFlow)",
        description="Write unet.tflite (and helper.tflite) beside a model folder's Keras weights, so that "
        "counting with it needs no TensorFlow. Training does this itself; this is for a folder whose weights "
        "were changed or that was trained before. Needs TensorFlow: pip install 'eosdetect[train]'.",
    )
    p.add_argument("model", help="the model folder (or a bundled model's name)")
    p.set_defaults(func=cmd_export)

    # -- serve
    p = sub.add_parser(
        "serve", help="web page and REST API: upload images, see the cells and the count",
        description="Serve the counting pipeline over HTTP: a page at http://HOST:PORT/ to upload images, and "
        "a REST API (POST /api/v1/count, POST /api/v1/prelabel, GET /api/v1/models, GET /healthz; schema "
        "at /openapi.json). Needs the web extras: pip install 'eosdetect[serve]'.",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--port", type=_integer(1, 65535), default=8000, help="port (default 8000)")
    p.add_argument("-m", "--model", help="default model: a bundled name or a model folder")
    p.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                   help="also offer this model folder (repeatable)")
    p.add_argument("--max-upload-mb", type=_positive_float, default=30.0, metavar="MB",
                   help="largest upload accepted; larger gets 413 (default 30)")
    p.add_argument("--max-megapixels", type=_positive_float, default=30.0, metavar="MP",
                   help="largest image counted while the client waits; larger gets 413 (default 30)")
    p.add_argument("--workers", type=_positive_int, default=2, help="images counted at once (default 2)")
    p.add_argument("--queue", type=_nonneg_int, default=16,
                   help="requests that may wait for a worker; more get 503 (default 16)")
    p.set_defaults(func=cmd_serve)
    # -- labels
    from eosdetect.apps.labels import add_parser as add_labels_parser

    add_labels_parser(sub, warn=_warn, noun=_noun)
    return parser


def _threshold_options(p) -> None:
    g = p.add_argument_group("post-processing (override the model's fitted thresholds.json)")
    g.add_argument("--prob-threshold", type=_unit_float, metavar="P", help="U-Net probability threshold")
    g.add_argument("--min-distance", type=_nonneg_float, metavar="UM", help="smallest distance between cell centres")
    g.add_argument("--min-area", type=_nonneg_float, metavar="UM2", help="smallest cell area")
    g.add_argument("--max-area", type=_nonneg_float, metavar="UM2", help="largest cell area")
    g.add_argument("--helper-threshold", type=_unit_float, metavar="P",
                   help="helper probability needed to count a cell (two-stage models)")


def _label_options(p) -> None:
    from eosdetect.training.labelset import FORMATS

    g = p.add_argument_group("labelled images")
    g.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    g.add_argument("--labels", required=True, metavar="DIR",
                   help="folder of label files named like the images (points: or one CSV with an image column)")
    g.add_argument("--label-format", choices=FORMATS, default="voc",
                   help="voc: LabelImg XML boxes; points: CSV x,y[,class]; mask: binary or instance masks; "
                   "monuseg: MoNuSeg XML polygons; painted: copies of the images with green dots (default voc)")
    g.add_argument("--class", "--class-name", dest="class_name", metavar="NAME",
                   help="class to use when the labels hold several (VOC names, CSV class column)")
    g.add_argument("--allow-unlabelled-as-empty", action="store_true",
                   help="take images without a label file as having no cells (otherwise an error)")
    g.add_argument("--verified-only", action="store_true", help="VOC: use only files marked verified in LabelImg")


def _name_list(path) -> list[str]:
    from eosdetect.errors import InputError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(p, exc.strerror or "cannot read") from None
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise InputError(p, "names no image")
    return names


def _thresholds_from_args(model, args):
    return model.thresholds.replace(
        prob_threshold=args.prob_threshold, min_distance_um=args.min_distance, min_area_um2=args.min_area,
        max_area_um2=args.max_area, helper_threshold=args.helper_threshold,
    )


#: Commands that train, and so need TensorFlow (the others run the networks on LiteRT).
_TRAIN_COMMANDS = {"train", "train-helper", "adapt", "export"}


def _load_tensorflow(args) -> None:
    """Import TensorFlow for a command that trains, with its start-up chatter kept off the
    terminal (-v shows it); a missing TensorFlow is a one-line error saying how to install it."""
    from eosdetect.models.runtime import import_tensorflow

    def threads():
        from eosdetect.training.train import reproducible_threads

        reproducible_threads()  # must come before TensorFlow starts

    import_tensorflow(f"eosdetect {args.command}", before_start=None if args.command == "export" else threads)


def cmd_export(args) -> int:
    from eosdetect.models.export import export_model
    from eosdetect.models.store import load_model

    manifest = export_model(load_model(args.model, runtime="keras"))
    print(f"converted to LiteRT: {', '.join(sorted(p.name for p in manifest.parent.glob('*.tflite')))} "
          f"in {manifest.parent}")
    return 0


def cmd_count(args) -> int:
    from tqdm import tqdm

    from eosdetect.apps.layout import skip_outputs
    from eosdetect.io import find_images
    from eosdetect.models.store import load_model, read_config

    # a missing file is reported with the other failed images; the output folder is not an input
    images = find_images(args.inputs, keep_missing=True, skip=skip_outputs(args.out_dir))
    _check_pixel_size(read_config(args.model), args.pixel_size)  # one error now, not one per image
    model = load_model(args.model)
    thresholds = _thresholds_from_args(model, args)
    from eosdetect.apps.batch.run import CountRun, CountSettings
    settings = CountSettings(
        pixel_size_um=args.pixel_size, hpf_area_mm2=args.hpf_area, threshold=args.threshold,
        thresholds=thresholds, overlay=not args.no_overlay, exports=tuple(dict.fromkeys(args.export)),
        overwrite=args.overwrite, slide_block=args.block_size, scheduler=args.scheduler, workers=args.workers or 0,
    )
    run = CountRun(model, args.out_dir, settings)
    bar = tqdm(total=len(images), unit="image", desc=f"counting ({model.name})", disable=None, file=sys.stderr)

    def progress(rec):
        bar.update(1)
        if rec.status == "error":
            bar.write(f"eosdetect: error: {rec.error}", file=sys.stderr)
        elif rec.status != "skipped" and rec.row.warning:
            bar.write(f"eosdetect: warning: {rec.image}: {rec.row.warning}", file=sys.stderr)

    try:
        records = run.run(images, progress=progress)
    finally:
        bar.close()
    failed = [r for r in records if r.status == "error"]
    done = [r for r in records if r.status != "error"]
    total = sum(int(r.row.count or 0) for r in done)
    skipped = sum(r.status == "skipped" for r in records)
    print(
        f"{len(done)} image(s) counted"
        + (f" ({skipped} already done, skipped)" if skipped else "")
        + f", {_noun(total, model.config.class_name)} in all"
        + (f"; {len(failed)} failed" if failed else "")
        + f". Results in {Path(args.out_dir)}/ (counts.csv, summary.json)"
    )
    if run.differential is not None:  # a multi-class helper: the white-cell differential of all the images
        print(run.differential.line())
    clinical = (run.summary or {}).get("clinical")
    if clinical:
        from eosdetect.apps.batch.tables import clinical_line

        print(clinical_line(clinical))
        if clinical.get("note"):
            _warn([clinical["note"]])
    return 1 if failed else 0


#: The flag that sets each parameter a library message may name as its ``option``
#: (:class:`eosdetect.errors.EosdetectError`, :class:`eosdetect.errors.Notice`).
FLAGS = {
    "cell_diameter_px": "--cell-diameter",
    "class_name": "--class",
    "labels": "--labels",
    "label_format": "--label-format",
    "allow_unlabelled_as_empty": "--allow-unlabelled-as-empty",
    "verified_only": "--verified-only",
    "cell_diameter_um": "--cell-diameter",
    "resume": "--overwrite, not --resume",  # named when resuming is refused: start afresh
}


def _with_flag(message) -> str:
    """A library error or notice as the command line words it: its text, and the flag of the
    parameter it names (its ``option``) after it, in parentheses."""
    flag = FLAGS.get(getattr(message, "option", None) or "")
    return f"{message} ({flag})" if flag else str(message)


def _warn(lines) -> None:
    for line in lines:
        print(f"eosdetect: warning: {_with_flag(line)}", file=sys.stderr)


def _check_pixel_size(config, pixel_size, use: str = "--pixel-size serves densities only") -> None:
    """One error now for a pixel size the model (its :class:`~eosdetect.ModelConfig`) cannot use, not
    one per image; a warning when the model's sizes are in pixels, so that the pixel size cannot
    rescale images (``use`` says what it does)."""
    config.scale_for(pixel_size)
    if pixel_size is not None and config.sizes_in_pixels:
        _warn([f"model {config.name!r} was trained without a pixel size, so images are not rescaled to it: "
               f"they must be at its training images' magnification; {use}"])


def cmd_prelabel(args) -> int:
    from tqdm import tqdm

    from eosdetect.apps.layout import skip_outputs
    from eosdetect.apps.prelabel import PrelabelSettings, prelabel_all, score_band
    from eosdetect.io import find_images
    from eosdetect.models.store import load_model, read_config

    if args.classical and args.helper:
        raise ConfigError("--classical pre-labels without any network: leave out --helper, or --classical")
    images = find_images(args.inputs, keep_missing=True, skip=skip_outputs(args.out_dir))
    settings = PrelabelSettings(class_name=args.class_name, min_score=args.min_score,
                                uncertain_below=args.uncertain_below, pixel_size_um=args.pixel_size, yolo=args.yolo,
                                classical=args.classical)
    if not args.classical:
        _check_pixel_size(read_config(args.model), args.pixel_size)
    model = None if args.classical else load_model(args.model)
    if args.helper and model is not None:
        from eosdetect.models.store import with_helper_of

        model = with_helper_of(model, load_model(args.helper))
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    source = f"classical {args.classical}" if model is None else model.name
    bar = tqdm(total=len(images), unit="image", desc=f"pre-labelling ({source})", disable=None, file=sys.stderr)

    def progress(rec):
        bar.update(1)
        if rec.status == "error":
            bar.write(f"eosdetect: error: {rec.error}", file=sys.stderr)

    try:
        records = prelabel_all(model, images, out_dir, settings, progress=progress)
    finally:
        bar.close()
    lo, hi = score_band(model, settings) if model is not None else (0.0, 1.0)
    by = {k: [r for r in records if r.status == k] for k in ("written", "merged", "unchanged", "verified", "error")}
    boxes = sum(r.new_boxes for r in records)
    uncertain = sum(r.uncertain for r in records)
    print(f"{len(by['written'])} file(s) written, {len(by['merged'])} existing one(s) gained boxes, "
          f"{len(by['unchanged'])} had nothing new, {len(by['verified'])} verified file(s) left alone"
          + (f", {len(by['error'])} failed" if by["error"] else "")
          + f"; {boxes} new box(es), {uncertain} marked difficult "
          + ("(no classifier scored them: check every box)." if model is None else
             f"(score {lo:.2f} to {hi:.2f}: check these first)."))
    return 1 if by["error"] else 0


def cmd_evaluate(args) -> int:
    from tqdm import tqdm

    from eosdetect.apps.layout import skip_outputs
    from eosdetect.core.metrics import fmt_rate
    from eosdetect.models.store import load_model, read_config

    _check_pixel_size(read_config(args.model), args.pixel_size)
    model = load_model(args.model)
    cfg = model.config
    from eosdetect.training.evaluation import PredictionCache, evaluate_model
    from eosdetect.training.labelset import eval_item, load_labelled
    from eosdetect.training.report import write_report

    items, report = load_labelled(
        args.images, args.labels, args.label_format, class_name=args.class_name,
        allow_unlabelled_as_empty=args.allow_unlabelled_as_empty, verified_only=args.verified_only,
        subset=_name_list(args.subset) if args.subset else None, default_class=cfg.class_name,
        skip=skip_outputs(args.out_dir),
    )
    _warn(report.warnings())
    if report.class_name and report.class_name.casefold() != cfg.class_name.casefold():
        _warn([f"the labels' class {report.class_name!r} is not what {model.name} counts ({cfg.class_name!r}): "
               f"every {report.class_name} it does not count is scored as missed"])
    pixel = cfg.input_pixel_size(args.pixel_size)
    radius_um = cfg.cell_diameter_um / 2 if args.radius is None else args.radius
    evals = [eval_item(it, radius_um / pixel) for it in items]
    thresholds = _thresholds_from_args(model, args)
    with tqdm(total=len(evals), unit="image", desc=f"predicting ({model.name})", disable=None, file=sys.stderr) as bar:
        cache = PredictionCache(model, evals, args.pixel_size, progress=lambda: bar.update(1))
    ev = evaluate_model(model, evals, thresholds=thresholds, cache=cache, keep_detections=True)
    settings = {
        "images": str(args.images), "labels": str(args.labels), "label_format": args.label_format,
        "class": args.class_name or cfg.class_name, "pixel_size_um": pixel,
        "pixel_size_given": args.pixel_size is not None, "match_radius_um": radius_um,
        "subset": args.subset, "labels_report": report.to_dict(),
    }
    with tqdm(total=len(evals), unit="image", desc="writing report", disable=None, file=sys.stderr) as bar:
        metrics = write_report(args.out_dir, model, evals, ev, cache=cache, overlays=not args.no_overlays,
                               count_threshold=args.count_threshold, settings=settings,
                               progress=lambda: bar.update(1))
    s = metrics["summary"]
    n_true = sum(1 for r in ev["per_image"] if r["true"] > 0)
    if s.get("count_mape") is None:
        mape = "relative error n/a: no image has labelled cells"
    elif n_true < s["n_images"]:
        mape = f"{s['count_mape'] * 100:.1f}% relative, over the {n_true} image(s) with labelled cells"
    else:
        mape = f"{s['count_mape'] * 100:.1f}%"
    print(f"{model.name} on {s['n_images']} image(s): precision {fmt_rate(s['precision'])}, recall {fmt_rate(s['recall'])}, "
          f"F1 {s['f1']:.3f} ({s['tp']} correct, {s['fp']} false, {s['fn']} missed); count error per image "
          f"{s['count_mae']:.2f} ({mape}). Report in {Path(args.out_dir)}/")
    return 0


def cmd_train(args) -> int:
    from eosdetect.apps.layout import skip_outputs
    from eosdetect.errors import InputError
    from eosdetect.training.labelset import load_labelled
    from eosdetect.training.train import reproducible_threads

    reproducible_threads()

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and any(p for p in out.iterdir() if p.name != "dry-run") and not (args.overwrite or args.resume or args.dry_run):
        raise InputError(out, "model folder exists; use --overwrite to replace it or --resume to continue training")
    if args.resume and not (out / ".train").is_dir():
        raise InputError(out, "nothing to resume (no interrupted training in this folder)")
    file_cfg = _file_config(args.config)
    items, report = load_labelled(
        args.images, args.labels, args.label_format, class_name=args.class_name,
        allow_unlabelled_as_empty=args.allow_unlabelled_as_empty, verified_only=args.verified_only,
        skip=skip_outputs(out),
    )
    _warn(report.warnings())
    if args.dry_run:
        return _train_dry_run(args, items, report, file_cfg)
    from eosdetect.training.train import train_from_labels

    command = _command_line("train")
    try:
        metrics = train_from_labels(
            items, out, file_cfg=file_cfg, name=args.name, class_name=args.class_name or _single_class(report),
            input_pixel_size_um=args.pixel_size, cell_diameter_um=args.cell_diameter, epochs=args.epochs,
            val_fraction=args.val_fraction, val_names=_name_list(args.val_images) if args.val_images else None,
            resume=args.resume, label_report=report.to_dict(), command=command,
            verbose=1 if sys.stderr.isatty() else 2,
        )
    except KeyboardInterrupt:
        print(f"eosdetect: interrupted; continue with the same command and --resume (checkpoints in {out}/.train)",
              file=sys.stderr)
        return 130
    print(f"model written to {out}/: {_validation_line(metrics['validation'])}. "
          f"Check it with: eosdetect evaluate -m {out} ...")
    return 0


def _validation_line(v: dict) -> str:
    """'validation F1 ...', or why there is none (no labelled cell among the validation images)."""
    from eosdetect.core.metrics import fmt_rate

    if v.get("tp", 0) + v.get("fn", 0) == 0:
        return (f"validation F1 not measured: no labelled cell among the {v['n_images']} validation image(s) "
                f"({v.get('fp', 0)} detection(s) there); give more images or --val-images")
    return (f"validation F1 {v['f1']:.3f} (precision {fmt_rate(v['precision'])}, recall {fmt_rate(v['recall'])}) "
            f"on {v['n_images']} image(s)")


def _new_model_folder(args) -> Path:
    """``args.out``, refused when it exists and is not empty, unless ``--overwrite``."""
    from eosdetect.errors import InputError

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise InputError(out, "model folder exists; use --overwrite to replace it")
    return out


def _labelled_for(args, base, out: Path, class_name):
    """The labelled images of the command line's label options (warnings shown), for a base model."""
    from eosdetect.apps.layout import skip_outputs
    from eosdetect.training.labelset import load_labelled

    items, report = load_labelled(
        args.images, args.labels, args.label_format, class_name=class_name,
        allow_unlabelled_as_empty=args.allow_unlabelled_as_empty, verified_only=args.verified_only,
        default_class=base.config.class_name, skip=skip_outputs(out),
    )
    _warn(report.warnings())
    return items, report


def cmd_train_helper(args) -> int:
    from eosdetect.models.store import load_model
    from eosdetect.training.train import reproducible_threads, train_helper_from_labels

    reproducible_threads()
    out = _new_model_folder(args)
    file_cfg = _file_config(args.config)
    base = load_model(args.model)
    _check_pixel_size(base.config, args.pixel_size, use="--pixel-size is not used")
    items, report = _labelled_for(args, base, out, args.class_name)
    command = _command_line("train-helper")
    metrics = train_helper_from_labels(
        base, items, out, file_cfg=file_cfg, name=args.name, class_name=args.class_name or _single_class(report),
        input_pixel_size_um=args.pixel_size, epochs=args.epochs, val_fraction=args.val_fraction,
        val_names=_name_list(args.val_images) if args.val_images else None, command=command,
        label_report=report.to_dict(), verbose=1 if sys.stderr.isatty() else 2,
    )
    print(f"model written to {out}/ ({base.name}'s U-Net + the new helper): {_validation_line(metrics['validation'])}")
    return 0


def cmd_adapt(args) -> int:
    from eosdetect.errors import ConfigError
    from eosdetect.models.store import load_model
    from eosdetect.training.helper import adapt_model
    from eosdetect.training.train import reproducible_threads

    reproducible_threads()
    out = _new_model_folder(args)
    base = load_model(args.model)
    if not base.config.multiclass:
        raise ConfigError(f"{base.name} has no multi-class helper to adapt; use train-helper to train one")
    if args.class_name and args.class_name != base.config.class_name:
        raise ConfigError(f"{base.name} counts {base.config.class_name}: label those (--class "
                          f"{base.config.class_name}), not {args.class_name}")
    _check_pixel_size(base.config, args.pixel_size, use="--pixel-size is not used")
    items, report = _labelled_for(args, base, out, base.config.class_name)
    metrics = adapt_model(base, items, out, name=args.name, input_pixel_size_um=args.pixel_size,
                          command=_command_line("adapt"), label_report=report.to_dict(),
                          verbose=1 if sys.stderr.isatty() else 2)
    a = metrics["adaptation"]
    cells = ", ".join(f"{n} {k}" for k, n in a["cells"].items())
    after = a["on_the_adaptation_cells"]["after"]
    print(f"model written to {out}/ ({base.name} adapted on {len(items)} image(s): {cells}; "
          f"{metrics['training']['seconds']['helper']:.0f} s). On those cells it now counts "
          f"{after['counted_of_labelled']} of the labelled and {after['counted_of_others']} of the others; "
          f"check it with: eosdetect evaluate -m {out} on images not used here")
    return 0


def _file_config(path) -> dict:
    """The sections of a YAML training config (empty without one), remembering its path."""
    if not path:
        return {}
    from eosdetect.training.train import load_config_file

    cfg = load_config_file(path)
    cfg["_path"] = str(path)
    return cfg


def _command_line(command: str) -> str:
    """How this run was started, for the model card ('' when not called from the shell)."""
    import shlex

    return "eosdetect " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == [command] else ""


def _single_class(report) -> str | None:
    classes = [c for c in report.classes_found if c]
    return classes[0] if len(classes) == 1 else None


def _train_dry_run(args, items, report, file_cfg) -> int:
    from eosdetect.io import atomic_write_bytes, encode_png
    from eosdetect.training.labelset import target_preview, training_sample
    from eosdetect.training.train import TrainConfig, plan_config, split_items

    out = Path(args.out)
    config, thr, grid = plan_config(file_cfg, items, name=args.name or out.name,
                                    class_name=args.class_name or _single_class(report),
                                    input_pixel_size_um=args.pixel_size, cell_diameter_um=args.cell_diameter)
    tcfg = TrainConfig.from_dict(file_cfg.get("train", {}))
    # the split real training makes (same name matching, same errors for unknown names)
    train, val = split_items(items, args.val_fraction, tcfg.train_seed,
                             _name_list(args.val_images) if args.val_images else None)
    folder = out / "dry-run"
    shown = sorted(items, key=lambda it: it.n_objects == 0)[:8]  # images with objects first: targets to see
    for it in shown:
        sample = training_sample(it, config)
        atomic_write_bytes(folder / f"{it.name}_target.png", encode_png(target_preview(it, sample)))
    if config.sizes_in_pixels:
        scale = (f"No pixel size given, so sizes are in image pixels: network at 1/{config.pixel_size_um:g} of the "
                 f"image size; cell diameter {config.cell_diameter_um:g} image px")
    else:
        estimate = "" if config.pixel_size_measured else " (an estimate)"
        scale = (f"images at {config.input_pixel_size_um:g} um/px{estimate}, network at {config.pixel_size_um:g} "
                 f"um/px (1/{config.pixel_size_um / config.input_pixel_size_um:g} of the image size); "
                 f"cell diameter {config.cell_diameter_um:g} um")
    print(f"{len(items)} labelled image(s), {_noun(report.objects, config.class_name)}; {len(train)} for training, "
          f"{len(val)} for validation. {scale} = {config.cell_diameter_px:.1f} network pixels. "
          f"Training targets of {len(shown)} image(s) in {folder}/ (green: target outlines, +: centres, "
          "dimmed: ignored)")
    return 0


def cmd_models(args) -> int:
    from eosdetect.core.metrics import fmt_rate
    from eosdetect.models.store import DEFAULT_MODEL, bundled_names, load_model

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
        metric = (f"validation F1 {v['f1']:.3f} (P {fmt_rate(v['precision'])}, R {fmt_rate(v['recall'])})" if "f1" in v
                  else "no metrics")
        cv = (m.metrics or {}).get("crossval", {}).get("pooled", {})
        if "f1" in cv:  # the estimate for new images: thresholds were fitted on the validation images
            metric += f"; {m.metrics['crossval'].get('folds', 5)}-fold cross-validated F1 {cv['f1']:.3f}"
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}  v{m.config.version}  counts: {m.config.class_name}  {metric}")
        if m.config.description:
            print(f"    {m.config.description}")
    print("\n'eosdetect models NAME' shows a model's full card.")
    return 0


def cmd_serve(args) -> int:
    from eosdetect.errors import EosdetectError

    try:
        from eosdetect.apps.server import ServeSettings, serve
    except ImportError as exc:
        raise EosdetectError(f"eosdetect serve needs the web extras ({exc.name} is missing): "
                             "pip install 'eosdetect[serve]'") from None
    settings = ServeSettings(model=args.model, model_dirs=args.model_dir, max_upload_mb=args.max_upload_mb,
                             max_megapixels=args.max_megapixels, workers=args.workers, queue=args.queue)
    serve(settings, host=args.host, port=args.port, log_level=["warning", "info", "debug"][min(args.verbose, 2)])
    return 0


#: What an interrupted command keeps, by command.
INTERRUPTED = {
    "labels": "nothing was written",
    "count": "finished images are kept, re-run to resume",
    "prelabel": "finished label files are kept, re-run to go on",
    "evaluate": "no report was written; re-run it",
    "train": "re-run with --resume to go on from the last finished epoch",
    "train-helper": "no model was written; re-run with --overwrite",
    "adapt": "no model was written; re-run with --overwrite",
    "models": "nothing was changed",
    "serve": "server stopped",
}


def _stop_on_sigterm() -> None:
    """``timeout``, schedulers and ``docker stop`` send SIGTERM: stop as on Ctrl-C,
    so that temporary files are removed and finished work is kept."""
    import signal
    import threading

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main(argv=None) -> int:
    from eosdetect.io import ESCAPE_ODD_BYTES

    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed as in the tables
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=ESCAPE_ODD_BYTES)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # TensorFlow's own Python warnings (e.g. graph retracing) are for developers
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from eosdetect.models.runtime import show_native_output

    show_native_output(args.verbose > 0)
    from eosdetect.apps.decoder_warnings import routed_decoder_warnings

    try:
        _stop_on_sigterm()
        if args.command in _TRAIN_COMMANDS:
            _load_tensorflow(args)
        with routed_decoder_warnings():  # a decoder's warning names the file, once
            return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into a reader that stopped early (`eosdetect models | head -1`)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's exit flush does not fail again
        return 141  # what a shell reports for a process stopped by SIGPIPE
    except EosdetectError as exc:
        print(f"eosdetect: error: {_with_flag(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # cannot write outputs: full disk, permissions, a file where a folder should be
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        reason = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = "a file is in the way where a folder is needed"
        print(f"eosdetect: error: {where}{reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"eosdetect: interrupted; {INTERRUPTED.get(args.command, INTERRUPTED['count'])}", file=sys.stderr)
        return 130


def entry_point() -> None:  # console_scripts target
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
