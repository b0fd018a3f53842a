"""QuPath GeoJSON out and in, against QuPath's own exports; napari points CSV."""

import json
import os
import re
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import disc_image
from eosdetect.annotations.geojson import (
    HPF_NAME,
    TISSUE_NAME,
    QuPathObject,
    cell_outlines,
    detections_to_geojson,
    geojson_text,
    mask_polygons,
    objects_to_labels,
    read_geojson,
    result_to_geojson,
    write_geojson,
)
from eosdetect.annotations.napari import read_napari_points, write_napari_points
from eosdetect.core.postprocess import Detections, detections_from_labels
from eosdetect.errors import ConfigError, InputError
from eosdetect.training.labelset import FORMATS, eval_item, load_labelled

QUPATH = Path(os.environ.get("EOSDETECT_SHARED_FIXTURES",
                             Path(__file__).resolve().parents[2] / "shared" / "fixtures")) / "qupath"
#: Every property key QuPath's PathObjectTypeAdapter writes (qupath-core, qupath.lib.io).
QUPATH_PROPERTY_KEYS = {"objectType", "name", "color", "classification", "isLocked", "isMissing", "measurements",
                        "metadata"}


@pytest.fixture(scope="module")
def qupath_files():
    """QuPath 0.6 exports (../shared/fixtures/qupath, see its SOURCE.txt); skipped when absent."""
    files = {name: QUPATH / name for name in ("Single_cells.geojson", "TD_01_verysmall_mIF.geojson")}
    if not all(p.is_file() for p in files.values()):
        pytest.skip(f"QuPath GeoJSON fixtures not found in {QUPATH} (set EOSDETECT_SHARED_FIXTURES)")
    return files


