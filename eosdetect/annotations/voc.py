"""Pascal VOC XML exactly as LabelImg reads and writes it.

Element order, text values and layout follow LabelImg's ``pascal_voc_io.py``:
``annotation[@verified]`` then ``folder, filename, path, source/database,
size/(width, height, depth), segmented``, then per box ``object/(name, pose,
truncated, difficult, bndbox/(xmin, ymin, xmax, ymax))``; integer
coordinates; pretty-printed by lxml with the two-space indent replaced by a
tab; UTF-8 without an XML declaration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from eosdetect.errors import InputError
from eosdetect.io import atomic_write_bytes, printable


@dataclass
class VocObject:
    """One labelled box. Coordinates are LabelImg's integer pixel values."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool = False
    truncated: bool = False
    pose: str = "Unspecified"

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.xmin + self.xmax) / 2.0, (self.ymin + self.ymax) / 2.0)

    def edges(self) -> tuple[int, int, int, int]:
        """The box in 0-based pixel-edge coordinates (``xmax`` exclusive): VOC's
        1-based inclusive pixels, as :func:`box_to_voc` wrote them."""
        return self.xmin - 1, self.ymin - 1, self.xmax, self.ymax

    @property
    def is_degenerate(self) -> bool:
        return self.xmax <= self.xmin or self.ymax <= self.ymin


@dataclass
class VocAnnotation:
    """The content of one LabelImg XML file."""

    filename: str
    width: int
    height: int
    depth: int = 3
    folder: str = ""
    path: str | None = None
    database: str = "Unknown"
    segmented: int = 0
    verified: bool = False
    objects: list[VocObject] = field(default_factory=list)

    def boxes(self, name: str | None = None, *, skip_degenerate: bool = True) -> list[VocObject]:
        """Objects of class ``name`` (all when None), without degenerate boxes."""
        return [
            o for o in self.objects
            if (name is None or o.name == name) and not (skip_degenerate and o.is_degenerate)
        ]

    def class_names(self) -> list[str]:
        return sorted({o.name for o in self.objects})


def read_voc(path: str | os.PathLike) -> VocAnnotation:
    """Read a Pascal VOC XML file (LabelImg or any VOC writer).

    Raises
    ------
    InputError
        If the file is missing, is not XML, or lacks the VOC elements
        LabelImg needs (``filename``; per object ``name`` and ``bndbox``).
    """
    from lxml import etree

    path = Path(path)
    try:
        root = etree.parse(os.fsencode(path), etree.XMLParser(encoding="utf-8", resolve_entities=False)).getroot()
    except OSError:
        raise InputError(path, "no such file or not readable") from None
    except etree.XMLSyntaxError as exc:
        raise InputError(path, f"not valid XML ({exc.msg})") from None
    if root.tag != "annotation":
        raise InputError(path, f"not a Pascal VOC file (root element <{root.tag}>, expected <annotation>)")

    def text(elem, tag, default=None):
        child = elem.find(tag)
        return child.text.strip() if child is not None and child.text is not None else default

    def number(elem, tag, default=None):
        value = text(elem, tag)
        if value is None:
            if default is None:
                raise InputError(path, f"missing <{tag}> in <{elem.tag}>")
            return default
        try:
            return int(float(value))
        except ValueError:
            raise InputError(path, f"<{tag}> is not a number: {value!r}") from None

    filename = text(root, "filename")
    if filename is None:
        raise InputError(path, "not a Pascal VOC file (no <filename>)")
    size = root.find("size")
    width = number(size, "width", 0) if size is not None else 0
    height = number(size, "height", 0) if size is not None else 0
    depth = number(size, "depth", 3) if size is not None else 3
    objects = []
    for obj in root.findall("object"):
        name = text(obj, "name")
        box = obj.find("bndbox")
        if name is None or box is None:
            raise InputError(path, "an <object> lacks <name> or <bndbox>")
        objects.append(
            VocObject(
                name=name,
                xmin=number(box, "xmin"),
                ymin=number(box, "ymin"),
                xmax=number(box, "xmax"),
                ymax=number(box, "ymax"),
                difficult=bool(number(obj, "difficult", 0)),
                truncated=bool(number(obj, "truncated", 0)),
                pose=text(obj, "pose", "Unspecified"),
            )
        )
    source = root.find("source")
    database = _present(source, "database") if source is not None else None
    if database is None:
        database = "Unknown"
    return VocAnnotation(
        filename=filename,
        width=width,
        height=height,
        depth=depth,
        folder=text(root, "folder", ""),
        path=_present(root, "path"),
        database=database,
        segmented=number(root, "segmented", 0),
        verified=root.get("verified") == "yes",
        objects=objects,
    )


