"""MoNuSeg / Aperture (ImageScope) XML polygon annotations.

The layout is ``Annotations/Annotation/Regions/Region/Vertices/Vertex``, with
one ``Region`` per object and its outline in the ``X`` and ``Y`` attributes of
the ``Vertex`` elements (pixels of the image, floats)::

    <Annotations>
      <Annotation Id="1">
        <Regions>
          <Region Id="1">
            <Vertices>
              <Vertex X="10.2" Y="4" />
              ...

Every region with at least three vertices is taken as one object; regions
with fewer (stray clicks, not outlines: MoNuSeg has a few) are skipped, as in
the instance images made from MoNuSeg. Aperture's ``NegativeROA`` (hole)
flag is not interpreted (MoNuSeg does not use it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from eosdetect.annotations.convert import check_shape
from eosdetect.errors import InputError

log = logging.getLogger(__name__)

#: Fewest vertices of a region taken as an outline.
MIN_VERTICES = 3


def read_monuseg_xml(path: str | os.PathLike) -> list[np.ndarray]:
    """Read the polygons of a MoNuSeg / Aperture XML file.

    Parameters
    ----------
    path : str or path-like
        The XML file.

    Returns
    -------
    polygons : list of (k, 2) ndarray of float64
        One outline per ``Region``, in file order, as ``x, y`` vertices
        (``k >= 3``); regions with fewer vertices are skipped. An empty list when the
        ``Regions`` elements hold no region (an image without objects).

    Raises
    ------
    InputError
        ``path: problem`` for a missing, empty or non-XML file, a file without
        any ``Annotation/Regions`` element, or a vertex whose ``X`` or ``Y`` is
        missing or not a finite number (the message names the region).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     p = pathlib.Path(folder) / "a.xml"
    ...     _ = p.write_text('<Annotations><Annotation><Regions><Region Id="7"><Vertices>'
    ...                      '<Vertex X="1" Y="2"/><Vertex X="3.5" Y="2"/><Vertex X="3" Y="4"/>'
    ...                      '</Vertices></Region></Regions></Annotation></Annotations>')
    ...     read_monuseg_xml(p)[0].tolist()
    [[1.0, 2.0], [3.5, 2.0], [3.0, 4.0]]
    """
    from lxml import etree

    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder, not an XML file")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        root = etree.parse(os.fsencode(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    except OSError:
        raise InputError(path, "no such file or not readable") from None
    except etree.XMLSyntaxError as exc:
        raise InputError(path, f"not valid XML ({exc.msg})") from None

    if root.tag == "Annotations":
        regions_elems = root.findall("Annotation/Regions")
    elif root.tag == "Annotation":
        regions_elems = root.findall("Regions")
    else:
        raise InputError(
            path, f"not a MoNuSeg/Aperture XML file (root element <{root.tag}>, expected <Annotations>)"
        )
    if not regions_elems:
        raise InputError(path, "not a MoNuSeg/Aperture XML file (no <Annotation>/<Regions> element)")

    polygons = []
    skipped = 0
    for regions in regions_elems:
        for number, region in enumerate(regions.findall("Region"), start=1):
            name = region.get("Id") or f"#{number}"
            vertices = [
                (_coordinate(path, name, v, "X"), _coordinate(path, name, v, "Y"))
                for v in region.iterfind("Vertices/Vertex")
            ]
            if len(vertices) >= MIN_VERTICES:
                polygons.append(np.asarray(vertices, dtype=np.float64))
            else:
                skipped += 1
    if skipped:
        log.debug("%s: skipped %d region(s) with fewer than %d vertices", path, skipped, MIN_VERTICES)
    return polygons


def _coordinate(path: Path, region: str, vertex, axis: str) -> float:
    text = vertex.get(axis)
    if text is None:
        raise InputError(path, f"Region {region}: a <Vertex> has no {axis} attribute")
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"Region {region}: vertex {axis} is not a number: {text!r}") from None
    if not np.isfinite(value):
        raise InputError(path, f"Region {region}: vertex {axis} is not a finite number: {text!r}")
    return value


def polygons_to_labels(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise polygons into an instance label image.

    Vertices are rounded to the nearest pixel centre and each polygon is
    filled, outline included, with ``cv2.fillPoly``. Polygon ``i`` (0-based)
    gets label ``i + 1``; where polygons overlap the later one wins, so an
    object hidden entirely by later ones, or lying outside the image, leaves
    its label absent. This reproduces the instance images of the MoNuSeg
    folder in the shared data pixel for pixel.

    Parameters
    ----------
    polygons : sequence of (k, 2) array_like of float
        Outlines as ``x, y`` vertices (``k >= 1``; one or two vertices give a
        point or a line).
    shape : (int, int)
        ``(rows, cols)`` of the label image.

    Returns
    -------
    labels : (M, N) ndarray of int32
        0 for background, 1..n for the polygons.

    Raises
    ------
    ValueError
        If ``shape`` is not two positive integers, or a polygon is not a
        non-empty ``(k, 2)`` array of finite numbers.

    Examples
    --------
    >>> polygons_to_labels([np.array([[1, 0], [3, 0], [3, 2], [1, 2]])], (3, 5)).tolist()
    [[0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0]]
    """
    import cv2

    shape = check_shape(shape)
    labels = np.zeros(shape, dtype=np.int32)
    for i, poly in enumerate(polygons):
        p = np.asarray(poly, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
            raise ValueError(f"polygon {i} must have shape (k, 2) with k >= 1, got {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError(f"polygon {i} holds NaN or infinite coordinates")
        # cv2 works on int32 coordinates; far-off vertices are clamped (the fill is clipped anyway)
        q = np.clip(np.rint(p), -(2**20), 2**20).astype(np.int32)
        cv2.fillPoly(labels, [q.reshape(-1, 1, 2)], color=i + 1)
    return labels
