"""COCO JSON and Label Studio tasks out, and back in as labels: checked with pycocotools, on synthetic images."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import disc_image
from eosdetect.annotations.coco import coco_dataset, read_coco, rle_counts_from_string, write_coco
from eosdetect.annotations.labelstudio import (
    FROM_NAME,
    LOCAL_FILES_URL,
    TO_NAME,
    item_boxes,
    labeling_config,
    labelled_tasks,
    prediction_task,
    read_labelstudio,
    write_tasks,
)
from eosdetect.annotations.shapes import file_name_of, shapes_to_labels, without_upload_prefix
from eosdetect.annotations.voc import VocAnnotation, VocObject, write_voc
from eosdetect.apps.labels import CONFIG_SUFFIX
from eosdetect.errors import ConfigError, InputError
from eosdetect.training.labelset import FORMATS, load_labelled

SHAPE = (40, 60)  # rows, columns of every synthetic image


def _images(folder: Path, names=("a", "b")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(disc_image(shape=SHAPE, centres=((10, 10), (25, 40)), radius=5)).save(folder / f"{n}.png")
    return folder


def _voc(path: Path, objects):
    ann = VocAnnotation(filename=path.stem + ".png", width=SHAPE[1], height=SHAPE[0],
                        objects=[o if isinstance(o, VocObject) else VocObject(*o) for o in objects])
    write_voc(path, ann)


def _instances() -> np.ndarray:
    """Three cells without holes: a disc, a rectangle on the image's edge, an L; label k is cell k."""
    lab = np.zeros(SHAPE, np.uint8)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    lab[(yy - 12) ** 2 + (xx - 14) ** 2 <= 30] = 1
    lab[30:40, 0:7] = 2
    lab[5:20, 40:44] = 3
    lab[16:20, 44:52] = 3
    return lab


def _mask_labels(tmp_path: Path):
    imgs = _images(tmp_path / "img", names=("a",))
    lab = tmp_path / "masks"
    lab.mkdir()
    Image.fromarray(_instances()).save(lab / "a.png")
    return imgs, lab


