"""Labelled objects read from one-file-for-all-images formats (COCO, Label Studio), in image pixels.

A :class:`Shape` is one object as a point, an axis-aligned box or an outline
(polygons, or a COCO run-length mask), in the coordinates of the rest of
eosdetect: a point ``x, y`` has pixel centres at integer values (pixel
``(row r, column c)`` is at ``x = c, y = r``); boxes and outlines are in
pixel-edge coordinates (pixel ``c`` spans ``[c, c + 1)``, ``xmax``
exclusive). :func:`shapes_to_labels` rasterises outlines and boxes into an
instance label image.

Both formats name their images by a file name or a URL;
:func:`file_name_of` takes the file's name out of one, and
:func:`without_upload_prefix` removes the prefix Label Studio gives the files
uploaded to it (``8f3a2b1c-x.jpg`` for ``x.jpg``). :func:`read_json_file` reads
either kind of file, with one-line errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from eosdetect.errors import InputError

#: The kinds of :class:`Shape`.
KINDS = ("point", "box", "outline")
_UPLOAD_PREFIX = re.compile(r"[0-9a-f]{8}-(.+)")


@dataclass
class Shape:
    """One labelled object of an image.

    Attributes
    ----------
    kind : str
        ``"point"``, ``"box"`` or ``"outline"``.
    class_name : str or None
        Its class (COCO category, Label Studio label); None when it has none.
    xy : (2,) ndarray of float64
        Its centre, pixel centres at integer values: the point, the box's
        centre, or the centroid of the outline's area.
    box : (4,) ndarray of float64 or None
        ``xmin, ymin, xmax, ymax`` (pixel edges); None for a point without one.
    polygons : list of (k, 2) ndarray of float64, optional
        An outline's parts, ``x, y`` vertices in pixel-edge coordinates (holes
        are not represented).
    rle : (counts, rows, cols), optional
        An outline as an uncompressed COCO run-length encoding (column-major
        runs, starting with background).
    ignore : bool
        A region that is neither to be found nor penalised (COCO ``iscrowd``).
    score : float or None
        A model's confidence, when the file holds one.
    """

    kind: str
    class_name: str | None
    xy: np.ndarray
    box: np.ndarray | None = None
    polygons: list[np.ndarray] | None = None
    rle: tuple[list[int], int, int] | None = None
    ignore: bool = False
    score: float | None = None


def point_shape(xy, class_name: str | None = None, **kw) -> Shape:
    """A point at ``xy`` (pixel centres at integer values)."""
    return Shape("point", class_name, np.asarray(xy, dtype=np.float64).reshape(2), **kw)


def box_shape(box, class_name: str | None = None, **kw) -> Shape:
    """A box ``xmin, ymin, xmax, ymax`` (pixel edges)."""
    b = np.asarray(box, dtype=np.float64).reshape(4)
    return Shape("box", class_name, np.array([(b[0] + b[2]) / 2 - 0.5, (b[1] + b[3]) / 2 - 0.5]), box=b, **kw)


def polygon_shape(polygons: Sequence[np.ndarray], class_name: str | None = None, box=None, **kw) -> Shape:
    """An outline of one or more polygons (``(k, 2)`` ``x, y`` in pixel edges); ``box`` defaults to
    their extent."""
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    allv = np.vstack(parts)
    b = (np.array([*allv.min(axis=0), *allv.max(axis=0)]) if box is None
         else np.asarray(box, dtype=np.float64).reshape(4))
    return Shape("outline", class_name, polygons_centroid(parts), box=b, polygons=parts, **kw)


def rle_shape(counts: Sequence[int], rows: int, cols: int, class_name: str | None = None, box=None, **kw) -> Shape:
    """An outline given as an uncompressed COCO run-length mask of ``rows x cols`` pixels."""
    r, c = rle_pixels(counts, rows)
    if len(r):
        xy = np.array([c.mean(), r.mean()])
        extent = np.array([c.min(), r.min(), c.max() + 1, r.max() + 1], dtype=np.float64)
    else:
        xy, extent = np.full(2, np.nan), np.zeros(4)
    b = extent if box is None else np.asarray(box, dtype=np.float64).reshape(4)
    return Shape("outline", class_name, xy, box=b, rle=(list(counts), int(rows), int(cols)), **kw)


def polygons_centroid(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Centroid of the area of disjoint polygons (pixel edges), as a pixel position (centres at integers).

    >>> polygons_centroid([np.array([[0, 0], [4, 0], [4, 2], [0, 2]])]).tolist()
    [1.5, 0.5]
    """
    total, moment = 0.0, np.zeros(2)
    for p in polygons:
        x, y = p[:, 0], p[:, 1]
        xn, yn = np.roll(x, -1), np.roll(y, -1)
        cross = x * yn - xn * y
        a = cross.sum() / 2
        if a == 0:
            continue
        c = np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6 * a)
        total += abs(a)
        moment += abs(a) * c
    if total == 0:
        return np.vstack(polygons).mean(axis=0) - 0.5
    return moment / total - 0.5


