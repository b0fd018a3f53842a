"""Pre-labels as LabelImg files: boxes sized to cells, uncertain ones difficult, human work never lost."""

import numpy as np
import pytest
from PIL import Image

from eosdetect.annotations.voc import VocAnnotation, VocObject, read_voc, write_voc
from eosdetect.apps.cli import main
from eosdetect.apps.prelabel import PrelabelSettings, prelabel_all, prelabel_image
from eosdetect.models.config import ModelConfig, Thresholds
from eosdetect.models.model import Model

DARK, PALE = (20, 20, 20), (120, 100, 120)  # U-Net "probability" about 0.92 and 0.56


def GreyIsProbability() -> Model:
    """A model whose 'U-Net' gives 1 - brightness on non-background pixels (no network)."""
    return Model.from_functions(
        ModelConfig(unet_depth=2, tile_size=64, pixel_size_um=1.0, input_pixel_size_um=1.0, class_name="eosinophil"),
        Thresholds(prob_threshold=0.5, min_distance_um=3, smooth_um=0.5, seed_h_um=0.5, min_area_um2=5),
        lambda b: np.where(b.mean(axis=-1) < 0.8, 1 - b.mean(axis=-1), 0).astype(np.float32),
    )


def _image(path, discs):
    """discs: (row, col, radius, colour)."""
    img = np.full((80, 100, 3), 235, np.uint8)
    yy, xx = np.mgrid[:80, :100]
    for r, c, rad, col in discs:
        img[(yy - r) ** 2 + (xx - c) ** 2 <= rad**2] = col
    Image.fromarray(img).save(path)
    return path


def test_boxes_fit_cells_and_uncertain_ones_are_difficult(tmp_path):
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK), (50, 70, 12, PALE)])
    rec = prelabel_image(GreyIsProbability(), img, tmp_path / "a.xml", PrelabelSettings())
    assert rec.status == "written" and rec.new_boxes == 2 and rec.uncertain == 1
    ann = read_voc(tmp_path / "a.xml")
    assert ann.filename == "a.png" and (ann.width, ann.height) == (100, 80) and not ann.verified
    small, big = sorted(ann.objects, key=lambda o: o.xmax - o.xmin)
    assert small.name == "eosinophil" and not small.difficult  # dark: the model is sure
    assert big.difficult  # pale: mean probability 0.56 < 0.5 + 0.2
    # boxes follow the cell, not a fixed square. VOC is 1-based and inclusive: the disc of
    # radius 8 at column 20 covers pixels 12..28, written 13..29
    assert (small.xmin, small.ymin, small.xmax, small.ymax) == (13, 13, 29, 29)
    assert (big.xmin, big.ymin, big.xmax, big.ymax) == (59, 39, 83, 63)  # pixels 58..82, 38..62
    assert ann.depth == 3


def test_grey_images_get_depth_1_as_labelimg_writes(tmp_path):
    rgb = np.asarray(Image.open(_image(tmp_path / "rgb.png", [(20, 20, 8, DARK)])))
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")  # a one-channel PNG
    for stem in ("rgb", "grey"):  # an RGB file with only grey pixels is grey to LabelImg (QImage.isGrayscale)
        prelabel_image(GreyIsProbability(), tmp_path / f"{stem}.png", tmp_path / f"{stem}.xml", PrelabelSettings())
        assert read_voc(tmp_path / f"{stem}.xml").depth == 1, stem


def test_verified_files_are_never_touched(tmp_path):
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK)])
    xml = tmp_path / "a.xml"
    write_voc(xml, VocAnnotation("a.png", 100, 80, verified=True, objects=[VocObject("neutrophil", 5, 5, 30, 30)]))
    before = xml.read_bytes()
    mtime = xml.stat().st_mtime_ns
    rec = prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings())
    assert rec.status == "verified" and xml.read_bytes() == before and xml.stat().st_mtime_ns == mtime