def _error(exc_info, path):
    """The message of an InputError, checked to be one line naming the file."""
    message = str(exc_info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message[len(f"{path}: "):]


def _two_cells():
    """An instance image at half the input's scale (20 x 30 model pixels for a 40 x 60 image) with a
    5 x 4 rectangle and a disc, and their detections in input pixels, as Model.detect gives them."""
    labels = np.zeros((20, 30), np.int32)
    labels[3:8, 4:8] = 1
    yy, xx = np.mgrid[:20, :30]
    labels[(yy - 12) ** 2 + (xx - 20) ** 2 <= 9] = 2
    det = detections_from_labels(labels).rescaled((2.0, 2.0))
    return labels, det.with_score([0.9, 0.4])


# --------------------------------------------------------------------------- outlines


def test_mask_polygons_trace_pixel_edges_with_holes_scaled_and_shifted():
    m = np.zeros((5, 6), bool)
    m[1:4, 1:4] = True
    m[2, 2] = False  # a one-pixel hole
    m[1, 5] = True  # a second region, one pixel
    polys = mask_polygons(m)
    assert [len(p) for p in polys] == [2, 1]  # largest first, with its hole
    outer, hole = polys[0]
    assert np.array_equal(outer[0], outer[-1]) and np.array_equal(hole[0], hole[-1])
    assert outer.min(axis=0).tolist() == [1, 1] and outer.max(axis=0).tolist() == [4, 4]  # pixel edges
    area = lambda r: abs(0.5 * np.sum(r[:-1, 0] * r[1:, 1] - r[1:, 0] * r[:-1, 1]))  # noqa: E731
    assert area(outer) == 9 - 4 * 0.125 and area(hole) == 0.5 and area(polys[1][0]) == 0.5
    # a mask at a quarter of the image's scale, cut out at column 10, row 3 of the mask
    scaled = mask_polygons(m, factors=(4, 4), offset=(10, 3))
    np.testing.assert_allclose(scaled[0][0], (outer + [10, 3]) * 4)
    assert mask_polygons(np.zeros((3, 3), bool)) == []


def test_outlines_rasterise_back_to_the_pixels_they_were_traced_from():
    rng = np.random.default_rng(3)
    from scipy import ndimage as ndi

    blobs = ndi.gaussian_filter(rng.random((40, 50)), 2) > 0.52
    blobs[20:26, 20:26] = True
    blobs[22:24, 22:24] = False  # a hole
    before = blobs.copy()
    labels, n = ndi.label(blobs)  # 4-connected, so that each region is one polygon
    objects = []
    for k in range(1, n + 1):
        (rings,) = mask_polygons(labels == k)
        objects.append(QuPathObject("detection", "x", np.zeros(2), rings=rings))
    back = objects_to_labels(objects, blobs.shape)
    assert n >= 5 and np.array_equal(back, labels)
    assert np.array_equal(blobs, before)


def test_cell_outlines_from_model_scale_labels_and_the_box_fallback():
    labels, det = _two_cells()
    before = labels.copy()
    rect, disc = cell_outlines(det, labels, (40, 60))
    assert labels.tolist() == before.tolist()
    # the rectangle: model pixels 4..7 x 3..7 are input pixels 8..16 x 6..16, corners cut by half a model pixel
    assert rect[0].min(axis=0).tolist() == [8, 6] and rect[0].max(axis=0).tolist() == [16, 16]
    assert disc[0].min(axis=0).tolist() == [34, 18] and disc[0].max(axis=0).tolist() == [48, 32]
    # no labels: a box of the detection's size centred on its centroid (QuPath coordinates, +0.5)
    (box,), _ = cell_outlines(det)
    cx, cy = det.x[0] + 0.5, det.y[0] + 0.5
    np.testing.assert_allclose(box, [[cx - 4, cy - 5], [cx + 4, cy - 5], [cx + 4, cy + 5], [cx - 4, cy + 5],
                                     [cx - 4, cy - 5]])
    with pytest.raises(ValueError, match="image_shape"):
        cell_outlines(det, labels)


# --------------------------------------------------------------------------- writing


def test_cells_are_classified_detections_with_measurements_and_reproducible_ids():
    labels, det = _two_cells()
    fc = detections_to_geojson(det, labels=labels, image_shape=(40, 60), class_name="eosinophil",
                               pixel_size_um=0.5, id_seed="a.png")
    assert list(fc) == ["type", "features"] and fc["type"] == "FeatureCollection"
    f = fc["features"][0]
    assert list(f) == ["type", "id", "geometry", "properties"]
    assert uuid.UUID(f["id"]).version == 5
    assert f["geometry"]["type"] == "Polygon"
    ring = f["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and all(isinstance(v, int) for xy in ring for v in xy)  # whole numbers stay whole
    assert f["properties"] == {
        "objectType": "detection",
        "classification": {"name": "eosinophil", "color": [0, 230, 64]},
        "measurements": {"Score": 0.9, "Area px^2": 80.0, "Area µm^2": 20.0},
    }
    again = detections_to_geojson(det, labels=labels, image_shape=(40, 60), class_name="eosinophil",
                                  pixel_size_um=0.5, id_seed="a.png")
    assert geojson_text(again) == geojson_text(fc)
    other = detections_to_geojson(det, class_name="eosinophil", id_seed="b.png")
    assert {g["id"] for g in other["features"]}.isdisjoint(g["id"] for g in fc["features"])
    random_ids = [g["id"] for g in detections_to_geojson(det)["features"]]
    assert [uuid.UUID(i).version for i in random_ids] == [4, 4] and len(set(random_ids)) == 2


def test_a_multiclass_result_writes_every_candidate_with_its_class_and_probabilities():
    labels, cands = _two_cells()
    res = SimpleNamespace(
        detections=cands.subset([0]), candidates=cands, labels=labels, image_shape=(40, 60),
        class_names=("eosinophil", "neutrophil", "other"), candidate_class=np.array([0, 1]),
        class_probs=np.array([[0.9, 0.05, 0.05], [0.4, 0.5, 0.1]], np.float32),
    )
    fc = result_to_geojson(res, class_name="eosinophil", id_seed="a")
    props = [f["properties"] for f in fc["features"]]
    assert [p["classification"] for p in props] == [{"name": "eosinophil", "color": [0, 230, 64]},
                                                    {"name": "neutrophil", "color": [0, 114, 178]}]
    assert props[1]["measurements"] == {"Score": 0.4, "Area px^2": 116.0, "Probability: eosinophil": 0.4,
                                        "Probability: neutrophil": 0.5, "Probability: other": 0.1}
    one_stage = SimpleNamespace(detections=cands.subset([0]), candidates=cands, labels=labels, image_shape=(40, 60),
                                class_names=(), candidate_class=None, class_probs=None)
    assert len(result_to_geojson(one_stage, class_name="eosinophil")["features"]) == 1
    recoloured = result_to_geojson(res, class_name="eosinophil", colours={"neutrophil": (1, 2, 3)})
    assert recoloured["features"][1]["properties"]["classification"]["color"] == [1, 2, 3]


def test_the_densest_field_and_the_tissue_are_named_annotations():
    det = Detections.from_points([[100, 50]], radius=4)
    tissue = np.zeros((10, 20), bool)
    tissue[1:4, 1:5] = True
    tissue[6:9, 10:18] = True
    fc = detections_to_geojson(det, hpf_box=(40, 10, 240.5, 210), hpf_count=7,
                               tissue=mask_polygons(tissue, (16, 16)), id_seed="s")
    cell, hpf, region = fc["features"]
    assert hpf["properties"] == {"objectType": "annotation", "name": HPF_NAME, "measurements": {"Count": 7.0}}
    assert hpf["geometry"] == {"type": "Polygon", "coordinates": [[[40, 10], [240.5, 10], [240.5, 210], [40, 210],
                                                                    [40, 10]]]}
    assert region["properties"] == {"objectType": "annotation", "name": TISSUE_NAME}
    assert region["geometry"]["type"] == "MultiPolygon" and len(region["geometry"]["coordinates"]) == 2
    larger = np.array(region["geometry"]["coordinates"][0][0])  # the larger part first, in level-0 pixels
    assert larger.min(axis=0).tolist() == [160, 96] and larger.max(axis=0).tolist() == [288, 144]


def test_an_analysed_image_and_slide_as_qupath_files(tmp_path):
    """What ``count`` writes as ``<stem>.geojson``: an image's cells outlined from the model's labels, a
    slide's cells (level 0) with its tissue."""
    from eosdetect.analysis.image import analyse
    from eosdetect.analysis.slide import analyse_slide
    from eosdetect.annotations.geojson import analysis_to_geojson
    from eosdetect.models.config import ModelConfig, Thresholds
    from eosdetect.models.model import Model

    model = Model.from_functions(
        ModelConfig(unet_depth=2, tile_size=64, pixel_size_um=2.0, input_pixel_size_um=1.0, class_name="eosinophil"),
        Thresholds(min_distance_um=3, smooth_um=0.5, seed_h_um=0.5, min_area_um2=5),
        lambda batch: (batch.mean(axis=-1) < 0.6).astype(np.float32))
    image = disc_image(shape=(64, 80), centres=((20, 20), (40, 52)), radius=6)
    a = analyse(model, image, pixel_size_um=1.0)
    fc = analysis_to_geojson(a, id_seed="a.png")
    assert a.result.labels.shape == (32, 40)  # the model works at half the image's scale
    assert [f["properties"]["classification"]["name"] for f in fc["features"]] == ["eosinophil"] * 2
    d = a.detections
    for f, x0, y0, x1, y1 in zip(fc["features"], d.xmin, d.ymin, d.xmax, d.ymax):
        ring = np.array(f["geometry"]["coordinates"][0])
        assert len(ring) > 5  # an outline, not a box
        assert ring.min(axis=0).tolist() == [x0, y0] and ring.max(axis=0).tolist() == [x1, y1]  # the cell's box
        assert f["properties"]["measurements"]["Area µm^2"] == f["properties"]["measurements"]["Area px^2"]
    back = [o for o in read_geojson(write_geojson(tmp_path / "a.geojson", fc)) if o.class_name == "eosinophil"]
    np.testing.assert_allclose([o.xy for o in back], d.xy, atol=0.1)
    slide = np.full((200, 300, 3), 240, np.uint8)
    yy, xx = np.mgrid[:200, :300]
    for r, c in ((30, 40), (100, 150), (170, 260)):
        slide[(yy - r) ** 2 + (xx - c) ** 2 <= 36] = (120, 40, 160)
    s = analyse_slide(model, slide, pixel_size_um=1.0, block_px=64)
    features = analysis_to_geojson(s, id_seed="s.svs")["features"]
    cells, tissue = features[:-1], features[-1]
    assert len(cells) == s.count == 3 and tissue["properties"]["name"] == TISSUE_NAME
    centres = [np.array(f["geometry"]["coordinates"][0][:-1]).mean(axis=0) - 0.5 for f in cells]
    np.testing.assert_allclose(centres, s.detections.xy, atol=0.01)  # boxes centred on the cells (level 0)
    assert tissue["geometry"]["type"] == "MultiPolygon" and len(tissue["geometry"]["coordinates"]) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": ["a"]}, "classes has 1 entries for 2 cells"),
    ({"classes": "ab"}, "not a single string"),
    ({"class_probs": np.ones((2, 2)), "prob_names": ["a"]}, r"class_probs must have shape \(2, 1\)"),
    ({"colours": {"cell": (0, 300, 0)}}, "three integers 0..255"),
    ({"colours": {"cell": "red"}}, "three integers 0..255"),
    ({"pixel_size_um": 0}, "positive"),
    ({"hpf_box": (0, 0, 1)}, r"\(xmin, ymin, xmax, ymax\)"),
])
def test_writer_checks_its_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        detections_to_geojson(Detections.from_points([[1, 1], [5, 5]]), **kwargs)


