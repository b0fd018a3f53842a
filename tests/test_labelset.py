"""Images paired with labels in every format, on small literal examples."""

import numpy as np
import pytest
from PIL import Image

from conftest import disc_image
from eosdetect.annotations.voc import VocAnnotation, VocObject, write_voc
from eosdetect.errors import ConfigError, InputError
from eosdetect.models.config import ModelConfig
from eosdetect.training.labelset import eval_item, load_labelled, split_names, target_labels, training_sample


def _images(folder, names=("a", "b"), shape=(40, 60)):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(disc_image(shape=shape, centres=((10, 10), (25, 40)), radius=5)).save(folder / f"{n}.png")
    return folder


def _voc(path, objects, size=(60, 40), verified=False):
    ann = VocAnnotation(filename=path.stem + ".png", width=size[0], height=size[1], verified=verified,
                        objects=[VocObject(*o) if not isinstance(o, VocObject) else o for o in objects])
    write_voc(path, ann)


def test_voc_class_filter_difficult_clipping_and_degenerate(tmp_path):
    imgs = _images(tmp_path / "img")
    lab = tmp_path / "lab"
    lab.mkdir()
    # VOC boxes are 1-based and inclusive: pixels 5..15 (the disc at row 10, column 10) are 6..16
    _voc(lab / "a.xml", [("eos", 6, 6, 16, 16), ("neu", 35, 20, 45, 30),
                         VocObject("eos", 51, 31, 70, 50),  # reaches outside: clipped
                         VocObject("eos", 20, 5, 19, 9),  # degenerate: skipped
                         VocObject("eos", 30, 2, 38, 10, difficult=True)])
    _voc(lab / "b.xml", [])
    items, rep = load_labelled(imgs, lab, "voc", class_name="eos")
    a = {it.name: it for it in items}["a"]
    # boxes in pixel-edge coordinates (xmax exclusive), centres as pixel positions
    np.testing.assert_array_equal(a.boxes, [[5, 5, 16, 16], [50, 30, 60, 40]])
    np.testing.assert_array_equal(a.points, [[10, 10], [54.5, 34.5]])
    np.testing.assert_array_equal(a.ignore_boxes, [[29, 1, 38, 10]])
    assert (rep.clipped_boxes, rep.skipped_boxes, rep.difficult_boxes) == (1, 1, 1)
    assert any("1 box(es) marked difficult are neither required nor counted" in str(w) for w in rep.warnings())
    assert rep.objects == 2 and rep.classes_found == {"eos": 4, "neu": 1}
    assert any("clipped" in str(w) for w in rep.warnings()) and any("skipped" in str(w) for w in rep.warnings())
    # a detection in the difficult box is neither right nor wrong
    ev = eval_item(a, radius_px=3)
    r = ev.match([[10, 10], [34, 6], [55, 35]])
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)


def test_voc_needs_a_class_when_several_and_lists_them(tmp_path):
    imgs = _images(tmp_path / "img")
    lab = tmp_path / "lab"
    lab.mkdir()
    _voc(lab / "a.xml", [("RBC", 1, 1, 9, 9), ("WBC", 20, 20, 30, 30)])
    _voc(lab / "b.xml", [("RBC", 1, 1, 9, 9)])
    # the library names the parameter to set (the CLI words it as --class: tests/test_cli.py)
    with pytest.raises(ConfigError, match=r"^the labels hold several classes \(RBC, WBC\); choose one$") as exc:
        load_labelled(imgs, lab, "voc")
    assert exc.value.option == "class_name"
    with pytest.raises(ConfigError, match="'eosinophil' occurs in no label file; classes found: RBC, WBC"):
        load_labelled(imgs, lab, "voc", class_name="eosinophil")
    items, _ = load_labelled(imgs, lab, "voc", default_class="WBC")
    assert [len(it.points) for it in items] == [1, 0]


