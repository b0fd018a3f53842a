import pytest

from eosdetect.annotations.voc import VocAnnotation, VocObject, box_to_voc, read_voc, voc_bytes, write_voc
from eosdetect.errors import InputError

LABELIMG_SAMPLE = b"""<annotation verified="yes">
\t<folder>imgs</folder>
\t<filename>a.jpg</filename>
\t<path>/data/imgs/a.jpg</path>
\t<source>
\t\t<database>Unknown</database>
\t</source>
\t<size>
\t\t<width>640</width>
\t\t<height>480</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
\t<object>
\t\t<name>eosinophil</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>1</difficult>
\t\t<bndbox>
\t\t\t<xmin>10</xmin>
\t\t\t<ymin>20</ymin>
\t\t\t<xmax>110</xmax>
\t\t\t<ymax>120</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>neutrophil</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>1</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>500</xmin>
\t\t\t<ymin>300</ymin>
\t\t\t<xmax>640</xmax>
\t\t\t<ymax>400</ymax>
\t\t</bndbox>
\t</object>
</annotation>
"""


def test_labelimg_file_roundtrips_byte_for_byte(tmp_path):
    p = tmp_path / "a.xml"
    p.write_bytes(LABELIMG_SAMPLE)
    ann = read_voc(p)
    assert ann.verified and ann.width == 640 and ann.path == "/data/imgs/a.jpg"
    assert [o.name for o in ann.objects] == ["eosinophil", "neutrophil"]
    assert ann.objects[0].difficult and not ann.objects[1].difficult
    assert voc_bytes(ann) == LABELIMG_SAMPLE
    out = write_voc(tmp_path / "b.xml", ann)
    assert out.read_bytes() == LABELIMG_SAMPLE


def test_truncated_rule_and_box_conversion():
    ann = VocAnnotation("x.png", 100, 50, objects=[VocObject("c", 1, 5, 20, 30)])
    assert b"<truncated>1</truncated>" in voc_bytes(ann)
    assert box_to_voc(0, 0, 100, 50, 100, 50) == (1, 1, 100, 50)
    assert box_to_voc(-5.2, 10.4, 20.6, 12, 100, 50) == (1, 11, 21, 12)
    # and back: pixels 10..29 are VOC 11..30, edges 10 and 30 again
    assert VocObject("c", *box_to_voc(10, 20, 30, 40, 100, 50)).edges() == (10, 20, 30, 40)


def test_bad_voc_files(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><filename>a</filename>")
    with pytest.raises(InputError, match="not valid XML"):
        read_voc(bad)
    other = tmp_path / "other.xml"
    other.write_text("<svg/>")
    with pytest.raises(InputError, match="not a Pascal VOC"):
        read_voc(other)
    nobox = tmp_path / "nobox.xml"
    nobox.write_text("<annotation><filename>a</filename><object><name>x</name></object></annotation>")
    with pytest.raises(InputError, match="bndbox"):
        read_voc(nobox)


def test_degenerate_boxes_are_skipped():
    ann = VocAnnotation("x", 10, 10, objects=[VocObject("a", 5, 5, 5, 9), VocObject("a", 1, 1, 4, 4)])
    assert len(ann.boxes("a")) == 1 and len(ann.boxes("a", skip_degenerate=False)) == 2