# --------------------------------------------------------------------------- QuPath's own files


def test_our_files_have_the_shape_of_qupaths(qupath_files, tmp_path):
    qupath = json.loads(qupath_files["Single_cells.geojson"].read_text(encoding="utf-8"))
    q_cell = next(f for f in qupath["features"] if f["properties"]["objectType"] == "cell")
    q_area = next(f for f in qupath["features"] if f["properties"]["objectType"] == "annotation"
                  and f["geometry"]["type"] == "Polygon")
    labels, det = _two_cells()
    ours = detections_to_geojson(det, labels=labels, image_shape=(40, 60), class_name="eosinophil",
                                 pixel_size_um=0.5, hpf_box=(0, 0, 30, 30), hpf_count=1, id_seed="a")
    assert list(ours) == list(qupath) == ["type", "features"] and ours["type"] == qupath["type"]
    o_cell, o_area = ours["features"][0], ours["features"][-1]
    for o, q in ((o_cell, q_cell), (o_area, q_area)):
        assert list(o) == list(q) == ["type", "id", "geometry", "properties"] and o["type"] == q["type"]
        assert len(o["id"]) == len(q["id"]) == 36 and uuid.UUID(o["id"]) and uuid.UUID(q["id"])
        assert list(o["geometry"]) == list(q["geometry"]) == ["type", "coordinates"]
        assert o["geometry"]["type"] == q["geometry"]["type"] == "Polygon"
        for geometry in (o["geometry"], q["geometry"]):  # rings of closed [x, y] number pairs
            (ring,) = geometry["coordinates"]
            assert ring[0] == ring[-1] and all(len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
                                               for p in ring)
        assert o["properties"]["objectType"] == q["properties"]["objectType"].replace("cell", "detection")
        assert set(o["properties"]) <= QUPATH_PROPERTY_KEYS
        # keys in the order QuPath writes them
        order = [k for k in ("objectType", "name", "color", "classification", "isLocked", "measurements")]
        for props in (o["properties"], q["properties"]):
            assert list(props) == [k for k in order if k in props]
    oc, qc = o_cell["properties"]["classification"], q_cell["properties"]["classification"]
    assert list(oc) == list(qc) == ["name", "color"]
    assert all(len(c["color"]) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c["color"])
               for c in (oc, qc))
    for props in (o_cell["properties"], q_cell["properties"], o_area["properties"]):
        assert all(isinstance(k, str) and isinstance(v, float) for k, v in props["measurements"].items())
    # laid out as QuPath lays out its files: re-laying QuPath's own export gives it back byte for byte
    for path in qupath_files.values():
        text = path.read_text(encoding="utf-8")
        assert geojson_text(json.loads(text)) == text
    written = write_geojson(tmp_path / "a.geojson", ours).read_text(encoding="utf-8")
    assert written == geojson_text(ours) and '"color": [0, 230, 64]' in written


