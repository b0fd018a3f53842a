"""The web service (eosdetect serve): API answers, limits, bad input, concurrency, schema."""

import base64
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extras are not installed (pip install 'eosdetect[serve]')")
pytest.importorskip("httpx", reason="httpx is needed by FastAPI's TestClient")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from eosdetect.analysis.image import analyse  # noqa: E402
from eosdetect.annotations.voc import read_voc  # noqa: E402
from eosdetect.apps.server import Busy, Gate, ModelRegistry, ServeSettings, create_app  # noqa: E402
from eosdetect.io import read_image  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
SAMPLE = SAMPLES / "synthetic_smear_01.jpg"


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry()


@pytest.fixture(scope="module")
def client(registry):
    app = create_app(ServeSettings(max_upload_mb=2, max_megapixels=2, workers=2, queue=16), registry=registry)
    with TestClient(app) as c:  # runs the start-up (loads the default model)
        yield c


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def post_image(client, data: bytes, name="x.png", url="/api/v1/count", **form):
    return client.post(url, files={"image": (name, data, "application/octet-stream")},
                       data={k: str(v) for k, v in form.items()})


def test_health_and_models(client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["default_model"] == "eosinophil-smear"
    assert "eosinophil-smear" in h["models_loaded"]  # loaded at start-up
    models = client.get("/api/v1/models").json()
    names = [m["name"] for m in models]
    assert {"eosinophil-smear", "nuclei-he"} <= set(names)
    default = [m for m in models if m["default"]]
    assert [m["name"] for m in default] == ["eosinophil-smear"]
    assert all(m["bundled"] for m in models)
    assert 0 < default[0]["crossval_f1"] < default[0]["validation_f1"]  # the honest figure is served too
    assert [m["crossval_f1"] for m in models if m["name"] == "nuclei-he"] == [None]  # none recorded
    assert all(m["available"] and m["error"] is None for m in models)


def test_models_still_listed_when_a_model_folder_is_removed(tiny_model_dir, tmp_path):
    """A --model-dir folder deleted while the server runs: the list still answers, naming the lost model."""
    import shutil

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, folder)
    app = create_app(ServeSettings(model_dirs=[str(folder)], preload=False))
    with TestClient(app) as c:
        shutil.rmtree(folder)
        r = c.get("/api/v1/models")
    assert r.status_code == 200, r.text
    models = {m["name"]: m for m in r.json()}
    assert models["eosinophil-smear"]["available"] and models["eosinophil-smear"]["version"]
    lost = models["tiny"]
    assert lost["available"] is False and lost["version"] is None and not lost["bundled"]
    assert lost["error"].startswith("cannot be loaded: ") and "no such model folder" in lost["error"]
    assert "\n" not in lost["error"]


