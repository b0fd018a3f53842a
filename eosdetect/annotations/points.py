"""Point labels in CSV files: one marked cell per row.

The file has a header row naming at least the columns ``x`` and ``y``
(pixels of the image, ``x`` to the right along columns, ``y`` down along
rows, pixel centres at integer values), optionally ``class``::

    x,y,class
    12.5,40,eosinophil
    30,7,neutrophil

Header names are matched without regard to case or surrounding spaces;
other columns are ignored. Excel's UTF-8 byte order mark is accepted.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from eosdetect.errors import InputError
from eosdetect.io import write_csv

log = logging.getLogger(__name__)


def read_points_csv(path: str | os.PathLike, class_name: str | None = None) -> np.ndarray:
    """Read the points of a CSV label file.

    Parameters
    ----------
    path : str or path-like
        CSV file with a header row holding ``x`` and ``y`` (and optionally
        ``class``) columns.
    class_name : str, optional
        Keep only the rows whose ``class`` equals this name (compared after
        stripping spaces). Ignored when the file has no ``class`` column:
        every point is then taken to be of the wanted class.

    Returns
    -------
    xy : (n, 2) ndarray of float64
        ``x, y`` of each point, in file order; shape ``(0, 2)`` when the file
        holds a header and no rows.

    Raises
    ------
    InputError
        ``path: problem`` for a missing or empty file, a header without ``x``
        or ``y``, or a value that is missing or not a finite number (the
        message gives its line number).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     p = pathlib.Path(folder) / "points.csv"
    ...     _ = p.write_text("x,y,class\\n1,2,eos\\n3.5,4,neu\\n")
    ...     read_points_csv(p).tolist(), read_points_csv(p, class_name="neu").tolist()
    ([[1.0, 2.0], [3.5, 4.0]], [[3.5, 4.0]])
    """
    path = Path(path)
    points, classes = _read_rows(path)
    if class_name is not None and classes is not None:
        wanted = str(class_name).strip()
        points = [p for p, c in zip(points, classes) if c == wanted]
    elif class_name is not None:
        log.debug("%s: no class column, class filter %r not applied", path, class_name)
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def read_points_table(path: str | os.PathLike) -> tuple[np.ndarray, list[str] | None]:
    """All points of a CSV label file and their classes (None without a ``class`` column)."""
    points, classes = _read_rows(Path(path))
    return np.asarray(points, dtype=np.float64).reshape(-1, 2), classes


def csv_table(path: Path, expected: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (stripped) and the non-blank rows, each with its line number, of a CSV label
    file; a missing, empty or unreadable file is an :class:`InputError` (``expected`` names the
    header wanted, for the message: ``"'x,y' or 'x,y,class'"``)."""
    if path.is_dir():
        raise InputError(path, "is a folder, not a CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise InputError(path, f"empty file (expected a header row {expected})")
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a readable CSV file ({exc})") from None
    return [h.strip() for h in header], rows


def _read_rows(path: Path) -> tuple[list[tuple[float, float]], list[str] | None]:
    """Points (and classes when there is a class column) of a point CSV file."""
    header, rows = csv_table(path, "'x,y' or 'x,y,class'")
    names = [h.lower() for h in header]
    missing = [c for c in ("x", "y") if c not in names]
    if missing:
        raise InputError(
            path,
            f"missing column {' and '.join(repr(c) for c in missing)} "
            f"(header is {','.join(header)!r}; expected 'x,y' or 'x,y,class')",
        )
    ix, iy = names.index("x"), names.index("y")
    ic = names.index("class") if "class" in names else None
    points = [(table_number(path, line, "x", row, ix), table_number(path, line, "y", row, iy))
              for line, row in rows]
    classes = None if ic is None else [row[ic].strip() if ic < len(row) else "" for _, row in rows]
    return points, classes


def table_number(path: Path, line: int, column: str, row: list[str], index: int) -> float:
    """The finite number in ``row[index]`` (column ``column`` of line ``line``), or a one-line :class:`InputError`."""
    if index >= len(row) or not row[index].strip():
        raise InputError(path, f"line {line}: no value in column {column!r}")
    text = row[index].strip()
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"line {line}: {column} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise InputError(path, f"line {line}: {column} is not a finite number: {text!r}")
    return value


def write_points_csv(
    path: str | os.PathLike, xy: np.ndarray, classes: Sequence[str] | None = None
) -> Path:
    """Write points as a CSV label file, atomically.

    Parameters
    ----------
    path : str or path-like
        File to write (its folder is created if needed).
    xy : (n, 2) array_like of float
        ``x, y`` of each point in pixels.
    classes : sequence of n str, optional
        Class of each point; adds a ``class`` column.

    Returns
    -------
    Path
        The file written. Its header is ``x,y`` or ``x,y,class``; numbers have
        at most 6 decimals. :func:`read_points_csv` reads it back.

    Raises
    ------
    ValueError
        If ``xy`` is not ``(n, 2)`` of finite numbers, or ``classes`` does not
        have ``n`` entries.
    """
    pts = np.asarray(xy, dtype=np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"xy must have shape (n, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("xy holds NaN or infinite values")
    if classes is None:
        return write_csv(path, ["x", "y"], ((float(x), float(y)) for x, y in pts))
    if isinstance(classes, str):
        raise ValueError("classes must be a sequence of names, one per point, not a single string")
    names = [str(c) for c in classes]
    if len(names) != len(pts):
        raise ValueError(f"classes has {len(names)} entries for {len(pts)} points")
    return write_csv(path, ["x", "y", "class"], ((float(x), float(y), c) for (x, y), c in zip(pts, names)))