def test_reader_takes_the_cells_annotations_and_points_of_qupath_exports(qupath_files):
    path = qupath_files["Single_cells.geojson"]
    raw = json.loads(path.read_text(encoding="utf-8"))["features"]
    objects = read_geojson(path)
    assert len(objects) == len(raw) == 131
    cells = [o for o in objects if o.object_type == "cell"]
    assert len(cells) == 121 and {o.class_name for o in cells} == {"single_cells_demo"}
    assert all(o.rings is not None and not o.is_point and o.nucleus is None for o in cells)
    outlines = [o for o in objects if o.object_type == "annotation" and not o.is_point]
    assert sorted(o.class_name for o in outlines) == ["circles"] * 4 + ["class_1"] + ["two_circles"] * 2
    assert [o.is_rectangle for o in outlines if o.class_name == "class_1"] == [True]
    assert not any(o.is_rectangle for o in outlines if o.class_name != "class_1")
    points = [o for o in objects if o.is_point]
    assert [(o.name, o.class_name) for o in points] == [("calib1", None), ("calib2", None), ("calib3", None)]
    raw_points = [f for f in raw if f["geometry"]["type"] == "Point"]
    np.testing.assert_allclose([o.xy for o in points], [np.add(f["geometry"]["coordinates"], -0.5)
                                                        for f in raw_points])
    # a cell: its id, measurements, box and the centroid of its polygon
    first = cells[0]
    raw_first = next(f for f in raw if f["properties"]["objectType"] == "cell")
    ring = np.array(raw_first["geometry"]["coordinates"][0], float)
    assert first.id == raw_first["id"] and first.measurements["Cell: Area"] == 113.0
    assert len(first.measurements) == len(raw_first["properties"]["measurements"])
    np.testing.assert_array_equal(first.box, [*ring.min(axis=0), *ring.max(axis=0)])
    assert (first.box[:2] <= first.xy + 0.5).all() and (first.xy + 0.5 <= first.box[2:]).all()

    other = read_geojson(qupath_files["TD_01_verysmall_mIF.geojson"])
    assert len(other) == 9 and all(o.object_type == "annotation" for o in other)
    assert sorted(o.class_name or "" for o in other) == ["", "", "", "class_1", "class_1", "class_1",
                                                         "class_2", "class_2", "class_2"]