def test_page_is_served_without_external_assets(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="files"' in r.text and "api/v1/count" in r.text
    assert "http://" not in r.text and "https://" not in r.text  # works offline


def test_count_matches_the_command_line_pipeline(client):
    data = SAMPLE.read_bytes()
    r = post_image(client, data, name=SAMPLE.name)
    assert r.status_code == 200, r.text
    d = r.json()
    model = load_model()
    a = analyse(model, read_image(SAMPLE))
    assert d["count"] == len(a.detections) > 0
    assert d["model"] == {"name": "eosinophil-smear", "version": model.config.version}
    assert d["image"] == {"filename": SAMPLE.name, "width": 640, "height": 480}
    rows = a.detections.rows()
    got = [(c["x"], c["y"], c["score"], c["area"], *c["box"]) for c in d["detections"]]
    assert got == [tuple(r) for r in rows]
    assert d["clinical"] is None and d["pixel_size_um"] is None
    assert d["timings"]["total"] > 0 and "unet" in d["timings"]
    assert d.get("overlay_png") is None and d.get("voc_xml") is None
    assert d["warnings"] == []


def test_count_with_pixel_size_overlay_and_voc(client, tmp_path):
    r = post_image(client, SAMPLE.read_bytes(), name=SAMPLE.name, url="/api/v1/count?overlay=true&voc=true",
                   pixel_size=0.06)
    assert r.status_code == 200, r.text
    d = r.json()
    c = d["clinical"]
    assert c["hpf_basis"] == "estimate" and c["peak_hpf_count"] is None  # 1/900 of a field
    assert c["density_per_mm2"] == pytest.approx(d["count"] / (640 * 480 * 0.06**2 * 1e-6), rel=1e-3)
    png = base64.b64decode(d["overlay_png"])
    over = np.asarray(Image.open(io.BytesIO(png)))
    assert over.shape[1] == 640 and over.shape[0] >= 480
    xml = tmp_path / "x.xml"
    xml.write_text(d["voc_xml"], encoding="utf-8")
    ann = read_voc(xml)
    assert (ann.width, ann.height) == (640, 480) and ann.filename == SAMPLE.name
    assert len([o for o in ann.objects if not o.difficult]) >= d["count"] - 0  # counted cells are not "difficult"


def test_a_photo_smaller_than_a_field_is_answered_with_an_estimate_and_a_warning(client):
    """A 640x480 photo at 0.06 um/px covers 0.0046 of a 0.24 mm^2 field: no peak, the per-HPF figure
    from its density, the flag judging that figure, and a warning saying so."""
    r = post_image(client, SAMPLE.read_bytes(), name=SAMPLE.name, pixel_size=0.06)
    assert r.status_code == 200, r.text
    d = r.json()
    c = d["clinical"]
    area = 640 * 480 * 0.06**2 * 1e-6
    assert c["peak_hpf_count"] is None and c["hpf_basis"] == "estimate"
    assert c["per_hpf"] == round(d["count"] * 0.24 / area, 1) and c["n_hpf"] == pytest.approx(area / 0.24, rel=1e-2)
    assert c["hpf_flag"] is (c["per_hpf"] >= 15) and "whole_image_is_one_hpf" not in c
    assert d["warnings"] == [
        f"the image covers 0.0046 of a high-power field (0.24 mm2): no whole field, so no peak; "
        f"its per-HPF figure (~{c['per_hpf']:g}) is estimated from its density"]


def test_grey_upload_gets_the_command_lines_warning(client):
    """A grey image gives a colour model nothing to see: the answer says so, in eosdetect count's words."""
    grey = np.asarray(Image.fromarray(read_image(SAMPLE)).convert("L"))
    r = post_image(client, _png(grey), name="grey.png")
    assert r.status_code == 200, r.text
    assert r.json()["warnings"] == list(analyse(load_model(), np.repeat(grey[..., None], 3, 2)).warnings)
    assert r.json()["warnings"] == ["a grey image, but eosinophil-smear was trained on stained colour images: "
                                    "cells may be missed"]


def test_threshold_override_changes_the_count(client):
    base = post_image(client, SAMPLE.read_bytes()).json()
    strict = post_image(client, SAMPLE.read_bytes(), helper_threshold=1.0).json()
    assert strict["count"] <= base["count"]
    assert strict["thresholds"]["helper_threshold"] == 1.0


@pytest.mark.parametrize("helper_threshold", [0.0, 1.0])
def test_voc_of_a_count_follows_its_threshold_overrides(client, tmp_path, helper_threshold):
    """The counted cells are the sure (not difficult) boxes of the XML, whatever thresholds the request gave."""
    d = post_image(client, SAMPLE.read_bytes(), url="/api/v1/count?voc=true", helper_threshold=helper_threshold).json()
    (tmp_path / "x.xml").write_text(d["voc_xml"], encoding="utf-8")
    sure = sorted(((o.xmin + o.xmax) / 2, (o.ymin + o.ymax) / 2) for o in read_voc(tmp_path / "x.xml").objects
                  if not o.difficult)
    assert len(sure) == d["count"] == (d["candidates"] if helper_threshold == 0 else 0)


@pytest.mark.parametrize("url", ["/api/v1/count", "/api/v1/prelabel"])
def test_two_images_in_one_request_are_refused_not_half_answered(client, url):
    """Issue 20, case 7: two ``image`` fields once answered for the second only."""
    data = SAMPLE.read_bytes()
    files = [("image", ("a.jpg", data, "image/jpeg")), ("image", ("b.jpg", data, "image/jpeg"))]
    r = client.post(url, files=files)
    assert r.status_code == 422 and r.json()["detail"] == "2 image fields in one request; send one image per request"
    assert post_image(client, data, "a.jpg", url=url).status_code == 200


def test_prelabel_returns_labelimg_xml(client, tmp_path):
    r = post_image(client, SAMPLE.read_bytes(), name=SAMPLE.name, url="/api/v1/prelabel")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    assert 'filename="synthetic_smear_01.xml"' in r.headers["content-disposition"]
    p = tmp_path / "a.xml"
    p.write_bytes(r.content)
    ann = read_voc(p)
    assert ann.objects and {o.name for o in ann.objects} == {"eosinophil"}


def test_other_model_by_name(client):
    r = post_image(client, SAMPLE.read_bytes(), model="nuclei-he")
    assert r.status_code == 200 and r.json()["model"]["name"] == "nuclei-he"


@pytest.mark.parametrize(
    "data, name, status, words",
    [
        (b"", "empty.png", 400, "empty.png: empty upload"),
        (b"hello, not an image", "notes.txt", 400, "notes.txt: not an image"),
        (SAMPLE.read_bytes()[:3000], "cut.jpg", 400, "cut.jpg: image file is truncated"),
        (_png(np.zeros((4, 4, 3), np.uint8)), "tiny.png", 400, "too small"),
        (_png(np.zeros((1500, 1500, 3), np.uint8)), "big.png", 413, "over this server's limit of 2 MP"),
    ],
)
def test_bad_uploads_get_one_line_errors(client, data, name, status, words):
    r = post_image(client, data, name=name)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert words in detail and "\n" not in detail
    assert "/tmp" not in detail and "eosdetect-" not in detail  # names the upload, not the temporary file


def test_the_413_advice_is_what_the_command_line_does(client, tmp_path):
    """Issue 20, case 4: the server's advice for an image over its limit must hold: the command line
    counts a large image block by block, but refuses a PNG whose pixels would take over 1 GB
    decoded, for which the answer says to save it as a tiled TIFF."""
    from conftest import flat_png

    r = post_image(client, _png(np.zeros((1500, 1500, 3), np.uint8)), name="big.png")
    assert r.status_code == 413 and "eosdetect count), which counts large images block by block" in r.json()["detail"]
    huge = flat_png(tmp_path / "huge.png", 19999, 19999).read_bytes()  # 1.2 MB, 1.6 GB decoded
    r = post_image(client, huge, name="huge.png")
    assert r.status_code == 413, r.text
    assert "save it as a tiled TIFF" in r.json()["detail"] and "block by block" in r.json()["detail"]


def test_unknown_model_lists_the_names(client):
    r = post_image(client, SAMPLE.read_bytes(), model="no-such")
    assert r.status_code == 404
    assert "eosinophil-smear" in r.json()["detail"] and "nuclei-he" in r.json()["detail"]


def test_invalid_parameters_get_422_in_one_line(client):
    r = post_image(client, SAMPLE.read_bytes(), pixel_size=-1)
    assert r.status_code == 422 and r.json()["detail"].startswith("pixel_size:")
    r = client.post("/api/v1/count", data={"model": "nuclei-he"}, files={"other": ("x", b"1")})
    assert r.status_code == 422 and "image" in r.json()["detail"]


@pytest.mark.parametrize("px", ["5e-324", "999"])
def test_absurd_pixel_size_is_refused_not_attempted(client, px):
    r = post_image(client, SAMPLE.read_bytes(), pixel_size=px)
    assert r.status_code == 400 and "check the pixel size" in r.json()["detail"]


def test_upload_over_the_size_limit_gets_413(client):
    big = b"\0" * 2_500_000
    r = post_image(client, big, name="big.tif")
    assert r.status_code == 413 and "limit of 2 MB" in r.json()["detail"]

    def chunks():  # a streamed (chunked) upload has no Content-Length: stopped as it passes the limit
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'
        for _ in range(60):
            yield b"x" * 50_000
        yield b"\r\n--b--\r\n"

    r = client.post("/api/v1/count", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413


def _png_header(width, height):
    """A PNG that says it is width x height, with no pixel data."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_huge_image_is_refused_from_its_header_in_a_fresh_process(monkeypatch):
    """Pillow's own bomb check (on until eosdetect.io has read an image) must not hide the size."""
    from eosdetect.apps.server import TooLarge, read_upload

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # Pillow's default in a new process
    with pytest.raises(TooLarge, match=r"huge\.png: image of 30000x30000 px \(900\.0 MP\) is over"):
        read_upload(_png_header(30000, 30000), "huge.png", max_pixels=4e6)


@pytest.mark.parametrize("url", ["/api/v1/count", "/api/v1/prelabel"])
def test_image_too_large_at_the_models_pixel_size_gets_413(client, url):
    """The limit is on the pixels the pipeline processes: a small upload with a coarse pixel size
    is enlarged to the helper's 0.25 um/px (7.6 times per side here) and is refused before that."""
    small = _png(np.full((200, 200, 3), 230, np.uint8))  # 0.04 MP, far under the 2 MP limit
    r = post_image(client, small, name="coarse.png", url=url, pixel_size=1.9)
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert detail.startswith("coarse.png: image of 200x200 px at 1.9 um/px is 1520x1520 px (2.3 MP) at the "
                             "model's 0.25 um/px, over this server's limit of 2 MP")
    assert "\n" not in detail


def test_helper_view_counts_towards_the_pixel_limit():
    """A two-stage model also enlarges the image for its helper (0.25 um/px for the eosinophil model, finer
    than its U-Net's 0.32: here the U-Net's 594x594 px fit under the limit, the helper's 760x760 do not)."""
    from eosdetect.apps.server import TooLarge, read_upload

    model = load_model("eosinophil-smear")
    small = _png(np.full((100, 100, 3), 230, np.uint8))
    with pytest.raises(TooLarge, match=r"x\.png: image of 100x100 px at 1\.9 um/px is 760x760 px \(0\.6 MP\) "
                       r"at the model's 0\.25 um/px, over this server's limit of 0\.5 MP"):
        read_upload(small, "x.png", max_pixels=0.5e6, model=model, pixel_size_um=1.9)
    image, _ = read_upload(small, "x.png", max_pixels=0.5e6, model=model, pixel_size_um=0.08)  # shrunk: accepted
    assert image.shape == (100, 100, 3)
    image, _ = read_upload(small, "x.png", max_pixels=0.5e6, model=load_model("nuclei-he"), pixel_size_um=1.9)
    assert image.shape == (100, 100, 3)  # one stage: 380x380 px at its 0.5 um/px


def test_multi_page_tiff_upload_is_refused_before_decoding_it():
    """Issue 20, case 3: a stack of pages is refused in one line (it used to be counted as its first
    page alone), and nothing is decoded for that: a small upload of many compressed pages takes
    no memory for them."""
    import tracemalloc

    import tifffile

    from eosdetect.apps.server import read_upload
    from eosdetect.errors import InputError

    pages = np.zeros((40, 500, 500, 3), np.uint8)  # 30 MB decoded, 0.75 MB a page
    buf = io.BytesIO()
    tifffile.imwrite(buf, pages, photometric="rgb", compression="zlib")
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="stack.tif: TIFF holds 40 images of the same size"):
            read_upload(buf.getvalue(), "stack.tif", max_pixels=2e6)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 500 * 500 * 3, f"{peak / 1e6:.1f} MB taken to refuse a stack of 30 MB"


def test_concurrent_requests_share_one_model_and_agree(client, registry):
    images = sorted(SAMPLES.glob("*.jpg"))
    alone = {p.name: post_image(client, p.read_bytes(), name=p.name).json()["detections"] for p in images}
    loads = registry.loads
    jobs = [images[i % len(images)] for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda p: post_image(client, p.read_bytes(), name=p.name), jobs))
    assert all(a.status_code == 200 for a in answers)
    for p, a in zip(jobs, answers):
        assert a.json()["image"]["filename"] == p.name
        assert a.json()["detections"] == alone[p.name]  # no cross-talk between requests
    assert registry.loads == loads  # nothing reloaded


