"""Points as napari's Points layer CSV, which napari opens by dropping the file on its window.

napari writes a Points layer as (``napari_builtins`` ``write_points``)::

    index,axis-0,axis-1,class,score
    0,40,12.5,eosinophil,0.97
    1,7,30,neutrophil,0.61

``axis-0`` is the row and ``axis-1`` the column of the point, pixel centres
at integer values (eosdetect's ``y`` and ``x``); the columns after them are
the layer's properties, one value per point. On reading, napari takes every
``axis-*`` column as a coordinate and every other column but a leading
``index`` as a property.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from eosdetect.annotations.points import csv_table, table_number
from eosdetect.errors import InputError
from eosdetect.io import atomic_write_text, csv_text


@dataclass
class NapariPoints:
    """The points of a napari Points CSV: ``xy`` (x, y), and the property columns by name
    (``class``: strings, ``score``: floats; other columns as napari would read them:
    numbers where all are numbers, else strings)."""

    xy: np.ndarray
    properties: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def classes(self) -> list[str] | None:
        """The ``class`` column as strings (None without one)."""
        values = self.properties.get("class")
        return None if values is None else [str(v) for v in values]


def write_napari_points(path: str | os.PathLike, xy: np.ndarray, *, classes: Sequence[str] | None = None,
                        scores: Sequence[float] | None = None) -> Path:
    """Write points as napari's Points layer CSV, atomically (:func:`napari_points_text`).

    Returns
    -------
    Path
        The file written; :func:`read_napari_points` reads it back.
    """
    return atomic_write_text(path, napari_points_text(xy, classes=classes, scores=scores))


def napari_points_text(xy: np.ndarray, *, classes: Sequence[str] | None = None,
                       scores: Sequence[float] | None = None) -> str:
    """Points as the text of napari's Points layer CSV.

    Parameters
    ----------
    xy : (n, 2) array_like of float
        ``x, y`` of each point (pixels, centres at integer values); written
        as ``axis-0`` (row, ``y``) and ``axis-1`` (column, ``x``).
    classes : sequence of n str, optional
        A ``class`` property.
    scores : sequence of n float, optional
        A ``score`` property.

    Returns
    -------
    str
        The CSV, header ``index,axis-0,axis-1[,class][,score]``.

    Raises
    ------
    ValueError
        If ``xy`` is not ``(n, 2)`` finite numbers, or ``classes`` or
        ``scores`` do not have ``n`` entries.
    """
    pts = np.asarray(xy, dtype=np.float64)
    pts = pts.reshape(0, 2) if pts.size == 0 else pts
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"xy must have shape (n, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("xy holds NaN or infinite values")
    header = ["index", "axis-0", "axis-1"]
    columns = [list(range(len(pts))), pts[:, 1].tolist(), pts[:, 0].tolist()]
    if classes is not None:
        if isinstance(classes, str):
            raise ValueError("classes must be a sequence of names, one per point, not a single string")
        header.append("class")
        columns.append(_column("classes", [str(c) for c in classes], len(pts)))
    if scores is not None:
        header.append("score")
        columns.append(_column("scores", [float(s) for s in scores], len(pts)))
    return csv_text(header, zip(*columns))


def _column(name: str, values: list, n: int) -> list:
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} points")
    return values


def read_napari_points(path: str | os.PathLike) -> NapariPoints:
    """Read a napari Points layer CSV (2-D points).

    Returns
    -------
    NapariPoints
        ``xy`` from ``axis-1`` (x) and ``axis-0`` (y); the property columns.

    Raises
    ------
    InputError
        ``path: problem`` for a missing, empty or non-CSV file, a header
        without ``axis-0`` and ``axis-1`` (or with more axes: a 3-D layer),
        or a coordinate that is missing or not a finite number.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     p = write_napari_points(pathlib.Path(folder) / "a.csv", [[12.5, 40]], classes=["eos"], scores=[0.9])
    ...     pts = read_napari_points(p)
    >>> pts.xy.tolist(), pts.classes, pts.properties["score"].tolist()
    ([[12.5, 40.0]], ['eos'], [0.9])
    """
    path = Path(path)
    header, rows = csv_table(path, "'index,axis-0,axis-1,...'")
    axes = [h for h in header if h.startswith("axis-")]
    if not {"axis-0", "axis-1"} <= set(axes):
        raise InputError(path, f"not a napari Points CSV (header {','.join(header)!r} lacks axis-0 and axis-1)")
    if len(axes) > 2:
        raise InputError(path, f"points of {len(axes)} dimensions ({', '.join(axes)}); only 2-D points (an "
                               "image's rows and columns) can be labels")
    i0, i1 = header.index("axis-0"), header.index("axis-1")
    xy = np.array([[table_number(path, n, "axis-1", r, i1), table_number(path, n, "axis-0", r, i0)]
                   for n, r in rows], dtype=np.float64).reshape(-1, 2)
    skip = {i0, i1} | ({0} if header[0] == "index" else set())
    props = {h: _property(h, [r[i] if i < len(r) else "" for _, r in rows])
             for i, h in enumerate(header) if i not in skip and h}
    return NapariPoints(xy, props)


def _property(name: str, values: list[str]) -> np.ndarray:
    """A property column as napari reads it (integers, else floats, else strings); ``class`` stays text."""
    if name != "class":
        for kind in (int, float):
            try:
                return np.array([kind(v) for v in values])
            except ValueError:
                pass
    return np.array(values, dtype=str)
