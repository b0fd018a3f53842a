"""The white-cell differential of a multi-class helper, in every output of ``eosdetect count``,
the overlay and the web API, with a stand-in model whose classes are known exactly.

The stand-in's 'U-Net' marks dark pixels (as in test_predict.py); its helper calls a cell by the
colour of its centre: red -> eosinophil, deep blue -> lymphocyte, grey -> other, else neutrophil.
"""

import csv
import json
import pickle

import numpy as np
import pytest

from eosdetect.analysis.image import analyse
from eosdetect.analysis.overlay import COUNTED, REJECTED, class_colours
from eosdetect.apps.batch.run import CountRun, CountSettings
from eosdetect.apps.batch.tables import COUNT_COLUMNS, ImageRecord, count_columns, image_row
from eosdetect.apps.cli import main
from eosdetect.core.differential import Differential, class_column, class_columns
from eosdetect.io import encode_png, read_image, write_image
from eosdetect.models.config import ModelConfig, Thresholds
from eosdetect.models.model import Model

CLASSES = ["eosinophil", "neutrophil", "lymphocyte", "other"]
BACKGROUND = (235, 225, 230)
PURPLE = (120, 40, 160)  # a neutrophil
RED = (200, 30, 30)  # an eosinophil's centre, in a purple cell
DEEP_BLUE = (40, 40, 150)  # a lymphocyte
GREY = (90, 90, 90)  # other
#: (row, col) of the cells of each class in :func:`smear`
CELLS = {
    "eosinophil": [(20, 20), (20, 110)],
    "neutrophil": [(20, 65), (55, 40), (80, 20)],
    "lymphocyte": [(55, 90), (80, 125)],
    "other": [(80, 70)],
}
RADIUS = 7


def smear(shape=(100, 150)) -> np.ndarray:
    """RGB uint8: the cells of :data:`CELLS` on a pale background."""
    img = np.empty((*shape, 3), np.uint8)
    img[:] = BACKGROUND
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fill = {"eosinophil": PURPLE, "neutrophil": PURPLE, "lymphocyte": DEEP_BLUE, "other": GREY}
    for name, centres in CELLS.items():
        for r, c in centres:
            d2 = (yy - r) ** 2 + (xx - c) ** 2
            img[d2 <= RADIUS**2] = fill[name]
            if name == "eosinophil":
                img[d2 <= 9] = RED
    return img


def dark_is_cell(batch):
    return (batch.mean(axis=-1) < 0.6).astype(np.float32)


def by_centre_colour(crops):
    """(n, 16, 16, 3) crops -> (n, 4) probabilities over :data:`CLASSES`."""
    r, g, b = crops[:, 6:10, 6:10].mean(axis=(1, 2)).T
    k = np.where(r > b + 0.2, 0, np.where(b > r + 0.3, 2, np.where(np.abs(r - b) < 0.05, 3, 1)))
    probs = np.full((len(crops), len(CLASSES)), 0.02, np.float32)
    probs[np.arange(len(crops)), k] = 0.94
    return probs