def rle_pixels(counts: Sequence[int], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels set in a column-major run-length mask of ``rows`` rows.

    >>> r, c = rle_pixels([1, 2, 2, 1], 2)  # a 2 x 3 mask: pixels 1, 2 and 5 (column-major) set
    >>> r.tolist(), c.tolist()
    ([1, 0, 1], [0, 1, 2])
    """
    counts = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(counts)
    starts = ends - counts
    on_start, on_len = starts[1::2], counts[1::2]
    on_start, on_len = on_start[on_len > 0], on_len[on_len > 0]
    if not len(on_len):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # every index of every run of set pixels, without a Python loop
    offsets = np.arange(int(on_len.sum())) - np.repeat(np.cumsum(on_len) - on_len, on_len)
    flat = np.repeat(on_start, on_len) + offsets
    return flat % rows, flat // rows


def shapes_to_labels(shapes: Sequence[Shape], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise the outlines and boxes of ``shapes`` into an instance label image.

    A pixel belongs to a polygon or a box when its centre lies inside it (or on
    its outline); a run-length mask gives its own pixels. Shape ``i``
    (0-based, points skipped in the numbering) gets label ``i + 1``, a later
    one winning where two overlap.

    Parameters
    ----------
    shapes : sequence of Shape
    shape : (int, int)
        ``(rows, cols)`` of the label image.

    Returns
    -------
    labels : (M, N) ndarray of int32

    Raises
    ------
    ValueError
        If a run-length mask is of another size than ``shape``.

    Examples
    --------
    >>> lab = shapes_to_labels([box_shape([1, 0, 3, 2]), polygon_shape([[[0, 2], [2, 2], [2, 3], [0, 3]]])], (3, 4))
    >>> lab.tolist()
    [[0, 1, 1, 0], [0, 1, 1, 0], [2, 2, 0, 0]]
    """
    from skimage.draw import polygon as fill

    from eosdetect.annotations.convert import check_shape

    rows, cols = check_shape(shape)
    labels = np.zeros((rows, cols), dtype=np.int32)
    k = 0
    for s in shapes:
        if s.kind == "point":
            continue
        k += 1
        if s.rle is not None:
            counts, h, w = s.rle
            if (h, w) != (rows, cols):
                raise ValueError(f"a run-length mask of {w}x{h} pixels for a {cols}x{rows} image")
            r, c = rle_pixels(counts, h)
            labels[r, c] = k
        elif s.polygons is not None:
            for p in s.polygons:
                rr, cc = fill(p[:, 1] - 0.5, p[:, 0] - 0.5, (rows, cols))
                labels[rr, cc] = k
        elif s.box is not None:
            x0, y0, x1, y1 = s.box
            c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.ceil(x1 - 0.5)), cols)
            r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.ceil(y1 - 0.5)), rows)
            labels[r0:r1, c0:c1] = k
    return labels


def name_below(path, root: Path | None) -> str:
    """How a labelled image is named in a file of labels for all images: its path below
    ``root`` (resolved; POSIX separators), or its file name when it is not below it.

    >>> name_below("/data/imgs/a/x.png", Path("/data/imgs")), name_below("/elsewhere/x.png", None)
    ('a/x.png', 'x.png')
    """
    if root is not None:
        try:
            return Path(path).resolve().relative_to(root).as_posix()
        except ValueError:
            pass
    return Path(path).name


def file_name_of(ref: str) -> str:
    """The file name in an image reference: a path (``/`` or ``\\``), a URL, or Label Studio's URL of a
    local file (``/data/local-files/?d=folder/a.png``), percent-escapes decoded.

    >>> file_name_of("/data/local-files/?d=smears/a%20b.png"), file_name_of("s3://bucket/x/8f3a2b1c-c.jpg")
    ('a b.png', '8f3a2b1c-c.jpg')
    >>> file_name_of(r"C:\\images\\a.png")
    'a.png'
    """
    text = str(ref).strip()
    parts = urlsplit(text) if "://" in text or text.startswith("/") or "?" in text else None
    if parts is not None and parts.query:
        d = parse_qs(parts.query).get("d")
        if d:
            return PurePosixPath(d[0].replace("\\", "/")).name
    path = unquote(parts.path) if parts is not None else text
    return PurePosixPath(path.replace("\\", "/")).name


def without_upload_prefix(name: str) -> str | None:
    """``name`` without the 8 hexadecimal digits and dash Label Studio puts before the name of a file
    uploaded to it; None when there is no such prefix.

    >>> without_upload_prefix("8f3a2b1c-smear_01.jpg"), without_upload_prefix("smear_01.jpg")
    ('smear_01.jpg', None)
    """
    m = _UPLOAD_PREFIX.fullmatch(name)
    return m[1] if m else None


def read_json_file(path: Path, expected: str):
    """The JSON document in ``path``; ``expected`` names what it should hold, for the messages.

    Raises
    ------
    InputError
        ``path: problem`` in one line for a folder, a missing, unreadable or empty file, a file
        not in UTF-8 (a byte order mark is accepted), and text that is not JSON.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, f"is a folder, not a file (expected {expected})")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as exc:
        raise InputError(path, f"not readable ({exc.strerror or exc})") from None
    if not data.strip():
        raise InputError(path, f"empty file (expected {expected})")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InputError(path, f"not a text file in UTF-8 (expected {expected})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise InputError(path, "not usable JSON (nested too deeply)") from None