def test_voc_verified_only_and_size_mismatch(tmp_path):
    imgs = _images(tmp_path / "img")
    lab = tmp_path / "lab"
    lab.mkdir()
    _voc(lab / "a.xml", [("eos", 1, 1, 9, 9)], verified=True)
    _voc(lab / "b.xml", [("eos", 1, 1, 9, 9)])
    items, rep = load_labelled(imgs, lab, "voc", verified_only=True)
    assert [it.name for it in items] == ["a"] and rep.skipped_unverified == 1
    assert [(str(w), w.option) for w in rep.warnings()] == [("1 unverified label file(s) skipped", "verified_only")]
    _voc(lab / "a.xml", [("eos", 1, 1, 9, 9)])
    with pytest.raises(InputError, match=r"lab: no label file is marked verified \(2 unverified skipped") as exc:
        load_labelled(imgs, lab, "voc", verified_only=True)
    assert exc.value.option == "verified_only" and "--" not in str(exc.value)
    _voc(lab / "b.xml", [("eos", 1, 1, 9, 9)], size=(100, 100))
    with pytest.raises(InputError, match=r"b\.xml: <size> says 100x100 but the image is 60x40"):
        load_labelled(imgs, lab, "voc")


def test_missing_label_is_an_error_unless_allowed_and_orphans_reported(tmp_path):
    imgs = _images(tmp_path / "img")
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "a.csv").write_text("x,y\n10,10\n")
    (lab / "zzz.csv").write_text("x,y\n1,1\n")
    with pytest.raises(InputError, match=r"b\.png: no label file for this image \(1 image\(s\) without labels\); "
                                         "they may be taken as having no objects if they truly have none$") as exc:
        load_labelled(imgs, lab, "points")
    assert exc.value.option == "allow_unlabelled_as_empty"
    items, rep = load_labelled(imgs, lab, "points", allow_unlabelled_as_empty=True)
    assert [it.n_objects for it in items] == [1, 0]
    assert [p.name for p in rep.unmatched_labels] == ["zzz.csv"]
    assert any("zzz.csv" in str(w) for w in rep.warnings())
    assert any("without a label file" in str(w) for w in rep.warnings())


def test_errors_keep_their_option_through_pickling():
    """An error sent back from a worker process is the one raised: message, path and the parameter it names."""
    import pickle

    e = pickle.loads(pickle.dumps(InputError("b.png", "no label file", option="allow_unlabelled_as_empty")))
    assert (type(e), str(e), e.path, e.problem, e.option) == (
        InputError, "b.png: no label file", "b.png", "no label file", "allow_unlabelled_as_empty")
    c = pickle.loads(pickle.dumps(ConfigError("the labels hold several classes; choose one", option="class_name")))
    assert (type(c), str(c), c.option) == (ConfigError, "the labels hold several classes; choose one", "class_name")
    assert InputError("a.png", "empty file").option is None


def test_points_per_image_and_one_table(tmp_path):
    imgs = _images(tmp_path / "img")
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "a.csv").write_text("x,y,class\n10,10,eos\n40,25,neu\n")
    (lab / "b.csv").write_text("x,y,class\n")
    items, _ = load_labelled(imgs, lab, "points", class_name="eos")
    np.testing.assert_array_equal(items[0].points, [[10, 10]])
    assert items[1].n_objects == 0
    table = tmp_path / "all.csv"
    table.write_text("image,x,y\na.png,10,10\na.png,40,25\nb.png,5,5\n")
    items, _ = load_labelled(imgs, table, "points")
    assert [it.n_objects for it in items] == [2, 1]
    folder = tmp_path / "table-folder"  # the README's "labels folder holds one CSV with an image column"
    folder.mkdir()
    table.rename(folder / "points.csv")
    items, _ = load_labelled(imgs, folder, "points")
    assert [it.n_objects for it in items] == [2, 1]
    (lab / "a.csv").write_text("x,y\n100,10\n")
    with pytest.raises(InputError, match="outside the 60x40 image"):
        load_labelled(imgs, lab, "points")
    with pytest.raises(InputError, match=r"points\.csv: must be a folder for the voc format$") as exc:
        load_labelled(imgs, folder / "points.csv", "voc")  # one CSV for all images: points only
    assert exc.value.option == "labels"


def _two_squares():
    """A 60x40 binary mask (0/255) of two 10x10 squares."""
    binary = np.zeros((40, 60), np.uint8)
    binary[5:15, 5:15] = 255
    binary[20:30, 35:45] = 255
    return binary


