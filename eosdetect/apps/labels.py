"""``eosdetect labels``: label files from one format to another.

``eosdetect labels convert`` reads labelled images in any ``--label-format``
(as ``train`` and ``evaluate`` read them) and writes them as one COCO JSON
file (:mod:`eosdetect.annotations.coco`), or as Label Studio tasks with the
labels as pre-labels to check, and the labeling configuration they fit
beside them (:mod:`eosdetect.annotations.labelstudio`).
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import partial
from pathlib import Path

#: What ``--to`` writes.
TARGETS = ("coco", "labelstudio")
#: The file written beside Label Studio tasks ``OUT.json``: ``OUT<suffix>``.
CONFIG_SUFFIX = "_labeling_config.xml"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parser(sub, *, warn, noun) -> argparse.ArgumentParser:
    """Add ``labels`` (with its action ``convert``) to the subcommands ``sub`` of the command line.

    ``warn(lines)`` prints warnings and ``noun(n, word)`` a count with its class name, as the
    command line does everywhere else (handed in: this module does not import the command line).
    """
    from eosdetect.annotations.labelstudio import LOCAL_FILES_URL
    from eosdetect.training.labelset import FORMATS

    p = sub.add_parser(
        "labels", help="convert labels to COCO JSON or to Label Studio tasks",
        description="Work on label files. 'eosdetect labels convert' writes labelled images, in any label format, "
        "as COCO JSON or as Label Studio pre-labels.",
    )
    actions = p.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    c = actions.add_parser(
        "convert", help="write labels as one COCO JSON file or as Label Studio tasks",
        description="Read labelled images as train and evaluate do, and write their cells to OUT.json: with --to "
        "coco, a COCO dataset (outlines as polygons, boxes, points as boxes of --cell-diameter with the point as "
        "keypoint, difficult boxes as crowds); with --to labelstudio, tasks to import into Label Studio with the "
        "cells as pre-labels (rectangles) to correct, and OUT" + CONFIG_SUFFIX + ", the labeling configuration "
        "to paste into the project (Settings > Labeling Interface > Code).",
    )
    c.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    c.add_argument("--labels", required=True, metavar="PATH",
                   help="folder of label files named like the images, or the one file of all (points CSV, coco, "
                        "labelstudio)")
    c.add_argument("--label-format", choices=FORMATS, default="voc",
                   help="format of --labels: " + ", ".join(FORMATS) + " (default voc)")
    c.add_argument("--class", "--class-name", dest="class_name", metavar="NAME",
                   help="class to convert when the labels hold several; the name written when they hold none "
                        "(default 'cell')")
    c.add_argument("--allow-unlabelled-as-empty", action="store_true",
                   help="take images without labels as having no cells (otherwise an error)")
    c.add_argument("--verified-only", action="store_true", help="VOC: use only files marked verified in LabelImg")
    c.add_argument("--to", required=True, choices=TARGETS, help="coco: COCO JSON; labelstudio: Label Studio tasks")
    c.add_argument("-o", "--out", required=True, metavar="OUT.json", help="file to write")
    c.add_argument("--cell-diameter", type=_positive, metavar="PX",
                   help="side of the box written around each point label, in image pixels (needed for points)")
    c.add_argument("--image-url", default=LOCAL_FILES_URL, metavar="PREFIX",
                   help="labelstudio: what comes before each image's path below --images in the tasks (default "
                        f"{LOCAL_FILES_URL}, Label Studio's local storage with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
                        "set to --images; or the URL of a web folder holding the images)")
    c.set_defaults(func=partial(cmd_labels_convert, warn=warn, noun=noun))
    return c


def cmd_labels_convert(args, *, warn, noun) -> int:
    from eosdetect.errors import InputError
    from eosdetect.training.labelset import load_labelled

    out = Path(args.out)
    if out.is_dir():
        raise InputError(out, "is a folder; name the JSON file to write")
    if Path(args.labels).is_file() and out.resolve() == Path(args.labels).resolve():
        raise InputError(out, "is the label file being converted; write to another file")
    items, report = load_labelled(
        args.images, args.labels, args.label_format, class_name=args.class_name,
        allow_unlabelled_as_empty=args.allow_unlabelled_as_empty, verified_only=args.verified_only,
    )
    warn(report.warnings())
    class_name = report.class_name or args.class_name or "cell"
    images = Path(args.images)
    root = images if images.is_dir() else images.parent
    n = sum(it.n_objects for it in items)
    ignored = sum(len(it.ignore_boxes) for it in items)
    if args.to == "coco":
        from eosdetect.annotations.coco import coco_dataset, write_coco

        write_coco(out, coco_dataset(items, class_name=class_name, cell_diameter_px=args.cell_diameter,
                                     image_root=root))
        kinds = {"outlines": sum(it.n_objects for it in items if it.instances is not None),
                 "boxes": sum(it.n_objects for it in items if it.instances is None and it.boxes is not None),
                 "points": sum(it.n_objects for it in items if it.instances is None and it.boxes is None)}
        parts = ", ".join(f"{v} {k}" for k, v in kinds.items() if v)
        print(f"COCO written to {out}: {len(items)} image(s), {noun(n, class_name)}"
              + (f" ({parts})" if parts else "") + (f", {ignored} region(s) to ignore as crowds" if ignored else ""))
        return 0
    from eosdetect.annotations.labelstudio import labeling_config, labelled_tasks, write_tasks
    from eosdetect.io import atomic_write_text

    tasks = labelled_tasks(items, class_name=class_name, cell_diameter_px=args.cell_diameter, image_root=root,
                           url_prefix=args.image_url, model_version="eosdetect labels convert")
    if ignored:
        warn([f"{ignored} region(s) marked difficult left out: Label Studio has no such flag"])
    config = out.with_name(out.stem + CONFIG_SUFFIX)
    atomic_write_text(config, labeling_config([class_name]) + "\n")
    write_tasks(out, tasks)
    boxes = sum(len(t["predictions"][0]["result"]) for t in tasks)
    print(f"Label Studio tasks written to {out}: {len(tasks)} image(s), {boxes} pre-labelled box(es) of {class_name}; "
          f"paste {config} into the project's labeling interface (Code) before importing", file=sys.stdout)
    return 0
