"""Label readers and converters: CSV points, MoNuSeg XML, painted dots, masks."""

import doctest
import importlib

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA
from eosdetect.annotations.convert import boxes_to_mask, points_to_labels, points_to_mask
from eosdetect.annotations.masks import instances_from_binary, read_label_image
from eosdetect.annotations.monuseg import polygons_to_labels, read_monuseg_xml
from eosdetect.annotations.painted import points_from_painted
from eosdetect.annotations.points import read_points_csv, write_points_csv
from eosdetect.errors import InputError


def _error(exc_info, path):
    """The message of an InputError, checked to be one line naming the file."""
    message = str(exc_info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message[len(f"{path}: "):]


@pytest.mark.parametrize(
    "name", ["points", "monuseg", "painted", "convert"]
)
def test_docstring_examples(name):
    module = importlib.import_module(f"eosdetect.annotations.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# --------------------------------------------------------------------------- CSV points


def test_read_points_csv_xy(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("x,y\n1,2\n3.5,-4\n\n10,0.25\n")
    xy = read_points_csv(p)
    assert xy.dtype == np.float64
    assert xy.tolist() == [[1.0, 2.0], [3.5, -4.0], [10.0, 0.25]]


def test_read_points_csv_class_filter_and_extra_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,class,Y, X ,note\n1,eos,2,1,a\n2, neu ,4,3,b\n3,eos,6,5,\n")
    assert read_points_csv(p).tolist() == [[1, 2], [3, 4], [5, 6]]
    assert read_points_csv(p, class_name="eos").tolist() == [[1, 2], [5, 6]]
    assert read_points_csv(p, class_name="neu").tolist() == [[3, 4]]
    assert read_points_csv(p, class_name="lym").shape == (0, 2)


def test_read_points_csv_class_filter_without_class_column_keeps_all(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("x,y\n1,2\n")
    assert read_points_csv(p, class_name="eos").tolist() == [[1, 2]]


def test_read_points_csv_header_only_and_bom(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("x,y,class\n")
    assert read_points_csv(p).shape == (0, 2)
    p.write_bytes(b"\xef\xbb\xbfx,y\r\n7,8\r\n")  # Excel's "CSV UTF-8"
    assert read_points_csv(p).tolist() == [[7, 8]]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("x,class\n1,a\n", "missing column 'y' (header is 'x,class'; expected 'x,y' or 'x,y,class')"),
        ("a,b\n1,2\n", "missing column 'x' and 'y' (header is 'a,b'; expected 'x,y' or 'x,y,class')"),
        ("x,y\n1,2\n3,abc\n", "line 3: y is not a number: 'abc'"),
        ("x,y\n1,2\n\nfoo,1\n", "line 4: x is not a number: 'foo'"),
        ("x,y\n1\n", "line 2: no value in column 'y'"),
        ("x,y\n,1\n", "line 2: no value in column 'x'"),
        ("x,y\nnan,1\n", "line 2: x is not a finite number: 'nan'"),
        ("", "empty file (expected a header row 'x,y' or 'x,y,class')"),
        ("\n\n", "empty file (expected a header row 'x,y' or 'x,y,class')"),
    ],
)
def test_read_points_csv_bad_files(tmp_path, text, problem):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InputError) as exc_info:
        read_points_csv(p)
    assert _error(exc_info, p) == problem


def test_read_points_csv_missing_and_undecodable(tmp_path):
    with pytest.raises(InputError) as exc_info:
        read_points_csv(tmp_path / "none.csv")
    assert _error(exc_info, tmp_path / "none.csv") == "no such file"
    p = tmp_path / "latin1.csv"
    p.write_bytes(b"x,y\n1,2\xe9\n")
    with pytest.raises(InputError) as exc_info:
        read_points_csv(p)
    assert _error(exc_info, p).startswith("not a readable CSV file")


def test_write_points_csv_exact_text_and_round_trip(tmp_path):
    xy = np.array([[1.5, 2.0], [3.0, 4.1234567]])
    before = xy.copy()
    p = write_points_csv(tmp_path / "sub" / "p.csv", xy, classes=["eos", "neu"])
    assert p.read_text() == "x,y,class\n1.5,2,eos\n3,4.123457,neu\n"
    assert read_points_csv(p, class_name="neu").tolist() == [[3.0, 4.123457]]
    assert np.array_equal(xy, before)
    p2 = write_points_csv(tmp_path / "q.csv", [[0, 1]])
    assert p2.read_text() == "x,y\n0,1\n"
    p3 = write_points_csv(tmp_path / "empty.csv", np.zeros((0, 2)))
    assert p3.read_text() == "x,y\n"
    assert read_points_csv(p3).shape == (0, 2)
    assert not list(tmp_path.glob("**/.*.tmp"))  # atomic write leaves no temporary file


@pytest.mark.parametrize(
    "xy, classes, message",
    [
        (np.zeros((2, 3)), None, r"xy must have shape \(n, 2\), got \(2, 3\)"),
        ([[np.nan, 1]], None, "xy holds NaN"),
        ([[0, 1]], ["a", "b"], "classes has 2 entries for 1 points"),
        ([[0, 1]], "a", "classes must be a sequence"),
    ],
)
def test_write_points_csv_bad_input(tmp_path, xy, classes, message):
    with pytest.raises(ValueError, match=message):
        write_points_csv(tmp_path / "p.csv", xy, classes)
    assert not (tmp_path / "p.csv").exists()


# --------------------------------------------------------------------------- MoNuSeg XML

MONUSEG_XML = """<Annotations MicronsPerPixel="0.252700">
\t<Annotation Id="1" Name="" Type="4" LineColor="65280" Visible="1">
\t\t<Attributes>
\t\t\t<Attribute Name="Description" Id="0" Value=""/>
\t\t</Attributes>
\t\t<Regions>
\t\t\t<RegionAttributeHeaders>
\t\t\t\t<AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>
\t\t\t</RegionAttributeHeaders>
\t\t\t<Region Id="1" Type="0" NegativeROA="0">
\t\t\t\t<Attributes/>
\t\t\t\t<Vertices>
\t\t\t\t\t<Vertex X="1" Y="0.6"/>
\t\t\t\t\t<Vertex X="3.4" Y="0.6"/>
\t\t\t\t\t<Vertex X="3.4" Y="2"/>
\t\t\t\t\t<Vertex X="1" Y="2"/>
\t\t\t\t</Vertices>
\t\t\t</Region>
\t\t\t<Region Id="2" Type="0">
\t\t\t\t<Vertices>
\t\t\t\t\t<Vertex X="5" Y="5"/>
\t\t\t\t\t<Vertex X="5.2" Y="5"/>
\t\t\t\t</Vertices>
\t\t\t</Region>
\t\t\t<Region Id="3" Type="0">
\t\t\t\t<Vertices>
\t\t\t\t\t<Vertex X="3" Y="1" Z="0"/>
\t\t\t\t\t<Vertex X="5" Y="1"/>
\t\t\t\t\t<Vertex X="5" Y="3"/>
\t\t\t\t\t<Vertex X="3" Y="3"/>
\t\t\t\t</Vertices>
\t\t\t</Region>
\t\t</Regions>
\t\t<Plots/>
\t</Annotation>
</Annotations>
"""


def test_read_monuseg_xml(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(MONUSEG_XML)
    polygons = read_monuseg_xml(p)
    assert len(polygons) == 2  # region 2 has two vertices: a stray click, skipped
    assert polygons[0].dtype == np.float64
    assert polygons[0].tolist() == [[1, 0.6], [3.4, 0.6], [3.4, 2], [1, 2]]
    assert polygons[1].tolist() == [[3, 1], [5, 1], [5, 3], [3, 3]]


def test_polygons_to_labels_later_overwrites_earlier(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(MONUSEG_XML)
    labels = polygons_to_labels(read_monuseg_xml(p), (5, 7))
    assert labels.dtype == np.int32
    # vertices are rounded to pixel centres: region 1 covers rows 1-2 (Y 0.6 -> 1), cols 1-3 (X 3.4 -> 3)
    assert labels.tolist() == [
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 2, 2, 2, 0],
        [0, 1, 1, 2, 2, 2, 0],
        [0, 0, 0, 2, 2, 2, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]


def test_polygons_to_labels_clips_and_keeps_numbering():
    triangle = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    outside = np.array([[10.0, 10.0], [12.0, 10.0], [12.0, 12.0]])
    edge = np.array([[2.0, 1.0], [5.0, 1.0], [5.0, 2.0], [2.0, 2.0]])
    before = triangle.copy()
    labels = polygons_to_labels([triangle, outside, edge], (3, 4))
    assert labels.tolist() == [
        [1, 1, 1, 0],
        [1, 1, 3, 3],
        [1, 0, 3, 3],
    ]
    assert np.array_equal(triangle, before)
    assert polygons_to_labels([], (2, 3)).tolist() == [[0, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize(
    "polygons, shape, message",
    [
        ([], (0, 3), "shape must be two positive integers"),
        ([], (2.5, 3), "shape must be two positive integers"),
        ([], (2, 3, 3), r"shape must be \(rows, cols\)"),
        ([np.zeros((3, 3))], (2, 3), r"polygon 0 must have shape \(k, 2\)"),
        ([np.zeros((3, 2)), np.zeros((0, 2))], (2, 3), r"polygon 1 must have shape \(k, 2\) with k >= 1"),
        ([[[0, 0], [1, np.inf], [1, 1]]], (2, 3), "polygon 0 holds NaN or infinite"),
    ],
)
def test_polygons_to_labels_bad_input(polygons, shape, message):
    with pytest.raises(ValueError, match=message):
        polygons_to_labels(polygons, shape)


def test_read_monuseg_xml_without_regions_or_objects(tmp_path):
    p = tmp_path / "empty_regions.xml"
    p.write_text("<Annotations><Annotation Id='1'><Regions><RegionAttributeHeaders/></Regions>"
                 "</Annotation></Annotations>")
    assert read_monuseg_xml(p) == []
    p = tmp_path / "single.xml"  # a lone <Annotation> as root is accepted too
    p.write_text("<Annotation><Regions><Region><Vertices><Vertex X='0' Y='0'/><Vertex X='1' Y='0'/>"
                 "<Vertex X='1' Y='1'/></Vertices></Region></Regions></Annotation>")
    assert [q.tolist() for q in read_monuseg_xml(p)] == [[[0, 0], [1, 0], [1, 1]]]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("<Annotations><Annotation Id='1'><Attributes/></Annotation></Annotations>",
         "not a MoNuSeg/Aperture XML file (no <Annotation>/<Regions> element)"),
        ("<Annotations/>", "not a MoNuSeg/Aperture XML file (no <Annotation>/<Regions> element)"),
        ("<annotation><filename>a.jpg</filename></annotation>",
         "not a MoNuSeg/Aperture XML file (root element <annotation>, expected <Annotations>)"),
        ("<Annotations><Annotation><Regions><Region Id='3'><Vertices><Vertex X='abc' Y='1'/>"
         "</Vertices></Region></Regions></Annotation></Annotations>",
         "Region 3: vertex X is not a number: 'abc'"),
        ("<Annotations><Annotation><Regions><Region><Vertices><Vertex X='1'/>"
         "</Vertices></Region></Regions></Annotation></Annotations>",
         "Region #1: a <Vertex> has no Y attribute"),
        ("<Annotations><Annotation><Regions><Region Id='8'><Vertices><Vertex X='1' Y='inf'/>"
         "</Vertices></Region></Regions></Annotation></Annotations>",
         "Region 8: vertex Y is not a finite number: 'inf'"),
        ("", "empty file (0 bytes)"),
    ],
)
def test_read_monuseg_xml_bad_files(tmp_path, text, problem):
    p = tmp_path / "bad.xml"
    p.write_text(text)
    with pytest.raises(InputError) as exc_info:
        read_monuseg_xml(p)
    assert _error(exc_info, p) == problem


def test_read_monuseg_xml_not_xml_or_missing(tmp_path):
    p = tmp_path / "bad.xml"
    p.write_text("<Annotations><Annotation>")
    with pytest.raises(InputError) as exc_info:
        read_monuseg_xml(p)
    assert _error(exc_info, p).startswith("not valid XML (")
    with pytest.raises(InputError) as exc_info:
        read_monuseg_xml(tmp_path / "none.xml")
    assert _error(exc_info, tmp_path / "none.xml") == "no such file or not readable"


@pytest.mark.realdata
def test_monuseg_xml_rasterises_to_the_shared_instance_image():
    folder = SHARED_DATA / "monuseg"
    xmls = sorted((folder / "annotations").glob("*.xml"))
    if not xmls:
        pytest.skip(f"no MoNuSeg XML files in {folder / 'annotations'}")
    xml = xmls[0]
    reference = read_label_image(folder / "instances" / f"{xml.stem}.png")
    labels = polygons_to_labels(read_monuseg_xml(xml), reference.shape)
    assert labels.max() == reference.max()
    assert np.array_equal(labels, reference)


# --------------------------------------------------------------------------- painted dots

G = (0, 255, 0)


def _painted_fixture():
    original = np.full((6, 8, 3), (220, 150, 190), dtype=np.uint8)
    original[0, 7] = (10, 250, 5)  # green already in the image (e.g. a pen mark)
    original[1, 7] = (10, 250, 5)
    original[2, 7] = (10, 250, 5)
    painted = original.copy()
    painted[1:3, 1:3] = G  # 2x2 dot, centre x=1.5, y=1.5
    painted[4, 3] = (30, 230, 40)  # L-shaped 3 px dot, slightly off green (JPEG)
    painted[4, 4] = (20, 240, 10)
    painted[5, 3] = G
    painted[0, 5] = G  # a lone speck: below min_area
    return painted, original


def test_points_from_painted_exact():
    painted, original = _painted_fixture()
    before = painted.copy(), original.copy()
    xy = points_from_painted(painted)
    assert xy.dtype == np.float64
    assert xy.tolist() == [[7.0, 1.0], [1.5, 1.5], [10 / 3, 13 / 3]]  # row-major order of first pixels
    # with the original, the green that was already there is ignored
    assert points_from_painted(painted, original).tolist() == [[1.5, 1.5], [10 / 3, 13 / 3]]
    assert points_from_painted(painted, original, min_area=1).tolist() == [
        [5.0, 0.0], [1.5, 1.5], [10 / 3, 13 / 3]]
    # exact colour only: the off-green pixels no longer count
    assert points_from_painted(painted, original, tolerance=0, min_area=1).tolist() == [
        [5.0, 0.0], [1.5, 1.5], [3.0, 5.0]]
    assert np.array_equal(painted, before[0]) and np.array_equal(original, before[1])


def test_points_from_painted_other_colour_and_none():
    img = np.full((4, 4, 3), 255, dtype=np.uint8)
    assert points_from_painted(img).shape == (0, 2)
    img[0:2, 0:2] = (255, 0, 0)
    assert points_from_painted(img).shape == (0, 2)
    assert points_from_painted(img, colour=(255, 0, 0)).tolist() == [[0.5, 0.5]]


def test_points_from_painted_survives_jpeg():
    rows, cols = np.mgrid[:48, :64]
    tissue = np.stack([200 + 20 * np.sin(cols / 5), 140 + 20 * np.cos(rows / 7), 185 + 0 * rows], -1)
    original = tissue.astype(np.uint8)
    painted = original.copy()
    truth = [(12, 10), (52, 12), (40, 30)]  # in row-major order of the dots
    for x, y in truth:
        cv2.circle(painted, (x, y), 3, G, -1)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(painted, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    jpeg = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert points_from_painted(jpeg, tolerance=0).shape == (0, 2)  # the colour has really shifted
    xy = points_from_painted(jpeg)
    assert xy.shape == (3, 2)
    assert np.abs(xy - np.array(truth, dtype=float)).max() <= 0.5
    xy_with_original = points_from_painted(jpeg, original)
    assert np.abs(xy_with_original - np.array(truth, dtype=float)).max() <= 0.5


@pytest.mark.parametrize(
    "painted, original, kwargs, message",
    [
        (np.zeros((4, 4, 3), np.float32), None, {}, r"painted_rgb must be an \(M, N, 3\) uint8"),
        (np.zeros((4, 4), np.uint8), None, {}, r"painted_rgb must be an \(M, N, 3\) uint8"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8), {}, "must match"),
        (np.zeros((4, 4, 3), np.uint8), None, {"tolerance": -1}, "tolerance must be a number >= 0"),
        (np.zeros((4, 4, 3), np.uint8), None, {"min_area": 0}, "min_area must be a whole number >= 1"),
        (np.zeros((4, 4, 3), np.uint8), None, {"min_area": 2.5}, "min_area must be a whole number >= 1"),
        (np.zeros((4, 4, 3), np.uint8), None, {"colour": (0, 255)}, r"colour must be three numbers"),
    ],
)
def test_points_from_painted_bad_input(painted, original, kwargs, message):
    with pytest.raises(ValueError, match=message):
        points_from_painted(painted, original, **kwargs)


# --------------------------------------------------------------------------- masks from labels


def test_points_to_mask_single_disc():
    image = np.zeros((5, 5, 3), dtype=np.uint8)
    mask = points_to_mask(image, np.array([[2.0, 2.0]]), 1)
    assert mask.dtype == np.bool_
    assert mask.astype(int).tolist() == [
        [0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    assert points_to_mask(image, [[2.0, 2.0]], 1.5).sum() == 9


def test_points_to_mask_gap_on_the_bisector():
    xy = np.array([[2.0, 1.0], [6.0, 1.0]])
    before = xy.copy()
    mask = points_to_mask(np.zeros((3, 9)), xy, 3)
    assert mask.astype(int).tolist() == [[1, 1, 1, 1, 0, 1, 1, 1, 1]] * 3
    assert instances_from_binary(mask).max() == 2
    assert np.array_equal(xy, before)


def test_points_to_labels_nearest_point_and_diagonal_gap():
    labels = points_to_labels(np.zeros((5, 5)), [[1, 1], [3, 3]], 2)
    assert labels.dtype == np.int32
    assert labels.tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 2],
        [0, 0, 0, 2, 2],
        [0, 0, 2, 2, 2],
    ]
    # no two objects touch, even diagonally: one component per point
    assert instances_from_binary(labels > 0).max() == 2
    labels = points_to_labels(np.zeros((4, 7)), [[1, 1], [5, 2], [3, 1]], 1.5)
    assert labels.tolist() == [
        [1, 1, 0, 3, 0, 0, 0],
        [1, 1, 0, 3, 0, 2, 2],
        [1, 1, 0, 0, 0, 2, 2],
        [0, 0, 0, 0, 2, 2, 2],
    ]
    assert instances_from_binary(labels > 0).max() == 3


def test_points_to_mask_clipped_to_boxes():
    labels = points_to_labels(np.zeros((5, 6)), [[2, 2]], 2, boxes=[[1, 1, 3, 4]])
    assert labels.tolist() == [
        [0, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ]
    # a pixel outside a nearer point's box goes to the other point
    labels = points_to_labels(np.zeros((1, 6)), [[1, 0], [3, 0]], 3, boxes=[[0, 0, 6, 1], [3, 0, 4, 1]])
    assert labels.tolist() == [[1, 1, 0, 2, 0, 0]]


def test_points_to_mask_edges_and_empty():
    assert points_to_mask(np.zeros((2, 3)), np.zeros((0, 2)), 2).tolist() == [[False] * 3] * 2
    assert not points_to_mask(np.zeros((2, 3)), [[20, 20]], 2).any()
    assert points_to_mask(np.zeros((2, 3)), [[-1, 0]], 1).astype(int).tolist() == [[1, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize(
    "image, xy, radius, boxes, message",
    [
        (np.zeros((3, 3)), [[1, 1]], 0, None, "radius_px must be a positive number"),
        (np.zeros((3, 3)), [[1, 1]], float("nan"), None, "radius_px must be a positive number"),
        (np.zeros((3, 3)), [[1, 1, 1]], 1, None, r"xy must have shape \(n, 2\)"),
        (np.zeros((3, 3)), [[1, np.nan]], 1, None, "xy holds NaN"),
        (np.zeros((3, 3)), [[1, 1]], 1, [[0, 0, 1, 1], [0, 0, 2, 2]], "boxes has 2 rows for 1 points"),
        (np.zeros(3), [[1, 1]], 1, None, r"image_rgb must be an \(M, N\) or \(M, N, 3\) array"),
    ],
)
def test_points_to_mask_bad_input(image, xy, radius, boxes, message):
    with pytest.raises(ValueError, match=message):
        points_to_mask(image, xy, radius, boxes=boxes)


def test_boxes_to_mask():
    boxes = np.array([[1, 0, 5, 4]])
    before = boxes.copy()
    assert boxes_to_mask((4, 6), boxes, shrink=1.0).astype(int).tolist() == [
        [0, 0, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 0],
        [0, 1, 1, 1, 1, 0],
        [0, 0, 1, 1, 0, 0],
    ]
    assert boxes_to_mask((3, 3), [[0, 0, 3, 3]]).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert not boxes_to_mask((2, 2), np.zeros((0, 4))).any()
    assert np.array_equal(boxes, before)


@pytest.mark.parametrize(
    "shape, boxes, shrink, message",
    [
        ((0, 3), [[0, 0, 1, 1]], 0.9, "shape must be two positive integers"),
        ((3, 3), [[0, 0, 1]], 0.9, r"boxes must have shape \(n, 4\)"),
        ((3, 3), [[0, 0, 1, 1]], 0, "shrink must be a positive number"),
    ],
)
def test_boxes_to_mask_bad_input(shape, boxes, shrink, message):
    with pytest.raises(ValueError, match=message):
        boxes_to_mask(shape, boxes, shrink)