def test_masks_binary_and_instance(tmp_path):
    imgs = _images(tmp_path / "img")
    lab = tmp_path / "lab"
    lab.mkdir()
    binary = _two_squares()
    Image.fromarray(binary).save(lab / "a_mask.png")
    inst = np.zeros((40, 60), np.uint16)
    inst[5:15, 5:10] = 7
    inst[5:15, 10:15] = 9  # touching the first: two objects
    Image.fromarray(inst).save(lab / "b.png")
    items, _ = load_labelled(imgs, lab, "mask")
    a, b = items
    np.testing.assert_allclose(a.points, [[9.5, 9.5], [39.5, 24.5]])
    assert b.n_objects == 2 and set(np.unique(b.instances)) == {0, 1, 2}
    Image.fromarray(binary[:20]).save(lab / "a_mask.png")
    with pytest.raises(InputError, match="mask is 60x20 but the image is 60x40"):
        load_labelled(imgs, lab, "mask")


def test_soft_edged_masks_are_binary_and_colour_pictures_are_refused(tmp_path):
    from scipy import ndimage as ndi

    imgs = _images(tmp_path / "img")
    lab = tmp_path / "lab"
    lab.mkdir()
    binary = _two_squares()
    soft = ndi.uniform_filter(binary.astype(float), 3).round().astype(np.uint8)  # blurred edges: many grey levels
    assert len(np.unique(soft)) > 5
    Image.fromarray(soft).save(lab / "a.png")
    Image.fromarray(binary).save(lab / "b.png")
    items, rep = load_labelled(imgs, lab, "mask")
    assert [it.n_objects for it in items] == [2, 2] and rep.soft_masks == 1
    np.testing.assert_allclose(items[0].points, items[1].points)
    assert any("soft (anti-aliased) edges" in str(w) for w in rep.warnings())
    # a colour photo given as a mask (the wrong --label-format or folder)
    Image.fromarray(np.dstack([binary, binary // 2, binary // 3])).save(lab / "a.png")
    with pytest.raises(InputError, match=r"a\.png: is a colour picture, not a mask"):
        load_labelled(imgs, lab, "mask")
    # a palette instance image (labelme's label.png): its indices are the labels, its colours only show them
    from scipy import ndimage as ndi

    instances = ndi.label(binary)[0].astype(np.uint8)
    palette = Image.fromarray(instances, mode="P")
    palette.putpalette([0, 0, 0, 200, 30, 150, 40, 220, 90] + [0] * (253 * 3))
    palette.save(lab / "a.png")
    items, _ = load_labelled(imgs, lab, "mask")
    assert [it.n_objects for it in items] == [2, 2]
    # VOC SegmentationObject: index 255 (its colour 224,224,192) outlines each object, "void", not a cell
    outlined = instances.copy()
    outlined[ndi.binary_dilation(binary > 0, iterations=2) & (binary == 0)] = 255
    palette = Image.fromarray(outlined, mode="P")
    palette.putpalette([0, 0, 0, 200, 30, 150, 40, 220, 90] + [0] * (252 * 3) + [224, 224, 192])
    palette.save(lab / "a.png")
    assert [it.n_objects for it in load_labelled(imgs, lab, "mask")[0]] == [2, 2]
    # a black-and-white mask stored with a palette whose index 0 is white: read by its grey values
    bw = Image.fromarray((binary == 0).astype(np.uint8), mode="P")
    bw.putpalette([255, 255, 255, 0, 0, 0] + [0] * (254 * 3))
    bw.save(lab / "a.png")
    assert [it.n_objects for it in load_labelled(imgs, lab, "mask")[0]] == [2, 2]


def test_monuseg_polygons_and_painted_dots(tmp_path):
    imgs = _images(tmp_path / "img", names=("a",))
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "a.xml").write_text(
        '<Annotations><Annotation><Regions><Region Id="1"><Vertices>'
        '<Vertex X="5" Y="5"/><Vertex X="15" Y="5"/><Vertex X="15" Y="15"/><Vertex X="5" Y="15"/>'
        "</Vertices></Region></Regions></Annotation></Annotations>"
    )
    (item,), _ = load_labelled(imgs, lab, "monuseg")
    np.testing.assert_allclose(item.points, [[10, 10]])
    assert item.instances[10, 10] == 1 and item.instances[30, 30] == 0

    painted_dir = tmp_path / "painted"
    painted_dir.mkdir()
    img = np.asarray(Image.open(imgs / "a.png").convert("RGB")).copy()
    img[9:12, 9:12] = (0, 255, 0)
    img[24:27, 39:42] = (0, 255, 0)
    Image.fromarray(img).save(painted_dir / "a.png")
    (item,), _ = load_labelled(imgs, painted_dir, "painted")
    np.testing.assert_allclose(item.points, [[10, 10], [40, 25]])


def test_subset_and_unknown_format(tmp_path):
    imgs = _images(tmp_path / "img", names=("a", "b", "c.v2"))
    lab = tmp_path / "lab"
    lab.mkdir()
    for n in ("a", "b", "c.v2"):
        (lab / f"{n}.csv").write_text("x,y\n1,1\n")
    items, rep = load_labelled(imgs, lab, "points", subset=["c.v2", "a.png"])
    assert sorted(it.name for it in items) == ["a", "c.v2"] and rep.unmatched_labels == []
    with pytest.raises(InputError, match="listed in the subset but no such image"):
        load_labelled(imgs, lab, "points", subset=["nope"])
    with pytest.raises(ConfigError, match="unknown label format 'yolo'"):
        load_labelled(imgs, lab, "yolo")


def test_targets_from_points_boxes_and_masks():
    cfg = ModelConfig(pixel_size_um=1.0, input_pixel_size_um=1.0, cell_diameter_um=8, tile_size=64, unet_depth=2)
    from eosdetect.training.labelset import LabelledImage

    img = np.zeros((20, 30, 3), np.uint8)
    pts = LabelledImage("p", None, None, img, np.array([[5.0, 10.0], [11.0, 10.0]]))
    lab = target_labels(pts, (20, 30), 1.0, 8.0)
    assert set(np.unique(lab)) == {0, 1, 2} and lab[10, 5] == 1 and lab[10, 11] == 2
    s = training_sample(pts, cfg, gap_weight=3.0)
    assert s.target[10, 5] == 1 and s.target[10, 8] == 0  # a gap between the touching discs
    assert s.weight.max() == 3.0
    boxes = LabelledImage("b", None, None, img, np.array([[5.0, 5.0]]), boxes=np.array([[0, 0, 10, 10.0]]),
                          ignore_boxes=np.array([[20, 0, 30, 10.0]]))
    s = training_sample(boxes, cfg)
    assert s.target[5, 5] == 1 and s.target[0, 0] == 0 and s.target[15, 15] == 0
    assert s.weight[5, 25] == 0 and s.weight[15, 25] == 1
    # half the resolution: targets follow
    cfg2 = ModelConfig(pixel_size_um=2.0, input_pixel_size_um=1.0, cell_diameter_um=8, tile_size=64, unet_depth=2)
    s = training_sample(boxes, cfg2)
    assert s.image.shape == (10, 15, 3) and s.target[2, 2] == 1
    np.testing.assert_allclose(s.points, [[2.25, 2.25]])


def test_split_is_fixed_and_stable():
    names = [f"img{i:03d}" for i in range(50)]
    train, val = split_names(names, 0.2, seed=0)
    assert len(val) == 10 and not set(train) & set(val)
    assert split_names(names, 0.2, seed=0) == (train, val)
    # adding images never moves an old one from validation to training
    _, val2 = split_names(names + [f"new{i}" for i in range(10)], 0.2, seed=0)
    assert len(set(val) - set(val2)) <= 2
    assert split_names(names, 0.2, seed=1)[1] != val
    with pytest.raises(ConfigError, match="at least 2"):
        split_names(["one"], 0.2)


def test_masks_beside_the_images_are_labels_not_images(tmp_path):
    """``a_mask.png`` in the images folder is the label of ``a.png``; a wrong --label-format says so."""
    imgs = _images(tmp_path / "img")
    for n in ("a", "b"):
        Image.fromarray(_two_squares()).save(imgs / f"{n}_mask.png")
    items, rep = load_labelled(imgs, imgs, "mask")
    assert [(it.name, it.label_path.name, it.n_objects) for it in items] == [("a", "a_mask.png", 2),
                                                                             ("b", "b_mask.png", 2)]
    assert rep.unmatched_labels == []
    with pytest.raises(InputError, match=r"img: holds no label files of the voc format \(\.xml named like the "
                                         r"images\); choose the labels' format$") as exc:
        load_labelled(imgs, imgs, "voc")
    assert exc.value.option == "label_format"
    Image.fromarray(_two_squares()).save(imgs / "b.tif")  # a mask named like its image, beside it
    with pytest.raises(InputError, match=r"b: several images share this name.*named b_mask\.png"):
        load_labelled(imgs, imgs, "mask")