def fake_model(folder, classes=CLASSES, not_in=("other",), name="fake-differential") -> Model:
    """A real :class:`Model` around the stand-in functions; ``classes=[]`` gives a one-class helper."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig(
        name=name, class_name="eosinophil", unet_class_name="white cell", unet_depth=2, tile_size=64,
        pixel_size_um=1.0, input_pixel_size_um=1.0, helper_enabled=True, helper_pixel_size_um=1.0,
        helper_crop_size=16, helper_classes=list(classes), helper_not_in_differential=list(not_in) if classes else [],
    )
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))  # what the digest and a cluster see
    model = Model(folder, cfg, Thresholds(min_distance_um=3, smooth_um=0.5, seed_h_um=0.5, min_area_um2=5))
    model._predict_fn = dark_is_cell
    model._class_probs_fn = by_centre_colour
    if not classes:
        model._class_probs_fn = lambda crops: by_centre_colour(crops)[:, :1]
    return model


EXPECTED = {name: len(c) for name, c in CELLS.items()}  # eosinophil 2, neutrophil 3, lymphocyte 2, other 1
WHITE = 7


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _header(path):
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


def _near(img, colour, tol=40):
    return np.abs(img.astype(int) - np.array(colour)).sum(axis=-1) < tol


@pytest.fixture
def model(tmp_path):
    return fake_model(tmp_path / "model")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_image(folder / "a.png", smear())
    write_image(folder / "b.png", smear()[:, ::-1].copy())  # the same cells, mirrored
    return folder


# --------------------------------------------------------------------------- the rules


def test_differential_percentages_leave_out_the_classes_that_are_not_white_cells():
    d = Differential.from_classes(CLASSES, np.array([0, 0, 1, 1, 1, 2, 2, 3]), ["other"])
    assert d.counts == EXPECTED and d.white_cells == WHITE
    out = d.to_dict()
    assert list(out) == ["white_cells", "not_in_differential", "classes"]
    assert out["white_cells"] == 7 and out["not_in_differential"] == ["other"]
    assert list(out["classes"]) == CLASSES
    assert out["classes"]["other"] == {"count": 1, "percent": None}
    assert out["classes"]["eosinophil"] == {"count": 2, "percent": 28.57}
    shares = [c["percent"] for c in out["classes"].values() if c["percent"] is not None]
    assert sum(shares) == pytest.approx(100, abs=0.02)
    assert d.line() == "White cells: 7 (eosinophil 28.6%, neutrophil 42.9%, lymphocyte 28.6%); not white cells: other 1"
    assert d.columns() == {"n_eosinophil": 2, "n_neutrophil": 3, "n_lymphocyte": 2, "n_other": 1}
    # sums, as over images and slide blocks; no white cell: no percentage
    assert (d + d).counts == {k: 2 * v for k, v in EXPECTED.items()}
    none = Differential({"eosinophil": 0, "other": 3}, ("other",))
    assert none.white_cells == 0 and none.percent("eosinophil") is None and none.line().startswith("White cells: 0;")
    with pytest.raises(ValueError, match="other classes"):
        d + none  # noqa: B018
    with pytest.raises(ValueError, match="index 4 class names"):
        Differential.from_classes(CLASSES, [4])


def test_columns_only_for_multiclass_helpers(model, tmp_path):
    assert class_columns(model.config) == ("n_eosinophil", "n_neutrophil", "n_lymphocyte", "n_other")
    assert count_columns(model.config) == COUNT_COLUMNS + class_columns(model.config)
    one_class = fake_model(tmp_path / "one", classes=[])
    assert class_columns(one_class.config) == () and count_columns(one_class.config) == COUNT_COLUMNS
    assert class_column("ig") == "n_ig"
    row = {"n_eosinophil": "2", "n_neutrophil": "3", "n_lymphocyte": "2", "n_other": "1"}
    assert Differential.from_columns(row, model.config).counts == EXPECTED  # read back from counts.csv text
    assert Differential.from_columns({"status": "error"}, model.config) is None
    assert Differential.from_columns(row, one_class.config) is None


def test_analysis_carries_the_class_counts(model):
    img = smear()
    a = analyse(model, img)
    row = image_row("a.png", a).to_dict()  # what counts.csv and the resume record hold
    assert a.differential.counts == EXPECTED
    assert a.differential.counts["eosinophil"] == a.count == row["count"] == len(a.detections) == 2
    assert len(a.candidates) == row["candidates"] == sum(EXPECTED.values())
    assert {k: row[k] for k in class_columns(model.config)} == a.differential.columns()
    found = sorted(map(tuple, np.round(a.detections.xy[:, ::-1]).astype(int)))
    assert found == sorted(CELLS["eosinophil"])


# --------------------------------------------------------------------------- eosdetect count


def _count(args, capsys):
    code = main(["count", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def patched_load(monkeypatch):
    """``eosdetect count -m FOLDER`` loads the stand-in made for that folder (others as usual)."""
    import eosdetect.models.store as store

    made, real = {}, store.load_model

    def load(path=None):
        return made[str(path)] if str(path) in made else real(path)

    monkeypatch.setattr(store, "load_model", load)
    return made


def test_count_writes_the_differential_everywhere(model, images, tmp_path, patched_load, capsys):
    patched_load[str(model.path)] = model
    out_dir = tmp_path / "res"
    code, out, err = _count([images, "-m", model.path, "-o", out_dir], capsys)
    assert code == 0, err
    assert _header(out_dir / "counts.csv") == [*COUNT_COLUMNS, "n_eosinophil", "n_neutrophil", "n_lymphocyte",
                                               "n_other"]
    rows = _rows(out_dir / "counts.csv")
    for r in rows:
        assert {k: int(r[class_column(k)]) for k in CLASSES} == EXPECTED
        assert int(r["n_eosinophil"]) == int(r["count"])
    summary = json.loads((out_dir / "summary.json").read_text())
    diff = summary["differential"]
    assert diff["white_cells"] == 2 * WHITE and diff["not_in_differential"] == ["other"]
    assert {k: v["count"] for k, v in diff["classes"].items()} == {k: 2 * v for k, v in EXPECTED.items()}
    assert diff["classes"]["other"]["percent"] is None
    assert diff["classes"]["neutrophil"]["percent"] == pytest.approx(100 * 3 / 7, abs=0.01)
    shares = [v["percent"] for v in diff["classes"].values() if v["percent"] is not None]
    assert sum(shares) == pytest.approx(100, abs=0.02)
    assert summary["total_count"] == diff["classes"]["eosinophil"]["count"] == 4
    line = "White cells: 14 (eosinophil 28.6%, neutrophil 42.9%, lymphocyte 28.6%); not white cells: other 2"
    assert line in out.splitlines()


def test_a_resumed_image_keeps_its_class_counts(model, images, tmp_path, patched_load, capsys):
    patched_load[str(model.path)] = model
    out_dir = tmp_path / "res"
    assert _count([images / "a.png", "-m", model.path, "-o", out_dir], capsys)[0] == 0
    first = _rows(out_dir / "counts.csv")
    code, out, err = _count([images, "-m", model.path, "-o", out_dir], capsys)  # a.png done, b.png new
    assert code == 0 and "1 already done" in out, err
    rows = _rows(out_dir / "counts.csv")
    assert rows[0] == {**first[0], "seconds": rows[0]["seconds"]}
    for r in rows:
        assert {k: int(r[class_column(k)]) for k in CLASSES} == EXPECTED
    assert json.loads((out_dir / "summary.json").read_text())["differential"]["white_cells"] == 2 * WHITE
    assert "White cells: 14 " in out


def test_models_without_a_multiclass_helper_keep_their_outputs(images, tmp_path, tiny_model_dir, patched_load,
                                                                 capsys):
    """A plain U-Net and a one-class helper: counts.csv, summary.json, the screen and the overlay as before."""
    one_class = fake_model(tmp_path / "one", classes=[])
    patched_load[str(one_class.path)] = one_class
    for folder in (tiny_model_dir, one_class.path):
        out_dir = tmp_path / f"res-{folder.name}"
        code, out, err = _count([images, "-m", folder, "-o", out_dir], capsys)
        assert code == 0, err
        assert _header(out_dir / "counts.csv") == list(COUNT_COLUMNS)
        assert "differential" not in json.loads((out_dir / "summary.json").read_text())
        assert "White cells" not in out
    over = read_image(tmp_path / "res-one" / "a_overlay.png")
    header = over.shape[0] - 100
    assert not _near(over[:header], class_colours(CLASSES, "eosinophil")["neutrophil"]).any()  # no legend
    assert _near(over[header:, :150], REJECTED, tol=12).any()  # the helper's rejects in grey, as before


# --------------------------------------------------------------------------- overlay


def test_overlay_outlines_each_class_in_its_colour_with_a_legend(model, tmp_path):
    img = smear()
    a = analyse(model, img, source="a.png")
    over = a.overlay()
    header = over.shape[0] - img.shape[0]
    pic, band = over[header:, : img.shape[1]], over[:header]
    colours = class_colours(CLASSES, "eosinophil")
    assert colours["eosinophil"] == COUNTED and colours["other"] == REJECTED
    assert len({colours[c] for c in CLASSES}) == len(CLASSES)

    def ring(r, c):  # the outline lies around the cell's edge
        return pic[max(0, r - RADIUS - 3): r + RADIUS + 4, max(0, c - RADIUS - 3): c + RADIUS + 4]

    assert not _near(np.array([[BACKGROUND]]), REJECTED, tol=12).any()  # the grey of 'other' is not the background
    for name, centres in CELLS.items():
        for r, c in centres:
            assert _near(ring(r, c), colours[name], tol=12).sum() >= 10, (name, r, c)
            for other in CLASSES:
                if other != name:
                    assert not _near(ring(r, c), colours[other], tol=12).any(), (name, other, r, c)
    # the legend: a swatch of every class's colour in the caption band
    for name in CLASSES:
        assert _near(band, colours[name], tol=10).sum() >= 25, name
    plain = analyse(fake_model(tmp_path / "one", classes=[]), img, source="a.png").overlay()
    assert not _near(plain[: plain.shape[0] - img.shape[0]], colours["neutrophil"], tol=10).any()


# --------------------------------------------------------------------------- whole slides, clusters


def test_a_slide_sums_the_class_counts_of_its_blocks(model, tmp_path):
    """Counted block by block (blocks much smaller than the slide, cells on their borders), the
    differential is the whole image's: each cell counted by the block that holds its centre."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("zarr")
    from eosdetect.models.slides import detect_slide

    img = np.concatenate([np.concatenate([smear(), smear()[:, ::-1]], axis=1)] * 2, axis=0)  # 200 x 300
    path = tmp_path / "slide.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, tile=(64, 64), subifds=1, photometric="rgb")
        tif.write(img[::2, ::2].copy(), tile=(64, 64), subfiletype=1, photometric="rgb")
    whole = analyse(model, img).differential
    assert whole.counts == {k: 4 * v for k, v in EXPECTED.items()}
    sc = detect_slide(model, path, block_px=48)
    assert sc.blocks > 12 and sc.differential == whole
    assert sc.differential.counts["eosinophil"] == len(sc.detections) and sum(whole.counts.values()) == sc.candidates
    # and through eosdetect count's runner, into counts.csv
    run = CountRun(model, tmp_path / "res", CountSettings(slide_min_pixels=1, slide_block=48))
    (rec,) = run.run([path])
    assert rec.status == "ok", rec.error
    (row,) = _rows(tmp_path / "res" / "counts.csv")
    assert {k: int(row[class_column(k)]) for k in CLASSES} == whole.counts
    assert run.differential == whole


