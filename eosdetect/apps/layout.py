"""What the applications write into an output folder, and how it is recognised again.

Only the applications (``eosdetect count``, ``evaluate``) know this layout;
the library's :func:`eosdetect.io.find_images` is told what to skip
(:func:`skip_outputs`).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Callable

#: Pictures eosdetect draws into its output folders (never counted as inputs).
OUTPUT_PICTURE_SUFFIXES = ("_overlay.png", "_heatmap.png", "_errors.png", "pr_curve.png")
#: The folder of resume records that ``eosdetect count`` keeps in its output folder.
RUN_RECORD_DIR = ".eosdetect"
#: The lock file, in :data:`RUN_RECORD_DIR`, of the run writing the folder (:mod:`eosdetect.apps.batch.lock`).
LOCK_FILE = "lock"
#: The files that mark an ``eosdetect evaluate`` report folder.
REPORT_FILES = ("metrics.json", "per_image.csv")


def is_results_folder(folder: Path) -> bool:
    """A folder ``eosdetect count`` (its run records) or ``eosdetect evaluate`` (its report) wrote."""
    return (folder / RUN_RECORD_DIR).is_dir() or all((folder / f).is_file() for f in REPORT_FILES)


def is_output(p: Path, folder: Path, out_dir: Path | None) -> bool:
    """Whether ``p``, found in the resolved ``folder``, is in the output folder (when that is below it),
    or is a picture eosdetect drew: in the output folder, or in a results folder of an earlier run."""
    resolved = p.resolve()
    if resolved.name.endswith(OUTPUT_PICTURE_SUFFIXES) and (
        resolved.parent == out_dir or is_results_folder(resolved.parent)
    ):
        return True
    # the output folder below the searched one (``folder`` resolved by the caller): not searched
    return out_dir is not None and folder in out_dir.parents and out_dir in resolved.parents


def skip_outputs(out_dir: str | os.PathLike | None = None) -> Callable[[Path, Path], bool]:
    """The ``skip`` of :func:`eosdetect.io.find_images` that leaves eosdetect's outputs out of its inputs.

    ``out_dir`` is this run's output folder: when it lies inside a searched folder it is not
    searched; when it is the searched folder, or above it, only the pictures eosdetect writes there
    (:data:`OUTPUT_PICTURE_SUFFIXES`) are skipped. Those pictures are skipped, too, in the results
    folder of any earlier run (a folder holding :data:`RUN_RECORD_DIR`, or an evaluate report).
    """
    return partial(is_output, out_dir=Path(out_dir).resolve() if out_dir is not None else None)