def _present(elem, tag):
    """Text of a child element: None when the element is absent, "" when it is empty."""
    child = elem.find(tag)
    if child is None:
        return None
    return child.text.strip() if child.text else ""


def voc_bytes(ann: VocAnnotation) -> bytes:
    """Serialise an annotation byte for byte as LabelImg's ``PascalVocWriter`` does."""
    from lxml import etree

    top = etree.Element("annotation")
    if ann.verified:
        top.set("verified", "yes")
    etree.SubElement(top, "folder").text = _text(ann.folder)
    etree.SubElement(top, "filename").text = _text(ann.filename)
    if ann.path is not None:
        etree.SubElement(top, "path").text = _text(ann.path)
    source = etree.SubElement(top, "source")
    etree.SubElement(source, "database").text = _text(ann.database)
    size = etree.SubElement(top, "size")
    etree.SubElement(size, "width").text = str(int(ann.width))
    etree.SubElement(size, "height").text = str(int(ann.height))
    etree.SubElement(size, "depth").text = str(int(ann.depth))
    etree.SubElement(top, "segmented").text = str(int(ann.segmented))
    for o in ann.objects:
        _add_object(top, o, ann)
    pretty = etree.tostring(top, pretty_print=True, encoding="utf-8")
    return pretty.replace(b"  ", b"\t")


def _add_object(top, o: VocObject, ann: VocAnnotation) -> None:
    from lxml import etree

    obj = etree.SubElement(top, "object")
    etree.SubElement(obj, "name").text = _text(o.name)
    etree.SubElement(obj, "pose").text = _text(o.pose)
    etree.SubElement(obj, "truncated").text = "1" if _labelimg_truncated(o, ann) else "0"
    etree.SubElement(obj, "difficult").text = "1" if o.difficult else "0"
    box = etree.SubElement(obj, "bndbox")
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        etree.SubElement(box, tag).text = str(int(getattr(o, tag)))


def voc_added_bytes(path: str | os.PathLike, ann: VocAnnotation, new: list[VocObject]) -> bytes:
    """The existing file at ``path`` with the boxes ``new`` appended and nothing
    else changed: elements other tools add (``<owner>``, ``<occluded>``,
    comments), fractional coordinates and ``<segmented>`` stay as written. A
    missing or zero ``<size>`` is filled in from ``ann``. Indented with tabs,
    as LabelImg writes."""
    from lxml import etree

    parser = etree.XMLParser(encoding="utf-8", resolve_entities=False, remove_blank_text=True)
    tree = etree.parse(os.fsencode(Path(path)), parser)
    top = tree.getroot()
    size = top.find("size")
    if size is None:
        size = etree.Element("size")
        anchor = top.find("segmented")
        if anchor is not None:
            anchor.addprevious(size)
        else:
            top.append(size)
    for tag, value in (("width", ann.width), ("height", ann.height), ("depth", ann.depth)):
        child = size.find(tag)
        if child is None:
            child = etree.SubElement(size, tag)
        if not (child.text or "").strip() or (tag != "depth" and (child.text or "").strip() in ("0", "0.0")):
            child.text = str(int(value))
    for o in new:
        _add_object(top, o, ann)
    etree.indent(tree, space="\t")
    return etree.tostring(tree, encoding="utf-8") + b"\n"


def _text(value: str | None) -> str | None:
    """Element text as LabelImg writes it: its ``ElementTree`` pass serialises an
    empty text as ``<tag />``, which lxml then prints as ``<tag/>``; lxml itself
    would print ``""`` as ``<tag></tag>``, so an empty string becomes None here. A file name
    that is not UTF-8 is written with U+FFFD for its odd bytes (XML holds Unicode only)."""
    return printable(value) if value else None


def _labelimg_truncated(o: VocObject, ann: VocAnnotation) -> bool:
    """LabelImg's own rule: a box touching the image edge is truncated."""
    return (
        o.truncated
        or int(o.ymax) == int(ann.height)
        or int(o.ymin) == 1
        or int(o.xmax) == int(ann.width)
        or int(o.xmin) == 1
    )


def write_voc(path: str | os.PathLike, ann: VocAnnotation) -> Path:
    """Write ``ann`` to ``path`` atomically, as LabelImg would."""
    return atomic_write_bytes(path, voc_bytes(ann))


def box_to_voc(xmin: float, ymin: float, xmax: float, ymax: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Convert a box in pixel-edge coordinates (``xmax`` exclusive) to VOC's
    1-based inclusive integers, clipped to the image."""
    x0 = int(min(max(round(xmin) + 1, 1), width))
    y0 = int(min(max(round(ymin) + 1, 1), height))
    x1 = int(min(max(round(xmax), x0), width))
    y1 = int(min(max(round(ymax), y0), height))
    return x0, y0, x1, y1