def test_registry_loads_each_model_once_under_concurrent_first_use():
    reg = ModelRegistry()
    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: reg.get("nuclei-he"), range(4)))
    assert all(m is models[0] for m in models) and reg.loads == 1
    with pytest.raises(KeyError):
        reg.get("nope")


def test_gate_answers_busy_instead_of_queueing_without_bound():
    import anyio

    release = threading.Event()
    started = threading.Event()

    def slow():
        started.set()
        release.wait(10)
        return "done"

    async def scenario():
        gate = Gate(workers=1, queue=1)
        results = []

        async def call():
            try:
                results.append(await gate.run(slow))
            except Busy:
                results.append("busy")

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)  # runs
            tg.start_soon(call)  # waits in the queue
            await anyio.sleep(0.2)
            tg.start_soon(call)  # over workers + queue: busy at once
            await anyio.sleep(0.2)
            assert results == ["busy"]
            release.set()
        return results, gate.pending

    results, pending = anyio.run(scenario)
    assert sorted(results) == ["busy", "done", "done"] and pending == 0


def test_busy_server_answers_503(registry):
    app = create_app(ServeSettings(workers=1, queue=0, preload=False), registry=registry)
    gate = app.state.gate
    gate.pending = 1  # as if one image were being counted
    with TestClient(app) as c:
        r = post_image(c, SAMPLE.read_bytes())
    assert r.status_code == 503 and r.headers["retry-after"] and "busy" in r.json()["detail"]