def test_unverified_files_keep_human_boxes_and_gain_only_new_ones(tmp_path):
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK), (50, 70, 8, DARK)])
    xml = tmp_path / "a.xml"
    human = [VocObject("eosinophil", 10, 10, 31, 31), VocObject("neutrophil", 80, 5, 95, 20, difficult=True)]
    write_voc(xml, VocAnnotation("a.png", 100, 80, folder="mine", objects=human))
    rec = prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings())
    assert rec.status == "merged" and rec.kept_boxes == 2 and rec.new_boxes == 1
    ann = read_voc(xml)
    assert ann.objects[:2] == human and ann.folder == "mine"
    assert abs(ann.objects[2].centre[0] - 71) <= 1.5  # the cell at column 70 was added
    # running again adds nothing (no duplicates) and leaves the file as it is
    before, mtime = xml.read_bytes(), xml.stat().st_mtime_ns
    rec = prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings())
    assert rec.status == "unchanged" and rec.new_boxes == 0 and len(read_voc(xml).objects) == 3
    assert xml.read_bytes() == before and xml.stat().st_mtime_ns == mtime


def test_a_box_the_annotator_renamed_is_not_proposed_again(tmp_path):
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK), (50, 70, 8, DARK)])
    xml = tmp_path / "a.xml"
    prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings())
    ann = read_voc(xml)
    assert len(ann.objects) == 2
    ann.objects[0].name = "neutrophil"  # the annotator's correction, saved without verifying
    write_voc(xml, ann)
    rec = prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings())
    assert rec.status == "unchanged" and [o.name for o in read_voc(xml).objects] == ["neutrophil", "eosinophil"]
    # a box of another class only partly over the cell (a neighbouring red cell) does not block it
    img = _image(tmp_path / "b.png", [(20, 20, 8, DARK), (50, 70, 8, DARK)])
    write_voc(tmp_path / "b.xml", VocAnnotation("b.png", 100, 80, objects=[VocObject("RBC", 17, 17, 45, 45)]))
    rec = prelabel_image(GreyIsProbability(), img, tmp_path / "b.xml", PrelabelSettings())
    assert rec.new_boxes == 2
    # renamed and redrawn a little off (IoU under 0.5), the boxes still hold each other's centres: the same cell
    img = _image(tmp_path / "c.png", [(40, 50, 12, DARK)])
    write_voc(tmp_path / "c.xml", VocAnnotation("c.png", 100, 80, objects=[VocObject("neutrophil", 40, 33, 70, 60)]))
    rec = prelabel_image(GreyIsProbability(), img, tmp_path / "c.xml", PrelabelSettings())
    assert rec.new_boxes == 0


def test_a_box_the_annotator_deleted_stays_deleted(tmp_path):
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK), (50, 70, 8, DARK)])
    xml = tmp_path / "a.xml"
    prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings())
    ann = read_voc(xml)
    deleted = ann.objects.pop(0)  # a false positive, deleted and saved without verifying
    write_voc(xml, ann)
    rec = prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings())
    assert rec.status == "unchanged" and deleted not in read_voc(xml).objects and len(read_voc(xml).objects) == 1
    # a fresh start (the XML removed) proposes everything again
    xml.unlink()
    assert prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings()).new_boxes == 2