def test_class_counts_travel_back_from_a_cluster_worker(model, tmp_path, monkeypatch):
    """What a worker sends back (pickled) carries the class counts into counts.csv."""
    import eosdetect.apps.batch.dask as dist

    monkeypatch.setattr(dist, "_worker_model", lambda key, files: model)
    res = dist.count_bytes("k", {}, encode_png(smear()), "a.png", dist.WorkerSettings(
        pixel_size_um=None, thresholds=model.thresholds, hpf_area_mm2=0.237, flag_threshold=None, overlay=False))
    res = pickle.loads(pickle.dumps(res))
    assert {k: res.row.to_dict()[class_column(k)] for k in CLASSES} == EXPECTED
    run = CountRun(model, tmp_path / "res")
    (tmp_path / "res").mkdir()
    rec = ImageRecord(image=str(tmp_path / "a.png"), name="a")
    rec.row = run._write_remote(rec, res)
    run.records = [rec]
    run._write_tables(0.0, partial=False)
    (row,) = _rows(tmp_path / "res" / "counts.csv")
    assert {k: int(row[class_column(k)]) for k in CLASSES} == EXPECTED


@pytest.mark.slow
def test_a_cluster_run_writes_the_class_counts(model, images, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    import eosdetect.apps.batch.dask as dist

    monkeypatch.setattr(dist, "_worker_model", lambda key, files: model)  # in-process workers see the stand-in
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                                  silence_logs=40) as cluster:
        files = sorted(images.iterdir())
        CountRun(model, tmp_path / "dask", CountSettings(scheduler=cluster.scheduler_address)).run(files)
    CountRun(model, tmp_path / "local", CountSettings()).run(files)
    drop = ("seconds",)
    local, remote = _rows(tmp_path / "local" / "counts.csv"), _rows(tmp_path / "dask" / "counts.csv")
    assert [{k: v for k, v in r.items() if k not in drop} for r in remote] == \
        [{k: v for k, v in r.items() if k not in drop} for r in local]
    assert all(int(r["n_neutrophil"]) == 3 for r in remote)