def test_qupath_export_as_training_labels(qupath_files, tmp_path):
    """QuPath names the export of TD_01_verysmall_mIF.ome.tif (1000 x 1000) TD_01_verysmall_mIF.geojson."""
    imgs, lab = tmp_path / "img", tmp_path / "lab"
    imgs.mkdir()
    lab.mkdir()
    Image.new("RGB", (1000, 1000), (230, 220, 225)).save(imgs / "TD_01_verysmall_mIF.ome.tif")
    (lab / "TD_01_verysmall_mIF.geojson").write_bytes(qupath_files["Single_cells.geojson"].read_bytes())
    with pytest.raises(ConfigError, match=r"several classes \(circles, class_1, single_cells_demo, two_circles\)"):
        load_labelled(imgs, lab, "geojson")
    (item,), report = load_labelled(imgs, lab, "geojson", class_name="single_cells_demo")
    assert report.classes_found == {"single_cells_demo": 121, "circles": 4, "two_circles": 2, "class_1": 1, "": 3}
    assert item.boxes is None and item.instances.shape == (1000, 1000)
    assert item.n_objects == int(item.instances.max()) == 121 and report.unmatched_labels == []
    cells = [o for o in read_geojson(lab / "TD_01_verysmall_mIF.geojson") if o.object_type == "cell"]
    dist = np.linalg.norm(item.points[:, None] - np.array([o.xy for o in cells])[None], axis=2).min(axis=1)
    assert dist.max() < 1.0  # each instance's centre is its polygon's
    (rect,), _ = load_labelled(imgs, lab, "geojson", class_name="class_1")  # a rectangle is a box
    np.testing.assert_array_equal(rect.boxes, [[296, 0, 982, 416]])


# --------------------------------------------------------------------------- round trip


def test_our_export_read_back_gives_the_same_cells(tmp_path):
    labels, det = _two_cells()
    classes = ["eosinophil", "neutrophil"]
    for kwargs in ({"labels": labels, "image_shape": (40, 60)}, {}):  # outlines, and boxes (slides)
        fc = detections_to_geojson(det, classes=classes, class_name="eosinophil", hpf_box=(0, 0, 30, 30),
                                   **kwargs)
        path = write_geojson(tmp_path / "a.geojson", fc)
        back = read_geojson(path)
        cells = [o for o in back if o.class_name is not None]
        assert [o.class_name for o in cells] == classes and [o.object_type for o in cells] == ["detection"] * 2
        np.testing.assert_allclose([o.xy for o in cells], det.xy, atol=0.1)
        assert [o.measurements["Score"] for o in cells] == [0.9, 0.4]
        assert [(o.name, o.class_name) for o in back if o.class_name is None] == [(HPF_NAME, None)]
    # outlines read back as instances hold the pixels the model found
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "a.png")
    write_geojson(tmp_path / "lab" / "a.geojson",
                  detections_to_geojson(det, labels=labels, image_shape=(40, 60), class_name="eosinophil"))
    (item,), _ = load_labelled(tmp_path / "a.png", tmp_path / "lab", "geojson")
    big = np.kron(labels, np.ones((2, 2), np.int32))  # the labels at the input's scale
    inner = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    from scipy import ndimage as ndi

    for k in (1, 2):  # the same pixels but at the corners the outline cuts (by half a model pixel)
        got, want = item.instances == k, big == k
        assert (ndi.binary_erosion(want, inner) <= got).all() and (got <= ndi.binary_dilation(want, inner)).all()
        assert (got ^ want).sum() <= 0.1 * want.sum()
    np.testing.assert_allclose(item.points, det.xy, atol=0.1)


# --------------------------------------------------------------------------- other writers' files


def _write(tmp_path, doc, name="a.geojson"):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return p


def _ellipse(x0, y0, x1, y1, n=16):
    """An ellipse as QuPath writes one: a polygon of its outline flagged isEllipse."""
    t = np.linspace(0, 2 * np.pi, n + 1)
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    ring = np.round(np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1), 2)
    ring[-1] = ring[0]
    return {"type": "Polygon", "coordinates": [ring.tolist()], "isEllipse": True}


def _feature(geometry, **props):
    return {"type": "Feature", "geometry": geometry, "properties": props}