def test_images_of_the_same_name_do_not_share_a_label_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    x1 = _image(tmp_path / "a" / "x.png", [(20, 20, 8, DARK)])
    x2 = _image(tmp_path / "b" / "x.png", [(50, 70, 8, DARK)])
    y1 = _image(tmp_path / "a" / "y.png", [(20, 20, 8, DARK)])
    y2 = _image(tmp_path / "a" / "y.jpg", [(50, 70, 8, DARK)])
    recs = prelabel_all(GreyIsProbability(), [x1, x2, y1, y2], tmp_path / "out", PrelabelSettings())
    assert [r.status for r in recs] == ["written", "error", "written", "error"]
    assert "same name as" in recs[1].error and str(x1) in recs[1].error and "\n" not in recs[1].error
    assert read_voc(tmp_path / "out" / "x.xml").filename == "x.png" and len(read_voc(tmp_path / "out" / "x.xml").objects) == 1
    # next to the images (no -o): y.png and y.jpg would both be y.xml
    recs = prelabel_all(GreyIsProbability(), [y1, y2], None, PrelabelSettings())
    assert [r.status for r in recs] == ["written", "error"]
    assert read_voc(tmp_path / "a" / "y.xml").filename == "y.png"
    # ... and in separate runs: the label file names its image, so the second is refused, not merged
    before = (tmp_path / "a" / "y.xml").read_bytes()
    for image, out in ((y2, None), (x2, tmp_path / "out")):
        rec = prelabel_all(GreyIsProbability(), [image], out, PrelabelSettings())[0]
        assert rec.status == "error" and "is the label file of" in rec.error and "\n" not in rec.error
    assert (tmp_path / "a" / "y.xml").read_bytes() == before
    assert len(read_voc(tmp_path / "out" / "x.xml").objects) == 1


def test_a_label_file_naming_its_image_by_a_dotted_stem_is_its_own(tmp_path):
    img = _image(tmp_path / "smear.v2.png", [(20, 20, 8, DARK), (50, 70, 8, DARK)])
    write_voc(tmp_path / "smear.v2.xml", VocAnnotation(filename="smear.v2", width=100, height=80,
                                                       objects=[VocObject("eosinophil", 10, 10, 30, 30)]))
    rec = prelabel_all(GreyIsProbability(), [img], None, PrelabelSettings())[0]
    assert rec.status == "merged", rec.error
    assert len(read_voc(tmp_path / "smear.v2.xml").objects) == 2  # the human box kept, one new


def test_a_copied_folder_keeps_its_label_files(tmp_path):
    """cp -r round1 round2, the original kept: the XML's <path> names round1's image, which is still
    there, but the file beside (or the same image copied) is still this image's."""
    import shutil

    (tmp_path / "round1" / "xml").mkdir(parents=True)
    img = _image(tmp_path / "round1" / "x.png", [(20, 20, 8, DARK)])
    prelabel_all(GreyIsProbability(), [img], None, PrelabelSettings())  # beside the image
    prelabel_all(GreyIsProbability(), [img], tmp_path / "round1" / "xml", PrelabelSettings())  # into -o
    shutil.copytree(tmp_path / "round1", tmp_path / "round2")
    copy = tmp_path / "round2" / "x.png"
    for out in (None, tmp_path / "round2" / "xml"):
        rec = prelabel_all(GreyIsProbability(), [copy], out, PrelabelSettings())[0]
        assert rec.status == "unchanged", rec.error
    # a different image of that name, into the same -o: refused, naming both
    (tmp_path / "other").mkdir()
    other = _image(tmp_path / "other" / "x.png", [(50, 70, 8, DARK)])
    rec = prelabel_all(GreyIsProbability(), [other], tmp_path / "round2" / "xml", PrelabelSettings())[0]
    assert rec.status == "error" and f"is the label file of {img}, not of {other}" in rec.error


def test_bad_existing_files_are_reported_and_left_alone(tmp_path):
    a = _image(tmp_path / "a.png", [(20, 20, 8, DARK)])
    b = _image(tmp_path / "b.png", [(20, 20, 8, DARK)])
    c = _image(tmp_path / "c.png", [(20, 20, 8, DARK)])
    (tmp_path / "a.xml").write_text("<annotation><oops>")
    write_voc(tmp_path / "b.xml", VocAnnotation("b.png", 640, 480))
    (tmp_path / "d.png").write_bytes(b"not an image")
    before = {n: (tmp_path / n).read_bytes() for n in ("a.xml", "b.xml")}
    recs = prelabel_all(GreyIsProbability(), [a, b, c, tmp_path / "d.png"], None, PrelabelSettings())
    status = {r.image.rsplit("/", 1)[-1]: r for r in recs}
    assert status["a.png"].status == "error" and "not valid XML" in status["a.png"].error
    assert status["b.png"].status == "error" and "640x480 but b.png is 100x80" in status["b.png"].error
    assert status["c.png"].status == "written"  # the others still finish
    assert status["d.png"].status == "error" and "d.png" in status["d.png"].error
    assert {n: (tmp_path / n).read_bytes() for n in ("a.xml", "b.xml")} == before


