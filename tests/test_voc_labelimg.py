"""Cross-check our Pascal VOC files against LabelImg's own ``pascal_voc_io``.

LabelImg's code is used as installed from PyPI, not copied here. Its GUI
dependency is not needed: ``pip install --no-deps labelImg==1.8.6`` (lxml,
its only other dependency, is already one of ours). LabelImg installs its
modules as a top-level package called ``libs``; ``libs.pascal_voc_io``
imports only lxml, ``xml.etree``, ``codecs``, ``libs.constants`` and
``libs.ustr``, never Qt, so this runs headless. Without LabelImg the module is
skipped.

Quirks of LabelImg 1.8.6 that the helpers below work around:

* ``PascalVocReader(path)`` needs a ``str`` ending in ``.xml`` and swallows
  every exception in its constructor (a bare ``except``), leaving an empty
  reader; :func:`labelimg_read` parses again so that a failure raises.
* ``PascalVocWriter`` takes ``img_size`` as ``(height, width, depth)``, always
  writes ``pose`` Unspecified and ``segmented`` 0, and derives ``truncated``
  from the box alone (it touches row/column 1 or the image's last row/column).
"""

import subprocess
import sys
from dataclasses import replace

import pytest

from eosdetect.annotations.voc import VocAnnotation, VocObject, read_voc, voc_bytes, write_voc

pascal_voc_io = pytest.importorskip(
    "libs.pascal_voc_io",
    reason="LabelImg's pascal_voc_io is not installed (pip install --no-deps labelImg==1.8.6)",
)
PascalVocReader = pascal_voc_io.PascalVocReader
PascalVocWriter = pascal_voc_io.PascalVocWriter


def box(name, xmin, ymin, xmax, ymax, *, difficult=False, truncated=False):
    return VocObject(name, xmin, ymin, xmax, ymax, difficult=difficult, truncated=truncated)


# Content LabelImg's writer can express. ``truncated`` is spelled out as
# LabelImg's rule gives it, so that reading LabelImg's files checks the rule too.
CASES = {
    "verified-difficult": VocAnnotation(
        "a.jpg", 640, 480, 3, folder="imgs", path="/data/imgs/a.jpg", verified=True,
        objects=[
            box("eosinophil", 10, 20, 110, 120, difficult=True),
            box("neutrophil", 500, 300, 640, 400, truncated=True),  # right edge
            box("eosinophil", 300, 200, 340, 480, difficult=True, truncated=True),  # bottom edge
            box("eosinophil", 2, 2, 30, 30),  # one pixel in from the corner: not truncated
        ],
    ),
    "unverified-edges": VocAnnotation(
        "b.png", 100, 50, 3, folder="slides", path="/slides/b.png",
        objects=[
            box("cell", 1, 1, 100, 50, truncated=True),  # the whole image
            box("cell", 1, 10, 20, 20, truncated=True),  # left
            box("cell", 10, 1, 20, 20, truncated=True, difficult=True),  # top
            box("cell", 90, 10, 100, 20, truncated=True),  # right
            box("cell", 10, 40, 20, 50, truncated=True),  # bottom
            box("cell", 0, 0, 5, 5),  # LabelImg's rule tests == 1, so 0 is not "truncated"
            box("cell", 7, 7, 7, 7),  # degenerate boxes are written as given
        ],
    ),
    "no-path": VocAnnotation(
        "c.tif", 32, 16, 3, folder="x", objects=[box("cell", 3, 4, 10, 12)]
    ),
    "non-ascii": VocAnnotation(
        "échantillon_µ-好酸球.png", 200, 100, 1, folder="données", path="/données/échantillon_µ-好酸球.png",
        verified=True,
        objects=[
            box("éosinophile", 5, 6, 50, 60, difficult=True),
            box("好酸球", 150, 1, 200, 40, truncated=True),
        ],
    ),
    "xml-special-chars": VocAnnotation(
        "a&b <c>'d'.png", 64, 64, 3, folder="q&a", path="/q&a/a&b <c>'d'.png",
        objects=[box('x<y> & "z"', 3, 3, 9, 9)],
    ),
    "empty-folder": VocAnnotation(  # LabelImg writes folder "" for an image path with no directory
        "e.png", 64, 64, 3, folder="", path="e.png", objects=[box("cell", 3, 3, 9, 9)]
    ),
    # verified so that a reader that silently parsed nothing is caught
    "zero-objects-verified": VocAnnotation("f.jpg", 640, 480, 3, folder="imgs", path="/imgs/f.jpg", verified=True),
    "zero-objects": VocAnnotation("g.jpg", 640, 480, 3, folder="imgs", path="/imgs/g.jpg"),
}