def test_reader_takes_every_form_qupath_and_others_write(tmp_path):
    square = [[[0, 0], [4, 0], [4, 2], [0, 2], [0, 0]]]
    doc = [  # a bare list of Features (QuPath without FEATURE_COLLECTION)
        _feature({"type": "Point", "coordinates": [10.5, 4.5, 0]}, classification="eos"),  # legacy string, a z
        _feature({"type": "MultiPoint", "coordinates": [[1, 1], [2, 3]]},
                 classification={"names": ["Tumor", "Positive"], "color": [1, 2, 3]}),  # a derived class
        _feature(_ellipse(0, 0, 4, 2), objectType="detection",
                 classification={"name": "eos", "colorRGB": -65536}),  # an ellipse; QuPath 0.2's colour
        _feature({"type": "MultiPolygon", "coordinates": [square, [[[10, 10], [12, 10], [11, 14], [10, 10]]]]},
                 object_type="cell"),  # 0.2's property name
        {"type": "Feature", "id": "PathDetectionObject", "geometry": {"type": "Polygon", "coordinates": square},
         "properties": {"measurements": [{"name": "Area", "value": 8}]}},  # 0.2: type in the id, measurement list
        _feature({"type": "Polygon", "coordinates": square}, objectType="tile"),  # not a cell: left out
        _feature({"type": "LineString", "coordinates": [[0, 0], [5, 5]]}),  # a line: left out
        _feature({"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [7, 7]}]}),
        _feature({"type": "Polygon", "coordinates": []}),  # empty: left out
    ]
    objects = read_geojson(_write(tmp_path, doc))
    assert [(o.object_type, o.class_name) for o in objects] == [
        ("annotation", "eos"), ("annotation", "Tumor: Positive"), ("annotation", "Tumor: Positive"),
        ("detection", "eos"), ("cell", None), ("cell", None), ("detection", None), ("annotation", None)]
    assert [o.xy.tolist() for o in objects if o.is_point] == [[10, 4], [0.5, 0.5], [1.5, 2.5], [6.5, 6.5]]
    ellipse = objects[3]
    assert ellipse.is_ellipse and ellipse.is_box_like and not ellipse.is_rectangle
    np.testing.assert_allclose(ellipse.box, [0, 0, 4, 2])
    np.testing.assert_allclose(ellipse.xy, [1.5, 0.5], atol=1e-9)
    triangle = objects[5]
    assert not triangle.is_box_like and triangle.box.tolist() == [10, 10, 12, 14]
    np.testing.assert_allclose(triangle.xy, [11 - 0.5, 34 / 3 - 0.5])
    assert objects[6].measurements == {"Area": 8.0} and objects[6].is_rectangle
    # one Feature alone, and a cell's nucleus
    cell = {"type": "Feature", "id": "3e4b6f50-8ea3-4bc5-bdb2-3d661eaea557",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]},
            "nucleusGeometry": {"type": "Polygon", "coordinates": [[[2, 2], [4, 2], [4, 4], [2, 4], [2, 2]]]},
            "properties": {"objectType": "cell", "classification": {"name": "eos", "color": [0, 0, 0]}}}
    (whole,) = read_geojson(_write(tmp_path, cell))
    (nucleus,) = read_geojson(_write(tmp_path, cell), use_nucleus=True)
    assert whole.box.tolist() == [0, 0, 10, 10] and whole.nucleus[0].max(axis=0).tolist() == [4, 4]
    assert nucleus.box.tolist() == [2, 2, 4, 4] and nucleus.xy.tolist() == [2.5, 2.5]
    assert read_geojson(_write(tmp_path, {"type": "FeatureCollection", "features": []})) == []


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    ("", r"empty file \(expected a QuPath GeoJSON FeatureCollection\)"),
    ("{\"type\": \"FeatureCollection\", \"features\": [", r"not valid JSON \(Expecting value at line 1 column 44\)"),
    (b"\xff\xfe{}", r"not a text file in UTF-8"),
    ({"type": "Polygon", "coordinates": []}, r"a bare Polygon geometry, not a GeoJSON Feature"),
    ({"type": "Topology"}, r"not GeoJSON Features \(a JSON object of type 'Topology'; expected a FeatureCollection"),
    (42, r"not GeoJSON Features \(a JSON int;"),
    ([1], r"feature 1 is a JSON int, not a Feature object"),
    ([{"type": "Feature", "properties": {}}], r"feature 1: no geometry"),
    ([_feature({"type": "Circle", "coordinates": [1, 2]})], r"feature 1: unknown geometry type 'Circle'"),
    ([_feature({"type": "Point", "coordinates": [1, 2]}), _feature({"type": "Polygon", "coordinates": [[[1, 2], "x"]]})],
     r"feature 2: Polygon position \"x\" is not \[x, y\] numbers"),
    ([_feature({"type": "Polygon", "coordinates": 5})], r"feature 1: Polygon has no list of 'coordinates'"),
    ('[{"type": "Feature", "geometry": {"type": "Point", "coordinates": [NaN, 1]}}]',
     r"feature 1: Point coordinates hold NaN or infinite values"),
    ([_feature({"type": "Point", "coordinates": [1, 2]}, classification=7)],
     r"feature 1: classification is neither a name nor \{\"name\": \.\.\.\} \(found 7\)"),
    ([{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": [1]}],
     r"feature 1: 'properties' is not a JSON object"),
])
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, content, problem):
    p = tmp_path / "a.geojson"
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        _write(tmp_path, content)
    with pytest.raises(InputError) as exc:
        read_geojson(p)
    assert re.fullmatch(problem + ".*", _error(exc, p))


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(InputError) as exc:
        read_geojson(tmp_path)
    assert _error(exc, tmp_path) == "is a folder, not a GeoJSON file"