def test_yolo_files_read_by_labelimg(tmp_path):
    yolo_io = pytest.importorskip("libs.yolo_io", reason="LabelImg is not installed")
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK), (50, 70, 12, PALE)])
    prelabel_image(GreyIsProbability(), img, tmp_path / "a.xml", PrelabelSettings(yolo=True))
    assert (tmp_path / "classes.txt").read_text() == "eosinophil\n"

    class QImageLike:
        def height(self):
            return 80

        def width(self):
            return 100

        def isGrayscale(self):
            return False

    shapes = yolo_io.YoloReader(str(tmp_path / "a.txt"), QImageLike()).get_shapes()
    voc = read_voc(tmp_path / "a.xml").objects
    assert len(shapes) == 2
    for (label, pts, *_), o in zip(shapes, voc):
        assert label == "eosinophil"
        assert pts[0] == (o.xmin, o.ymin) and pts[2] == (o.xmax, o.ymax)


def test_yolo_files_edited_by_hand_are_never_overwritten(tmp_path):
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK), (50, 70, 12, PALE)])
    xml, txt = tmp_path / "a.xml", tmp_path / "a.txt"
    settings = PrelabelSettings(yolo=True)
    assert prelabel_image(GreyIsProbability(), img, xml, settings).status == "written"
    # untouched since: a re-run is free to keep them in step
    assert prelabel_image(GreyIsProbability(), img, xml, settings).status == "unchanged"
    txt.write_text("0 0.700000 0.200000 0.300000 0.200000\n")  # corrected in LabelImg's YOLO mode
    before = {p: p.read_bytes() for p in (xml, txt)}
    recs = prelabel_all(GreyIsProbability(), [img], None, settings)
    assert recs[0].status == "error" and "a.txt" in recs[0].error and "edited" in recs[0].error
    assert {p: p.read_bytes() for p in (xml, txt)} == before
    # YOLO labels with no XML beside them: a new XML would hide them in LabelImg
    xml.unlink()
    recs = prelabel_all(GreyIsProbability(), [img], None, PrelabelSettings())
    assert recs[0].status == "error" and "without a.xml" in recs[0].error and not xml.exists()


def test_yolo_check_copes_with_an_xml_without_size_and_text_that_is_not_utf8(tmp_path):
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK)])
    xml, txt = tmp_path / "a.xml", tmp_path / "a.txt"
    settings = PrelabelSettings(yolo=True)
    prelabel_image(GreyIsProbability(), img, xml, settings)
    ann = read_voc(xml)
    write_voc(xml, VocAnnotation(ann.filename, 0, 0, objects=ann.objects))  # a hand-made XML with no <size>
    recs = prelabel_all(GreyIsProbability(), [img], None, settings)  # compared at the image's own size
    assert recs[0].status == "unchanged", recs[0].error
    txt.write_bytes("0 0.2 0.2 0.1 0.1 # \u00e9t\u00e9\n".encode("latin-1"))
    before = txt.read_bytes()
    recs = prelabel_all(GreyIsProbability(), [img], None, settings)
    assert recs[0].status == "error" and "a.txt: not UTF-8" in recs[0].error and txt.read_bytes() == before