# --------------------------------------------------------------------------- web API


class OneModel:
    """Quacks like eosdetect.apps.server.ModelRegistry, serving one model."""

    def __init__(self, model):
        self.model, self.names, self.default, self.loaded = model, [model.name], model.name, [model.name]

    def get(self, name=None):
        return self.model

    def describe(self):
        return []


def _post(model, **query):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from eosdetect.apps.server import ServeSettings, create_app

    app = create_app(ServeSettings(), registry=OneModel(model))
    with TestClient(app) as client:
        url = "/api/v1/count" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
        r = client.post(url, files={"image": ("a.png", encode_png(smear()), "image/png")})
        schema = client.get("/openapi.json").json()
    assert r.status_code == 200, r.text
    return r.json(), schema


def test_api_answers_the_differential(model):
    from eosdetect.apps.server import CountOut

    d, schema = _post(model)
    assert d["count"] == 2
    assert d["differential"] == analyse(model, smear()).differential.to_dict()
    assert d["differential"]["classes"]["lymphocyte"] == {"count": 2, "percent": 28.57}
    assert [c["class_name"] for c in d["detections"]] == ["eosinophil", "eosinophil"]
    assert CountOut.model_validate(d).differential.white_cells == WHITE
    props = schema["components"]["schemas"]["CountOut"]["properties"]
    assert "differential" in props and "DifferentialOut" in schema["components"]["schemas"]


def test_api_answers_of_other_models_are_unchanged(tmp_path):
    d, _ = _post(fake_model(tmp_path / "one", classes=[]))
    assert "differential" not in d and all("class_name" not in c for c in d["detections"])
    assert list(d)[-2:] == ["overlay_png", "voc_xml"]  # the keys and their order as before


def test_web_page_shows_the_differential_table():
    from importlib import resources

    page = resources.files("eosdetect.apps.web").joinpath("index.html").read_text(encoding="utf-8")
    assert "d.differential" in page and "differentialTable" in page and "% of white cells" in page