# --------------------------------------------------------------------------- as training labels


def _images(folder, names=("a", "b"), shape=(40, 60)):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(disc_image(shape=shape, centres=((10, 10), (25, 40)), radius=5)).save(folder / f"{n}.png")
    return folder


def _collection(*features):
    return {"type": "FeatureCollection", "features": list(features)}


def _rect(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def test_labelset_reads_geojson_points_boxes_and_outlines(tmp_path):
    assert "geojson" in FORMATS
    imgs, lab = _images(tmp_path / "img", names=("a", "b", "c", "d")), tmp_path / "lab"
    lab.mkdir()
    eos = {"name": "eos", "color": [0, 230, 64]}
    # a: points of QuPath's counting tool, and an unclassified region left out by the class
    _write(lab, _collection(_feature({"type": "MultiPoint", "coordinates": [[10.5, 10.5], [40.5, 25.5]]},
                                     classification=eos),
                            _feature(_rect(0, 0, 60, 40), objectType="annotation")), "a.geojson")
    # b: rectangles (one reaching outside the image: clipped) and an ellipse are boxes
    ellipse = _ellipse(30, 20, 50, 30)
    _write(lab, _collection(_feature(_rect(5, 5, 16, 16), classification=eos),
                            _feature(_rect(50, 30, 70, 50), classification=eos),
                            _feature(ellipse, classification=eos),
                            _feature(_rect(5, 5, 16, 16), classification={"name": "neu", "color": [0, 0, 255]})),
           "b.json")
    # c: free outlines are masks (pixels whose centre they hold)
    tri = {"type": "Polygon", "coordinates": [[[2, 2], [12, 2], [2, 12], [2, 2]]]}
    _write(lab, _collection(_feature(tri, objectType="detection", classification=eos),
                            _feature(_rect(30, 20, 34, 23), objectType="detection", classification=eos)),
           "c.geojson")
    # d: points and an outline together: all taken as points
    _write(lab, _collection(_feature({"type": "Point", "coordinates": [3.5, 4.5]}, classification=eos),
                            _feature(tri, classification=eos)), "d.geojson")
    items, rep = load_labelled(imgs, lab, "geojson", class_name="eos")
    a, b, c, d = (next(it for it in items if it.name == n) for n in "abcd")
    assert a.points.tolist() == [[10, 10], [40, 25]] and a.boxes is None and a.instances is None
    np.testing.assert_array_equal(b.boxes, [[5, 5, 16, 16], [50, 30, 60, 40], [30, 20, 50, 30]])
    np.testing.assert_array_equal(b.points, [[10, 10], [54.5, 34.5], [39.5, 24.5]])
    assert rep.clipped_boxes == 1 and rep.skipped_boxes == 0
    assert c.instances is not None and c.boxes is None and int(c.instances.max()) == 2
    assert int((c.instances == 1).sum()) == 55  # pixel centres inside or on the triangle (x, y > 2, x + y <= 14)
    assert (c.instances == 2).sum() == 12 and c.instances[20:23, 30:34].tolist() == [[2] * 4] * 3
    assert d.points.shape == (2, 2) and d.points[0].tolist() == [3, 4]
    assert rep.mixed_geojson == 1 and any("both points and outlines" in str(w) for w in rep.warnings())
    assert rep.classes_found == {"eos": 9, "neu": 1, "": 1}
    # a detection inside a true box or mask matches it
    assert eval_item(c, radius_px=1).match([[5, 5], [31.5, 21]]).tp == 2
    with pytest.raises(ConfigError, match=r"several classes \(eos, neu\); choose one"):
        load_labelled(imgs, lab, "geojson")


def test_labelset_geojson_names_missing_and_misplaced_files(tmp_path):
    imgs = tmp_path / "img"
    imgs.mkdir()
    for name in ("x.ome.png", "y.png", "z.png"):
        Image.fromarray(disc_image(shape=(20, 20), centres=((10, 10),), radius=3)).save(imgs / name)
    lab = tmp_path / "lab"
    lab.mkdir()
    point = _collection(_feature({"type": "Point", "coordinates": [10.5, 10.5]}))
    _write(lab, point, "x.geojson")  # QuPath's name for x.ome.png
    _write(lab, point, "y.png.geojson")  # the image's full name
    with pytest.raises(InputError, match=r"z\.png: no label file for this image \(1 image\(s\) without labels\)"):
        load_labelled(imgs, lab, "geojson")
    _write(lab, point, "w.geojson")
    items, rep = load_labelled(imgs, lab, "geojson", allow_unlabelled_as_empty=True)
    assert {it.name: it.n_objects for it in items} == {"x.ome": 1, "y": 1, "z": 0}
    # no object has a class: all are of the class asked for (as a point CSV without a class column)
    items, _ = load_labelled(imgs, lab, "geojson", class_name="eosinophil", allow_unlabelled_as_empty=True)
    assert {it.name: it.n_objects for it in items} == {"x.ome": 1, "y": 1, "z": 0}
    assert [p.name for p in rep.unmatched_labels] == ["w.geojson"]
    _write(lab, point, "z.json")
    _write(lab, point, "z.geojson")
    with pytest.raises(InputError, match=r"two label files for image 'z'"):
        load_labelled(imgs, lab, "geojson")
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(InputError, match=r"holds no label files of the geojson format \(\.geojson/\.json"):
        load_labelled(imgs, empty, "geojson")
    (lab / "z.json").unlink()
    _write(lab, "{oops", "z.geojson")
    with pytest.raises(InputError, match=r"z\.geojson: not valid JSON"):
        load_labelled(imgs, lab, "geojson")
    _write(lab, _collection(_feature({"type": "Point", "coordinates": [30, 5]})), "z.geojson")
    with pytest.raises(InputError, match=r"z\.geojson: 1 point\(s\) lie outside the 20x20 image"):
        load_labelled(imgs, lab, "geojson")


# --------------------------------------------------------------------------- napari points


def test_napari_points_round_trip_as_napari_writes_them(tmp_path):
    xy = np.array([[12.5, 40.0], [3.0, 7.25]])
    p = write_napari_points(tmp_path / "pts.csv", xy, classes=["eosinophil", "neutrophil"], scores=[0.97, 0.5])
    assert p.read_text().splitlines() == ["index,axis-0,axis-1,class,score", "0,40,12.5,eosinophil,0.97",
                                          "1,7.25,3,neutrophil,0.5"]
    back = read_napari_points(p)
    np.testing.assert_array_equal(back.xy, xy)
    assert back.classes == ["eosinophil", "neutrophil"] and back.properties["score"].tolist() == [0.97, 0.5]
    assert read_napari_points(write_napari_points(tmp_path / "none.csv", np.zeros((0, 2)))).xy.shape == (0, 2)
    # a file of napari's own, written without an index, with a numeric property
    (tmp_path / "n.csv").write_text("axis-0,axis-1,size\n1,2,3\n4.5,5,6\n")
    n = read_napari_points(tmp_path / "n.csv")
    assert n.xy.tolist() == [[2, 1], [5, 4.5]] and n.properties["size"].tolist() == [3, 6] and n.classes is None


@pytest.mark.parametrize("text, problem", [
    ("x,y\n1,2\n", r"not a napari Points CSV \(header 'x,y' lacks axis-0 and axis-1\)"),
    ("index,axis-0,axis-1,axis-2\n0,1,2,3\n", r"points of 3 dimensions"),
    ("index,axis-0,axis-1\n0,1,\n", r"line 2: no value in column 'axis-1'"),
    ("index,axis-0,axis-1\n0,a,2\n", r"line 2: axis-0 is not a number: 'a'"),
    ("", r"empty file"),
])
def test_napari_bad_files(tmp_path, text, problem):
    p = tmp_path / "p.csv"
    p.write_text(text)
    with pytest.raises(InputError) as exc:
        read_napari_points(p)
    assert re.match(problem, _error(exc, p))
    with pytest.raises(ValueError, match="classes has 1 entries for 2 points"):
        write_napari_points(tmp_path / "q.csv", [[1, 2], [3, 4]], classes=["a"])