def test_merging_keeps_what_other_tools_wrote(tmp_path):
    """Elements LabelImg does not know, fractional coordinates and <segmented>
    survive a merge; only the new <object> is added."""
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK), (50, 70, 8, DARK)])
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><filename>a.png</filename><owner><name>Dr S</name></owner>"
        "<size><width>100</width><height>80</height><depth>3</depth></size><segmented>1</segmented>"
        "<object><name>neutrophil</name><occluded>1</occluded><bndbox><xmin>10.6</xmin><ymin>10.2</ymin>"
        "<xmax>30.4</xmax><ymax>30.9</ymax></bndbox><comment>checked  twice</comment></object></annotation>")
    rec = prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings())
    assert rec.status == "merged" and rec.new_boxes == 1
    text = xml.read_text()
    for kept in ("<owner>", "<name>Dr S</name>", "<segmented>1</segmented>", "<occluded>1</occluded>",
                 "<xmin>10.6</xmin>", "<ymax>30.9</ymax>", "<comment>checked  twice</comment>"):
        assert kept in text, kept
    assert "\n\t<object>" in text and "  " not in text.replace("checked  twice", "")
    ann = read_voc(xml)
    assert [o.name for o in ann.objects] == ["neutrophil", "eosinophil"] and ann.segmented == 1


def test_yolo_labels_without_classes_txt_are_not_overwritten(tmp_path):
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK)])
    xml, txt = tmp_path / "a.xml", tmp_path / "a.txt"
    txt.write_text("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.05 0.05\n")  # darknet layout: names in obj.names
    write_voc(xml, VocAnnotation("a.png", 100, 80, objects=[VocObject("WBC", 40, 30, 60, 50)]))
    before = {p: p.read_bytes() for p in (xml, txt)}
    recs = prelabel_all(GreyIsProbability(), [img], None, PrelabelSettings(yolo=True))
    assert recs[0].status == "error" and "without a classes.txt" in recs[0].error
    assert {p: p.read_bytes() for p in (xml, txt)} == before
    xml.unlink()  # and with no XML either
    recs = prelabel_all(GreyIsProbability(), [img], None, PrelabelSettings(yolo=True))
    assert recs[0].status == "error" and txt.read_bytes() == before[txt] and not xml.exists()


def test_classes_txt_keeps_every_index(tmp_path):
    """LabelImg reads classes.txt line by line, blank lines included: other
    images' class indices must keep their meaning when a class is added."""
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK)])
    (tmp_path / "classes.txt").write_text("RBC\n\nWBC\n")
    prelabel_image(GreyIsProbability(), img, tmp_path / "a.xml", PrelabelSettings(yolo=True))
    assert (tmp_path / "classes.txt").read_text() == "RBC\n\nWBC\neosinophil\n"
    assert (tmp_path / "a.txt").read_text().startswith("3 ")


def test_prelabel_cli_reports_and_exits_nonzero_on_bad_files(tmp_path, tiny_model_dir, capsys):
    _image(tmp_path / "a.png", [(20, 20, 8, DARK)])
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff truncated")
    out = tmp_path / "xml"
    rc = main(["prelabel", str(tmp_path), "-m", str(tiny_model_dir), "-o", str(out), "--class-name", "cell"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "bad.jpg" in captured.err and "1 file(s) written" in captured.out
    assert read_voc(out / "a.xml").filename == "a.png"


def test_classical_prelabels_refuse_a_helper(tmp_path, capsys):
    _image(tmp_path / "a.png", [(20, 20, 8, DARK)])
    assert main(["prelabel", str(tmp_path), "--classical", "smear", "--helper", str(tmp_path)]) == 1
    assert "--classical pre-labels without any network" in capsys.readouterr().err


def test_a_run_without_yolo_keeps_eosdetects_yolo_files_in_step(tmp_path):
    """--yolo, then a plain run that adds boxes, then --yolo again: no false 'edited' refusal."""
    img = _image(tmp_path / "a.png", [(20, 20, 8, DARK)])
    xml, txt = tmp_path / "a.xml", tmp_path / "a.txt"
    assert prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings(yolo=True)).status == "written"
    _image(tmp_path / "a.png", [(20, 20, 8, DARK), (50, 70, 8, DARK)])  # a second cell, found by the next run
    assert prelabel_image(GreyIsProbability(), img, xml, PrelabelSettings()).status == "merged"
    assert len(txt.read_text().splitlines()) == 2
    recs = prelabel_all(GreyIsProbability(), [img], None, PrelabelSettings(yolo=True))
    assert recs[0].status == "unchanged", recs[0].error
