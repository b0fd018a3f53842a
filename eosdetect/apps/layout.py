"""What the applications write into an output folder, and how it is recognised again.

Only the applications (``eosdetect count``, ``evaluate``) know this layout;
the library's :func:`eosdetect.io.find_images` is told what to skip.
"""

from __future__ import annotations

from pathlib import Path

#: Pictures eosdetect draws into its output folders (never counted as inputs).
OUTPUT_PICTURE_SUFFIXES = ("_overlay.png", "_heatmap.png", "_errors.png", "pr_curve.png")
#: The folder of resume records that ``eosdetect count`` keeps in its output folder.
RUN_RECORD_DIR = ".eosdetect"
#: The files that mark an ``eosdetect evaluate`` report folder.
REPORT_FILES = ("metrics.json", "per_image.csv")


def is_results_folder(folder: Path) -> bool:
    """A folder ``eosdetect count`` (its run records) or ``eosdetect evaluate`` (its report) wrote."""
    return (folder / RUN_RECORD_DIR).is_dir() or all((folder / f).is_file() for f in REPORT_FILES)