def xml_path(tmp_path, ann, who):
    # named after the image, as LabelImg names its files (non-ASCII file names included)
    return tmp_path / who / (ann.filename.rsplit(".", 1)[0] + ".xml")


def labelimg_read(path):
    """LabelImg's reader on ``path``; raises if LabelImg could not parse it."""
    reader = PascalVocReader(str(path))
    # The constructor hides any exception and leaves an empty reader: parse
    # again from a clean slate so that an error surfaces here.
    reader.shapes, reader.verified = [], False
    assert reader.parse_xml() is True
    return reader


def labelimg_write(path, ann):
    """Write ``ann`` with LabelImg's writer, the way LabelImg's GUI calls it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = PascalVocWriter(
        ann.folder, ann.filename, [ann.height, ann.width, ann.depth],
        database_src=ann.database, local_img_path=ann.path,
    )
    writer.verified = ann.verified
    for o in ann.objects:
        writer.add_bnd_box(o.xmin, o.ymin, o.xmax, o.ymax, o.name, int(o.difficult))
    writer.save(target_file=str(path))
    return path


def expected_shapes(ann):
    return [
        (o.name, [(o.xmin, o.ymin), (o.xmax, o.ymin), (o.xmax, o.ymax), (o.xmin, o.ymax)], None, None, o.difficult)
        for o in ann.objects
    ]


@pytest.fixture(params=list(CASES), ids=list(CASES))
def ann(request):
    return CASES[request.param]


def test_labelimg_reads_our_files(tmp_path, ann):
    path = write_voc(xml_path(tmp_path, ann, "ours"), ann)
    reader = labelimg_read(path)
    assert reader.get_shapes() == expected_shapes(ann)
    assert reader.verified is ann.verified


def test_we_read_labelimg_files_and_write_the_same_bytes(tmp_path, ann):
    theirs = labelimg_write(xml_path(tmp_path, ann, "labelimg"), ann)
    expected = theirs.read_bytes()

    back = read_voc(theirs)
    assert back == ann
    assert voc_bytes(back) == expected

    # the strong check: our writer, fed the same content, gives LabelImg's file
    assert voc_bytes(ann) == expected
    ours = write_voc(xml_path(tmp_path, ann, "ours"), ann)
    assert ours.read_bytes() == expected


def test_our_writer_derives_truncated_like_labelimg(tmp_path, ann):
    # LabelImg's writer has no truncated input; neither flag nor edge rule may be lost.
    plain = replace(ann, objects=[replace(o, truncated=False) for o in ann.objects])
    theirs = labelimg_write(xml_path(tmp_path, ann, "labelimg"), plain)
    assert voc_bytes(plain) == theirs.read_bytes()


def test_empty_path_and_database_round_trip(tmp_path):
    ann = VocAnnotation("h.png", 8, 8, 3, folder="f", path="", database="", objects=[box("c", 2, 2, 4, 4)])
    theirs = labelimg_write(xml_path(tmp_path, ann, "labelimg"), ann)
    assert voc_bytes(read_voc(theirs)) == theirs.read_bytes()


def test_labelimg_voc_module_imports_without_qt():
    code = (
        "import sys, libs.pascal_voc_io\n"
        "qt = sorted(m for m in sys.modules if m.split('.')[0] in ('PyQt5', 'PyQt4', 'PyQt6', 'PySide2', 'PySide6'))\n"
        "assert not qt, qt\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