def test_nothing_is_left_on_disk(client, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert post_image(client, SAMPLE.read_bytes(), name=SAMPLE.name).status_code == 200
    assert post_image(client, b"junk", name="junk.png").status_code == 400
    assert list(tmp_path.iterdir()) == []


def test_serve_port_taken_or_bad_model_dir_is_one_line_error(tmp_path, capsys):
    import socket

    from eosdetect.apps.cli import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0]
    assert main(["serve", "--model-dir", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such model folder" in err[0]


def test_serve_binds_to_localhost_by_default():
    from eosdetect.apps.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000


# --------------------------------------------------------------------------- the OpenAPI schema

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

_schema_app = create_app(ServeSettings(max_upload_mb=1, max_megapixels=1, preload=False))
schema = schemathesis.openapi.from_asgi("/openapi.json", _schema_app)


def test_openapi_schema_lists_the_endpoints():
    paths = TestClient(_schema_app).get("/openapi.json").json()["paths"]
    assert {"/api/v1/count", "/api/v1/prelabel", "/api/v1/models", "/healthz"} <= set(paths)
    assert set(paths["/api/v1/count"]["post"]["responses"]) >= {"200", "400", "404", "413", "422", "503"}


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    """Generated requests (random uploads, parameters) get documented answers, never a server error.

    Not checked: that every schema-valid request is accepted. The schema cannot
    say "a decodable image", so random bytes are rightly refused with 400."""
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


def test_count_answers_with_qupath_geojson_when_asked(client, tmp_path):
    """``?geojson=true``: the FeatureCollection `count --export geojson` writes, whose eosinophils are the count."""
    from eosdetect.annotations.geojson import read_geojson

    r = post_image(client, SAMPLE.read_bytes(), name=SAMPLE.name, url="/api/v1/count?geojson=true")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["geojson"]["type"] == "FeatureCollection"
    path = tmp_path / "x.geojson"
    path.write_text(json.dumps(d["geojson"]), encoding="utf-8")
    cells = [o for o in read_geojson(path) if o.object_type == "detection" and o.class_name == "eosinophil"]
    assert len(cells) == d["count"] > 0
    got = sorted((round(o.xy[0]), round(o.xy[1])) for o in cells)
    assert got == sorted((round(c["x"]), round(c["y"])) for c in d["detections"])
    assert post_image(client, SAMPLE.read_bytes(), name=SAMPLE.name).json().get("geojson") is None