def _error(exc_info, path) -> str:
    """The problem of an InputError, checked to be one line naming the file."""
    message = str(exc_info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message[len(f"{path}: "):]


def _convert(argv):
    """``eosdetect labels convert ARGV`` as the command line parses it (errors raised, not printed)."""
    from eosdetect.apps.cli import build_parser

    args = build_parser().parse_args(["labels", "convert", *argv])
    return args.func(args)


# --------------------------------------------------------------------------- COCO out, checked with pycocotools


def test_coco_of_masks_loads_in_pycocotools_and_its_polygons_give_the_instances(tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco")
    imgs, lab = _mask_labels(tmp_path)
    items, _ = load_labelled(imgs, lab, "mask")
    inst = items[0].instances.copy()
    ds = coco_dataset(items, class_name="eosinophil")
    np.testing.assert_array_equal(items[0].instances, inst)  # the input is left as it was
    path = write_coco(tmp_path / "out" / "coco.json", ds)
    coco = coco_api.COCO(str(path))
    assert coco.getCatIds(catNms=["eosinophil"]) == [1]
    assert coco.loadImgs([1]) == [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}]
    ids = coco.getAnnIds(imgIds=[1], catIds=[1], iscrowd=False)
    assert len(ids) == 3
    for k, ann in enumerate(coco.loadAnns(ids), start=1):
        truth = inst == k
        assert isinstance(ann["segmentation"], list) and all(len(p) >= 6 for p in ann["segmentation"])
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), truth)
        rows, cols = np.nonzero(truth)
        assert ann["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        assert ann["area"] == truth.sum() and ann["iscrowd"] == 0 and "keypoints" not in ann


def test_coco_of_voc_boxes_with_a_difficult_one_as_a_crowd_and_back(tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco")
    imgs = _images(tmp_path / "img")
    voc = tmp_path / "voc"
    voc.mkdir()
    _voc(voc / "a.xml", [("eos", 6, 6, 16, 16), ("eos", 35, 20, 45, 30), ("neu", 1, 1, 4, 4),
                         VocObject("eos", 30, 2, 38, 10, difficult=True)])
    _voc(voc / "b.xml", [])
    items, _ = load_labelled(imgs, voc, "voc", class_name="eos")
    path = write_coco(tmp_path / "coco.json", coco_dataset(items, class_name="eos", image_root=imgs))
    coco = coco_api.COCO(str(path))
    a = coco.getImgIds()[0]
    boxes = coco.loadAnns(coco.getAnnIds(imgIds=[a], iscrowd=False))
    assert [b["bbox"] for b in boxes] == [[5, 5, 11, 11], [34, 19, 11, 11]]
    assert all("segmentation" not in b for b in boxes)  # boxes have no outline
    (crowd,) = coco.loadAnns(coco.getAnnIds(imgIds=[a], iscrowd=True))
    expected = np.zeros(SHAPE, bool)
    expected[1:10, 29:38] = True  # the difficult box's pixels (VOC 30..38 x 2..10, 1-based inclusive)
    np.testing.assert_array_equal(coco.annToMask(crowd).astype(bool), expected)
    assert coco.getAnnIds(imgIds=[coco.getImgIds()[1]]) == []  # b: an image with no cells
    # and back: the same boxes, the same region to ignore
    again, rep = load_labelled(imgs, path, "coco")
    for old, new in zip(items, again):
        assert old.name == new.name
        np.testing.assert_array_equal(new.boxes, old.boxes)
        np.testing.assert_array_equal(new.ignore_boxes, old.ignore_boxes)
        np.testing.assert_array_equal(new.points, old.points)
    assert rep.class_name == "eos" and rep.classes_found == {"eos": 3}


def test_points_to_coco_are_boxes_of_the_cell_diameter_with_the_point_as_keypoint_and_back(tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco")
    imgs = _images(tmp_path / "img", names=("a",))
    table = tmp_path / "points.csv"
    table.write_text("image,x,y\na.png,10,10\na.png,40.25,25\na.png,1,38\n")
    items, _ = load_labelled(imgs, table, "points")
    with pytest.raises(ConfigError, match=r"^image 'a' labelled with points, which have no size: give the cell "
                                          r"diameter in pixels for their boxes$") as exc:
        coco_dataset(items)
    assert exc.value.option == "cell_diameter_px"
    path = write_coco(tmp_path / "coco.json", coco_dataset(items, cell_diameter_px=8))
    coco = coco_api.COCO(str(path))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert [a["bbox"] for a in anns] == [[6.5, 6.5, 8, 8], [36.75, 21.5, 8, 8], [0, 34.5, 5.5, 5.5]]  # clipped
    assert [a["keypoints"] for a in anns] == [[10, 10, 2], [40.25, 25, 2], [1, 38, 2]]
    assert coco.loadCats([1])[0]["keypoints"] == ["centre"]
    again, _ = load_labelled(imgs, path, "coco")
    np.testing.assert_array_equal(again[0].points, items[0].points)
    assert again[0].boxes is None and again[0].instances is None


def test_masks_to_coco_and_back_give_the_same_instances(tmp_path):
    imgs, lab = _mask_labels(tmp_path)
    items, _ = load_labelled(imgs, lab, "mask")
    path = write_coco(tmp_path / "coco.json", coco_dataset(items, class_name="cell"))
    again, rep = load_labelled(imgs, path, "coco")
    np.testing.assert_array_equal(again[0].instances, items[0].instances)
    np.testing.assert_allclose(again[0].points, items[0].points)
    assert rep.objects == 3


def test_scores_are_written_and_must_match_the_objects(tmp_path):
    imgs = _images(tmp_path / "img", names=("a",))
    voc = tmp_path / "voc"
    voc.mkdir()
    _voc(voc / "a.xml", [("eos", 6, 6, 16, 16), ("eos", 35, 20, 45, 30)])
    items, _ = load_labelled(imgs, voc, "voc")
    ds = coco_dataset(items, class_name="eos", scores={"a": [0.9, 0.25]})
    assert [a["score"] for a in ds["annotations"]] == [0.9, 0.25]
    assert [s.score for s in read_coco(write_coco(tmp_path / "c.json", ds))[0].shapes] == [0.9, 0.25]
    with pytest.raises(ValueError, match="scores of 'a' has 1 values for 2 objects"):
        coco_dataset(items, scores={"a": [0.9]})


def test_coco_from_other_tools_rle_masks_categories_and_upload_names(tmp_path):
    mask_api = pytest.importorskip("pycocotools.mask")
    imgs = _images(tmp_path / "img", names=("a", "b"))
    inst = _instances()
    compressed = mask_api.encode(np.asfortranarray((inst == 1).astype(np.uint8)))
    flat = (inst == 3).T.ravel()  # column-major, as COCO's uncompressed counts run
    change = np.flatnonzero(np.diff(np.r_[0, flat.astype(int), 2]))  # run boundaries (2: past the end)
    counts = np.diff(np.r_[0, change]).tolist()
    doc = {
        "images": [{"id": 10, "file_name": "images/8f3a2b1c-a.png", "width": 60, "height": 40},  # Label Studio's
                   {"id": 11, "file_name": "b.png", "width": 60, "height": 40},
                   {"id": 12, "file_name": "c.png", "width": 60, "height": 40}],  # no such image: reported
        "categories": [{"id": 0, "name": "eos"}, {"id": 1, "name": "neu"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 0, "iscrowd": 0,
             "segmentation": {"size": [40, 60], "counts": compressed["counts"].decode()}},
            {"id": 2, "image_id": 10, "category_id": 0, "iscrowd": 0, "segmentation": {"size": [40, 60],
                                                                                       "counts": counts}},
            {"id": 3, "image_id": 10, "category_id": 1, "bbox": [30, 0, 10, 10], "iscrowd": 0},
            {"id": 4, "image_id": 11, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"several classes \(eos, neu\)"):
        load_labelled(imgs, path, "coco")
    items, rep = load_labelled(imgs, path, "coco", class_name="eos")
    a, b = items
    expected = np.where(inst == 1, 1, np.where(inst == 3, 2, 0))
    np.testing.assert_array_equal(a.instances, expected)
    assert b.boxes is None and b.instances is None and len(b.points) == 0  # b has no eos
    assert [p.name for p in rep.unmatched_labels] == ["c.png"]
    assert any("1 label file(s) match no image: c.png" in str(w) for w in rep.warnings())
    neu, _ = load_labelled(imgs, path, "coco", class_name="neu")
    np.testing.assert_array_equal(neu[0].boxes, [[30, 0, 40, 10]])


def test_rle_counts_from_string_agrees_with_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(3)
    for _ in range(50):
        m = (rng.random((23, 31)) > rng.random()).astype(np.uint8)
        rle = mask_api.encode(np.asfortranarray(m))
        counts = rle_counts_from_string(rle["counts"].decode())
        assert sum(counts) == m.size
        flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
        np.testing.assert_array_equal(flat.reshape(31, 23).T, m.astype(bool))


# --------------------------------------------------------------------------- Label Studio


def test_prediction_task_is_label_studios_pre_annotation_format():
    t = prediction_task("/data/upload/1/a.png", 200, 100, [[10, 20, 30, 60], [190, 90, 230, 120], [5, 5, 5, 9]],
                        classes="eosinophil", scores=[0.9, 0.5, 0.1], model_version="m1")
    (pred,) = t["predictions"]
    assert t["data"] == {"image": "/data/upload/1/a.png"}
    assert pred["model_version"] == "m1" and pred["score"] == 0.7  # the mean of the boxes kept
    r1, r2 = pred["result"]  # the empty box is left out
    assert {k: r1[k] for k in ("from_name", "to_name", "type", "original_width", "original_height",
                               "image_rotation", "score")} == {
        "from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 200,
        "original_height": 100, "image_rotation": 0, "score": 0.9}
    assert r1["value"] == {"x": 5, "y": 20, "width": 10, "height": 40, "rotation": 0,
                           "rectanglelabels": ["eosinophil"]}
    assert r2["value"]["x"] == 95 and r2["value"]["width"] == 5 and r2["value"]["height"] == 10  # clipped
    assert r1["id"] != r2["id"]
    assert "score" not in prediction_task("a.png", 10, 10, [[0, 0, 5, 5]])["predictions"][0]
    with pytest.raises(ValueError, match="scores has 1 values for 2 boxes"):
        prediction_task("a.png", 10, 10, [[0, 0, 5, 5], [1, 1, 2, 2]], scores=[0.5])


def test_labeling_config_names_the_tags_the_results_refer_to():
    from lxml import etree

    root = etree.fromstring(labeling_config(["eosinophil", "neutro & phil"], points=True))
    image = root.find("Image")
    assert (image.get("name"), image.get("value")) == (TO_NAME, "$image")
    rect = root.find("RectangleLabels")
    assert (rect.get("name"), rect.get("toName")) == (FROM_NAME, TO_NAME) == ("label", "image")
    assert [lb.get("value") for lb in rect.findall("Label")] == ["eosinophil", "neutro & phil"]
    assert rect.find("Label").get("background") == "#00E640"
    assert root.find("KeyPointLabels").get("toName") == TO_NAME
    assert etree.fromstring(labeling_config(["eos"])).find("KeyPointLabels") is None


def _as_export(tasks, upload=True):
    """Tasks as Label Studio exports them once an annotator submitted the pre-labels unchanged: ids,
    uploaded file names with their prefix, the prediction's result as the annotation's."""
    out = []
    for i, t in enumerate(tasks, start=1):
        name = file_name_of(t["data"]["image"])
        out.append({
            "id": i, "data": {"image": f"/data/upload/3/{i:08x}-{name}" if upload else t["data"]["image"]},
            "annotations": [{"id": 100 + i, "completed_by": 1, "was_cancelled": False, "ground_truth": False,
                             "result": json.loads(json.dumps(t["predictions"][0]["result"])),
                             "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:00Z"}],
            "predictions": t["predictions"], "file_upload": f"{i:08x}-{name}",
        })
    return out


def test_pre_labels_to_label_studio_and_its_export_back_give_the_same_boxes(tmp_path):
    imgs = _images(tmp_path / "img")
    voc = tmp_path / "voc"
    voc.mkdir()
    _voc(voc / "a.xml", [("eos", 6, 6, 16, 16), ("eos", 35, 20, 45, 30), ("eos", 50, 33, 60, 40)])
    _voc(voc / "b.xml", [("eos", 20, 3, 29, 13)])
    items, _ = load_labelled(imgs, voc, "voc")
    tasks = labelled_tasks(items, class_name="eos", image_root=imgs)
    assert [t["data"]["image"] for t in tasks] == [LOCAL_FILES_URL + "a.png", LOCAL_FILES_URL + "b.png"]
    ids = [r["id"] for t in tasks for r in t["predictions"][0]["result"]]
    assert len(set(ids)) == len(ids) == 4
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_as_export(tasks)))
    again, rep = load_labelled(imgs, export, "labelstudio")
    assert [it.name for it in again] == ["a", "b"] and rep.unmatched_labels == []
    for old, new in zip(items, again):
        np.testing.assert_allclose(new.boxes, old.boxes, atol=1e-6)
        np.testing.assert_allclose(new.points, old.points, atol=1e-6)
    # the same through write_tasks' file, served from the local storage (no upload prefix)
    written = write_tasks(tmp_path / "tasks.json", tasks)
    assert json.loads(written.read_text()) == tasks
    export.write_text(json.dumps(_as_export(tasks, upload=False)))
    again, _ = load_labelled(imgs, export, "labelstudio")
    np.testing.assert_allclose(again[0].boxes, items[0].boxes, atol=1e-6)


def test_points_and_masks_as_label_studio_boxes(tmp_path):
    imgs, lab = _mask_labels(tmp_path)
    items, _ = load_labelled(imgs, lab, "mask")
    np.testing.assert_array_equal(item_boxes(items[0]), [[9, 7, 20, 18], [0, 30, 7, 40], [40, 5, 52, 20]])
    table = tmp_path / "points.csv"
    table.write_text("image,x,y\na.png,10,10\n")
    points, _ = load_labelled(imgs, table, "points")
    with pytest.raises(ConfigError, match=r"^image 'a' labelled with points") as exc:
        labelled_tasks(points)
    assert exc.value.option == "cell_diameter_px"
    (task,) = labelled_tasks(points, cell_diameter_px=6)
    v = task["predictions"][0]["result"][0]["value"]
    assert (v["x"] * 60 / 100, v["y"] * 40 / 100, v["width"] * 60 / 100, v["height"] * 40 / 100) == (
        pytest.approx(7.5), pytest.approx(7.5), pytest.approx(6), pytest.approx(6))


def _result(kind, value, w=60, h=40, **extra):
    return {"id": "x", "from_name": "label", "to_name": "image", "type": kind, "original_width": w,
            "original_height": h, "image_rotation": 0, "value": value, **extra}


def test_label_studio_keypoints_polygons_rotated_boxes_and_which_annotation(tmp_path):
    imgs = _images(tmp_path / "img", names=("a", "b", "c", "d"))
    tasks = [
        {"id": 1, "data": {"image": "/data/upload/1/0a1b2c3d-a.png"}, "annotations": [
            {"id": 1, "result": [_result("keypointlabels", {"x": 25, "y": 50, "width": 0.5,
                                                            "keypointlabels": ["eos"]}),
                                 _result("keypointlabels", {"x": 50, "y": 25, "keypointlabels": ["neu"]}),
                                 {"type": "choices", "value": {"choices": ["good"]}}]}]},
        {"id": 2, "data": {"img": "/data/local-files/?d=smears/b.png"}, "annotations": [  # another data key
            {"id": 2, "ground_truth": True, "updated_at": "2024-01-01T00:00:00Z",
             "result": [_result("polygonlabels", {"points": [[10, 10], [30, 10], [30, 50], [10, 50]],
                                                  "polygonlabels": ["eos"]}),
                        _result("rectanglelabels", {"x": 50, "y": 50, "width": 10, "height": 25, "rotation": 90,
                                                    "rectanglelabels": ["eos"]})]},
            {"id": 3, "updated_at": "2024-06-01T00:00:00Z", "result": []}]},  # later, but not ground truth
        {"id": 3, "data": {"image": "c.png"}, "annotations": [{"id": 4, "was_cancelled": True, "result": [
            _result("rectanglelabels", {"x": 0, "y": 0, "width": 10, "height": 10, "rectanglelabels": ["eos"]})]}]},
        {"id": 4, "data": {"image": "d.png"}, "annotations": [
            {"id": 5, "updated_at": "2024-01-01T00:00:00Z", "result": []},
            {"id": 6, "updated_at": "2024-02-01T00:00:00Z", "result": [
                _result("rectanglelabels", {"x": 30, "y": 30, "width": 20, "height": 25, "rotation": 30,
                                            "rectanglelabels": ["eos"]})]}]},
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    read = read_labelstudio(export)
    assert [t.file_name for t in read] == ["0a1b2c3d-a.png", "b.png", "c.png", "d.png"]
    assert [t.annotated for t in read] == [True, True, False, True]
    with pytest.raises(InputError, match=r"c\.png: no labels for this image in export\.json") as exc:
        load_labelled(imgs, export, "labelstudio", class_name="eos")
    assert exc.value.option == "allow_unlabelled_as_empty"
    items, rep = load_labelled(imgs, export, "labelstudio", class_name="eos", allow_unlabelled_as_empty=True)
    a, b, c, d = items
    np.testing.assert_allclose(a.points, [[60 * 0.25 - 0.5, 40 * 0.5 - 0.5]])  # the eos point only
    # b: the ground truth's polygon and box rotated by 90 degrees about its top-left corner, as masks
    expected = np.zeros(SHAPE, np.int32)
    expected[4:20, 6:18] = 1
    expected[20:26, 20:30] = 2  # the 6 x 10 px box turned clockwise: 10 px to the left, 6 down
    np.testing.assert_array_equal(b.instances, expected)
    assert c.n_objects == 0 and rep.unlabelled_as_empty == [imgs / "c.png"]
    # d: the annotation updated last; a 12 x 10 px rectangle turned by 30 degrees about its top-left corner
    # (18, 12), clockwise, is an outline
    assert d.instances is not None and d.instances.max() == 1
    a30 = np.pi / 6
    centre = np.array([18, 12]) + [6 * np.cos(a30) - 5 * np.sin(a30), 6 * np.sin(a30) + 5 * np.cos(a30)]
    np.testing.assert_allclose(d.points[0], centre - 0.5, atol=0.2)
    assert abs(int((d.instances == 1).sum()) - 120) <= 6


def test_label_studio_sizes_must_match_the_image_and_entries_be_unique(tmp_path):
    imgs = _images(tmp_path / "img", names=("a",))
    box = {"x": 0, "y": 0, "width": 10, "height": 10, "rectanglelabels": ["eos"]}
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{"data": {"image": "a.png"},
                                   "annotations": [{"result": [_result("rectanglelabels", box, w=120, h=80)]}]}]))
    with pytest.raises(InputError) as exc:
        load_labelled(imgs, export, "labelstudio")
    assert _error(exc, export) == "task of a.png: Label Studio says 120x80 but the image is 60x40"
    export.write_text(json.dumps([{"data": {"image": "a.png"}, "annotations": []},
                                  {"data": {"image": "/data/upload/2/12345678-a.png"}, "annotations": []}]))
    with pytest.raises(InputError) as exc:
        load_labelled(imgs, export, "labelstudio")
    assert _error(exc, export).startswith("two entries for image 'a' (a.png and 12345678-a.png)")


# --------------------------------------------------------------------------- bad files: one line each


COCO_OK = {"images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}],
           "categories": [{"id": 1, "name": "eos"}]}


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"\xff\xfe{", "not a text file in UTF-8"),
    (b'{"images": [', "not valid JSON"),
    (b'[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]',
     "not a COCO dataset (a COCO results list of detections, which names no image files)"),
    (b'{"images": []}', "not a COCO dataset: 'annotations' is missing, not a list"),
    (json.dumps({**COCO_OK, "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}]}),
     "annotation 1: image_id 2 is no image's id"),
    (json.dumps({**COCO_OK, "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1]}]}),
     "annotation 1: category_id 5 is no category's id"),
    (json.dumps({**COCO_OK, "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1]}]}),
     "annotation 1: bbox [0, 0, -1, 1] is not [x, y, width, height] with width, height >= 0"),
    (json.dumps({**COCO_OK, "annotations": [{"image_id": 1, "category_id": 1}]}),
     "annotation 1: has no bbox, segmentation or keypoint"),
    (json.dumps({**COCO_OK, "annotations": [{"image_id": 1, "category_id": 1, "segmentation": [[0, 0, 1, 1, 2]]}]}),
     "annotation 1: a segmentation polygon has an odd number of coordinates (5)"),
    (json.dumps({**COCO_OK, "annotations": [{"image_id": 1, "category_id": 1,
                                             "segmentation": {"size": [20, 60], "counts": [5, 3]}}]}),
     "annotation 1: run-length mask is 60x20 but its image is 60x40"),
    (json.dumps({**COCO_OK, "images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}],
                 "annotations": []}), "image 2: id 1 is also that of 'a.png'"),
    (json.dumps({**COCO_OK, "images": [{"id": 1, "file_name": "a.png", "width": "wide"}], "annotations": []}),
     "image 1 (a.png): width 'wide' is not a positive whole number"),
    (json.dumps({**COCO_OK, "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 2}]}),
     "annotation 1: iscrowd is 2, not 0 or 1"),
])
def test_bad_coco_files_give_one_line_errors(tmp_path, content, problem):
    path = tmp_path / "coco.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(InputError) as exc:
        read_coco(path)
    assert _error(exc, path).startswith(problem)


def test_a_bad_coco_value_is_an_error_not_a_nan(tmp_path):
    path = tmp_path / "coco.json"
    path.write_text('{"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "e"}], '
                    '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [NaN, 0, 1, 1]}]}')
    with pytest.raises(InputError) as exc:
        read_coco(path)
    assert _error(exc, path) == "annotation 1: bbox holds NaN or infinite values"


def _task(result):
    return [{"id": 7, "data": {"image": "a.png"}, "annotations": [{"result": [result]}]}]


@pytest.mark.parametrize("doc, problem, option", [
    (COCO_OK | {"annotations": []}, "a COCO dataset, not a Label Studio JSON export", "label_format"),
    ([{"image": "a.png", "label": [{"x": 1, "y": 1}]}], "task 1: Label Studio's JSON-MIN export; export as JSON",
     None),
    ([{"annotations": []}], "task 1: no 'data' object naming its image", None),
    ([{"data": {"a": 1, "b": 2}}], "task 1: 'data' names no image (keys: a, b)", None),
    (_task(_result("rectanglelabels", {"x": 1, "y": 1, "width": 5})),
     "task 1 (id 7), result 1: rectanglelabels has no finite number 'height'", None),
    (_task(_result("rectanglelabels", {"x": 1, "y": 1, "width": 5, "height": 4, "rectanglelabels": "eos"})),
     "task 1 (id 7), result 1: 'rectanglelabels' is not a list of label names", None),
    (_task(_result("polygonlabels", {"points": [[1, 1], [2, 2]]})),
     "task 1 (id 7), result 1: polygonlabels has no list of 3 or more finite [x, y] points", None),
    (_task(_result("brushlabels", {"format": "rle", "rle": [1, 2]})),
     "task 1 (id 7), result 1: brush masks are not read", "label_format"),
    (_task(_result("keypointlabels", {"x": 1, "y": 1}, image_rotation=90)),
     "task 1 (id 7), result 1: the image was rotated in Label Studio (image_rotation 90)", None),
    (_task(_result("keypointlabels", {"x": 1, "y": 1}, w=0)),
     "task 1 (id 7), result 1: original_width and original_height 0, 40 are not positive whole numbers", None),
    ("a string", "not Label Studio's JSON export", None),
])
def test_bad_label_studio_exports_give_one_line_errors(tmp_path, doc, problem, option):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as exc:
        read_labelstudio(path)
    assert _error(exc, path).startswith(problem)
    assert exc.value.option == option


def test_label_studio_regions_of_one_task_must_agree_on_the_size(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"data": {"image": "a.png"}, "annotations": [{"result": [
        _result("keypointlabels", {"x": 1, "y": 1}), _result("keypointlabels", {"x": 1, "y": 1}, w=61)]}]}]))
    with pytest.raises(InputError) as exc:
        read_labelstudio(path)
    assert _error(exc, path) == "task 1: its regions give different image sizes (60x40, 61x40)"


# --------------------------------------------------------------------------- labelset


def test_both_formats_are_label_formats_read_from_one_file_or_a_folder_holding_it(tmp_path):
    assert {"coco", "labelstudio"} <= set(FORMATS)
    imgs = _images(tmp_path / "img", names=("a",))
    folder = tmp_path / "labels"
    folder.mkdir()
    doc = {**COCO_OK, "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10]}]}
    (folder / "instances.json").write_text(json.dumps(doc))
    items, _ = load_labelled(imgs, folder, "coco")
    np.testing.assert_array_equal(items[0].boxes, [[5, 5, 15, 15]])
    (folder / "other.json").write_text("{}")
    with pytest.raises(InputError) as exc:
        load_labelled(imgs, folder, "coco")
    assert _error(exc, folder) == "holds 2 JSON files (instances.json, other.json); name the COCO file to read"
    assert exc.value.option == "labels"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no JSON file"):
        load_labelled(imgs, empty, "labelstudio")


def test_a_label_file_naming_none_of_the_images_or_of_another_size(tmp_path):
    imgs = _images(tmp_path / "img", names=("a",))
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({**COCO_OK, "images": [{"id": 1, "file_name": "x.png"}, {"id": 2, "file_name": "y.png"}],
                                "annotations": []}))
    with pytest.raises(InputError) as exc:
        load_labelled(imgs, path, "coco", allow_unlabelled_as_empty=True)
    assert _error(exc, path) == "names none of the images (2 image(s) in it: x.png, y.png)"
    path.write_text(json.dumps({**COCO_OK, "images": [{"id": 1, "file_name": "a.png", "width": 61, "height": 40}],
                                "annotations": []}))
    with pytest.raises(InputError) as exc:
        load_labelled(imgs, path, "coco")
    assert _error(exc, path) == "a.png: the file says 61x40 but the image is 60x40"


def test_coco_points_outside_the_image_and_mixed_points_and_boxes(tmp_path):
    imgs = _images(tmp_path / "img", names=("a",))
    path = tmp_path / "coco.json"
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": [10, 10, 2], "num_keypoints": 1},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 20, 4, 4]}]
    path.write_text(json.dumps({**COCO_OK, "annotations": anns}))
    items, rep = load_labelled(imgs, path, "coco")
    np.testing.assert_array_equal(items[0].points, [[10, 10], [21.5, 21.5]])
    assert rep.mixed_shapes == 1 and any("both points and boxes or outlines" in str(w) for w in rep.warnings())
    anns[0]["keypoints"] = [70, 10, 2]
    path.write_text(json.dumps({**COCO_OK, "annotations": anns}))
    with pytest.raises(InputError) as exc:
        load_labelled(imgs, path, "coco")
    assert _error(exc, path) == "a.png: 1 point(s) lie outside the 60x40 image"


def test_shapes_helpers():
    assert file_name_of("https://host/data/a%20b.jpg?token=1") == "a b.jpg"
    assert file_name_of("/data/local-files/?d=smears%2Fx.png") == "x.png"
    assert file_name_of("folder\\sub\\y.tif") == "y.tif"
    assert without_upload_prefix("deadbeef-x.png") == "x.png" and without_upload_prefix("x-y.png") is None
    from eosdetect.annotations.shapes import box_shape, polygon_shape, rle_shape

    lab = shapes_to_labels([rle_shape([2, 3, 7], 3, 4), box_shape([3.5, 0, 4, 3]), polygon_shape([[[0, 0], [1, 0],
                                                                                                   [1, 1]]])], (3, 4))
    assert lab.tolist() == [[3, 1, 0, 2], [0, 1, 0, 2], [1, 0, 0, 2]]  # a centre on the outline is in
    with pytest.raises(ValueError, match="a run-length mask of 5x3 pixels for a 4x3 image"):
        shapes_to_labels([rle_shape([15], 3, 5)], (3, 4))


# --------------------------------------------------------------------------- eosdetect labels convert


def test_convert_voc_to_coco_and_to_label_studio(tmp_path, capsys):
    coco_api = pytest.importorskip("pycocotools.coco")
    imgs = _images(tmp_path / "img")
    voc = tmp_path / "voc"
    voc.mkdir()
    _voc(voc / "a.xml", [("eos", 6, 6, 16, 16), ("eos", 35, 20, 45, 30), VocObject("eos", 1, 1, 4, 4, difficult=True)])
    _voc(voc / "b.xml", [("eos", 20, 3, 29, 13)])
    out = tmp_path / "out" / "eos.json"
    assert _convert(["--images", str(imgs), "--labels", str(voc), "--to", "coco", "-o", str(out)]) == 0
    line = capsys.readouterr().out
    assert line == f"COCO written to {out}: 2 image(s), 3 eos (3 boxes), 1 region(s) to ignore as crowds\n"
    coco = coco_api.COCO(str(out))
    assert len(coco.getAnnIds(iscrowd=False)) == 3 and len(coco.getAnnIds(iscrowd=True)) == 1
    assert [coco.loadCats([1])[0]["name"]] == ["eos"]
    capsys.readouterr()  # what pycocotools printed

    ls = tmp_path / "out" / "tasks.json"
    assert _convert(["--images", str(imgs), "--labels", str(out), "--label-format", "coco", "--to", "labelstudio",
                     "-o", str(ls), "--image-url", "https://lab.example/smears/"]) == 0
    captured = capsys.readouterr()
    assert "1 region(s) marked difficult left out" in captured.err
    config = ls.with_name("tasks" + CONFIG_SUFFIX)
    assert captured.out.startswith(f"Label Studio tasks written to {ls}: 2 image(s), 3 pre-labelled box(es) of eos; "
                                   f"paste {config}")
    tasks = json.loads(ls.read_text())
    assert [t["data"]["image"] for t in tasks] == ["https://lab.example/smears/a.png", "https://lab.example/smears/b.png"]
    assert config.read_text() == labeling_config(["eos"]) + "\n"
    # what Label Studio exports after the annotator submits them reads back as the same boxes
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_as_export(tasks)))
    back = tmp_path / "back.json"
    assert _convert(["--images", str(imgs), "--labels", str(export), "--label-format", "labelstudio", "--to", "coco",
                     "-o", str(back)]) == 0
    first = [a["bbox"] for a in json.loads(out.read_text())["annotations"] if not a["iscrowd"]]
    assert [a["bbox"] for a in json.loads(back.read_text())["annotations"]] == first


def test_convert_refuses_points_without_a_size_and_writing_over_its_input(tmp_path):
    imgs = _images(tmp_path / "img", names=("a",))
    table = tmp_path / "points.csv"
    table.write_text("image,x,y\na.png,10,10\n")
    argv = ["--images", str(imgs), "--labels", str(table), "--label-format", "points", "--to", "coco"]
    with pytest.raises(ConfigError) as exc:
        _convert([*argv, "-o", str(tmp_path / "c.json")])
    assert exc.value.option == "cell_diameter_px" and not (tmp_path / "c.json").exists()
    assert _convert([*argv, "-o", str(tmp_path / "c.json"), "--cell-diameter", "8"]) == 0
    coco = json.loads((tmp_path / "c.json").read_text())
    assert coco["annotations"][0]["bbox"] == [6.5, 6.5, 8, 8]
    with pytest.raises(InputError, match="is the label file being converted"):
        _convert(["--images", str(imgs), "--labels", str(tmp_path / "c.json"), "--label-format", "coco", "--to",
                  "coco", "-o", str(tmp_path / "c.json")])
    with pytest.raises(SystemExit):
        _convert([*argv, "-o", "x.json", "--cell-diameter", "-1"])
