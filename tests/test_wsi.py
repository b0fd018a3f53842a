"""Whole-slide counting: block by block, every cell exactly once, glass skipped."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("zarr", reason="zarr is needed to read slide regions (pip install zarr)")

from eosdetect.apps.batch.run import CountRun, CountSettings  # noqa: E402
from eosdetect.core.colour import background_gains, tissue_mask  # noqa: E402
from eosdetect.core.metrics import match_points  # noqa: E402
from eosdetect.io import read_image  # noqa: E402
from eosdetect.models.slides import block_geometry, detect_slide, slide_gains  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402
from eosdetect.slideio import SlideReader, is_slide  # noqa: E402

SAMPLES = sorted((Path(__file__).resolve().parent.parent / "data" / "samples").glob("*.jpg"))
GLASS = (243, 242, 245)


def write_pyramid(path, image, *, levels=2, pixel_size_um=None, description=None):
    """A tiled pyramidal TIFF (sub-resolutions in SubIFDs, as OME-TIFF and many scanners write)."""
    import cv2

    kw = {}
    if pixel_size_um:
        kw = dict(resolution=(1e4 / pixel_size_um, 1e4 / pixel_size_um), resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), subifds=levels, photometric="rgb", description=description, **kw)
        im = image
        for _ in range(levels):
            im = cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA)
            tif.write(im, tile=(256, 256), subfiletype=1, photometric="rgb")
    return path


@pytest.fixture(scope="module")
def mosaic():
    """3x3 synthetic smear photos (1920x1440) with the middle-right one replaced by bare glass."""
    tiles = [read_image(p) for p in SAMPLES]
    rows = []
    for i in range(3):
        row = []
        for j in range(3):
            t = tiles[(i + j) % len(tiles)].copy()
            if (i, j) == (1, 2):
                t[:] = GLASS
            row.append(t[:, ::-1] if (i + j) % 2 else t)
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def slide(tmp_path_factory, mosaic):
    return write_pyramid(tmp_path_factory.mktemp("slide") / "mosaic.tif", mosaic, pixel_size_um=0.08)


def test_reader_levels_regions_and_pixel_size(slide, mosaic):
    with SlideReader(slide) as r:
        assert r.shapes[0] == (1440, 1920) and r.shapes[1] == (720, 960) and len(r.shapes) == 3
        assert r.mpp == pytest.approx(0.08)
        np.testing.assert_array_equal(r.read(100, 300, 250, 700), mosaic[100:300, 250:700])
        np.testing.assert_array_equal(r.read(-5, 20, 1900, 2000), mosaic[0:20, 1900:1920])  # clipped
        thumb, f = r.thumbnail(max_side=480)
        assert thumb.shape == (360, 480, 3) and f == pytest.approx(4.0)


def test_flat_tiff_thumbnail_is_built_in_strips(tmp_path, mosaic):
    """A big TIFF without a pyramid: the thumbnail is shrunk strip by strip, and matches a whole resize."""
    import cv2

    p = tmp_path / "flat.tif"
    tifffile.imwrite(p, mosaic, tile=(256, 256), photometric="rgb")
    with SlideReader(p) as r:
        assert len(r.shapes) == 1
        thumb, f = r.thumbnail(max_side=480, whole_limit=1)
        strips = r._strip_thumbnail(0, (480, 360), strip_pixels=200_000)  # about 14 strips
    assert thumb.shape == strips.shape == (360, 480, 3) and f == pytest.approx(4.0)
    ref = cv2.resize(mosaic, (480, 360), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(strips, ref)  # strips of whole output rows: no seams
    np.testing.assert_array_equal(thumb, ref)


def test_slide_blocks_share_one_white_and_follow_the_colour_mode(tmp_path):
    """16-bit slides: a block of dark tissue alone reads as dark as beside glass (one bit depth per
    slide, not a guess per block); min-is-white and palette slides read as read_image reads them."""
    from PIL import Image

    grey = np.full((512, 512), 8000, np.uint16)  # 14-bit data: tissue at 8000 ...
    grey[:, 256:] = 16000  # ... glass at 16000
    tifffile.imwrite(tmp_path / "g16.tif", grey, tile=(256, 256))
    with SlideReader(tmp_path / "g16.tif") as r:
        assert r.read(0, 256, 0, 256)[0, 0].tolist() == r.read(0, 256, 200, 456)[0, 0].tolist() \
            == read_image(tmp_path / "g16.tif")[0, 0].tolist() == [125] * 3
    tifffile.imwrite(tmp_path / "miw.tif", np.full((64, 64), 255 - 30, np.uint8), photometric="miniswhite",
                     tile=(32, 32))
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:32] = (200, 30, 150)
    rgb[32:] = (240, 240, 240)
    Image.fromarray(rgb).quantize(colors=4).save(tmp_path / "pal.tif")
    for name in ("miw.tif", "pal.tif"):
        with SlideReader(tmp_path / name) as r:
            np.testing.assert_array_equal(r.read(0, 64, 0, 64), read_image(tmp_path / name))
            np.testing.assert_array_equal(r.thumbnail(max_side=64)[0], read_image(tmp_path / name))


def test_svs_description_gives_the_pixel_size(tmp_path, mosaic):
    p = write_pyramid(tmp_path / "a.tif", mosaic[:512, :512], levels=1,
                      description="Aperio Image Library v12 |AppMag = 40|MPP = 0.2512")
    with SlideReader(p) as r:
        assert r.mpp == pytest.approx(0.2512)


def test_every_cell_counted_once_across_block_borders(slide, mosaic, model):
    """Small blocks (256 px cores) cut through many cells; the slide count must equal
    the whole-image count cell for cell, with the same helper scores. Every white cell
    is counted (helper threshold 0), so that there are cells enough on the synthetic
    photos."""
    thr = model.thresholds.replace(helper_threshold=0.0)
    sc = detect_slide(model, slide, block_px=64, thresholds=thr)
    core, halo = block_geometry(model, 0.08, 64)
    assert core == 256 and halo >= model.config.cell_diameter_um / 0.08
    # a white-balancing helper sees the whole slide balanced alike, by the slide's gains
    assert (sc.gains is not None) == model.config.helper_white_balance
    whole = model.detect(mosaic, pixel_size_um=0.08, helper_gains=sc.gains, thresholds=thr).detections
    assert len(whole) >= 10
    # the test means something only if cells straddle core borders
    crossing = [(x0 // core != (x1 - 1) // core) or (y0 // core != (y1 - 1) // core)
                for x0, y0, x1, y1 in zip(whole.xmin, whole.ymin, whole.xmax, whole.ymax)]
    assert sum(crossing) >= 3
    assert len(sc.detections) == len(whole)
    m = match_points(sc.detections.xy, whole.xy, radius=3.0)
    assert m.tp == len(whole) and m.fp == 0 and m.fn == 0
    # a block's helper picture is resized from its own pixels, so a CNN's scores differ in the
    # third decimal from the whole image's (the counting decision does not)
    np.testing.assert_allclose(sc.detections.score[m.pairs[:, 0]], whole.score[m.pairs[:, 1]], atol=5e-3)


def test_glass_is_skipped(slide, model):
    sc = detect_slide(model, slide, block_px=64)
    assert sc.blocks == 6 * 8 and sc.blocks_with_tissue < sc.blocks
    assert sc.tissue_area_mm2 < 1920 * 1440 * 0.08**2 * 1e-6


def test_a_blank_slide_counts_nothing_and_reads_no_block(tmp_path, model):
    p = write_pyramid(tmp_path / "glass.tif", np.full((1024, 1024, 3), GLASS, np.uint8), pixel_size_um=0.08)
    sc = detect_slide(model, p, block_px=64)
    assert len(sc.detections) == 0 and sc.blocks_with_tissue == 0 and sc.tissue_area_mm2 == 0


def test_tissue_mask_finds_stain_not_glass():
    thumb = np.full((40, 40, 3), GLASS, np.uint8)
    thumb[10:30, 10:30] = (200, 120, 180)
    m = tissue_mask(thumb)
    assert m[20, 20] and not m[0, 0] and not m[39, 39]


def test_which_files_are_slides(slide, tmp_path):
    assert not is_slide(slide)  # 2.8 MP: small enough to read whole
    assert is_slide(slide, min_pixels=1_000_000)
    assert is_slide(tmp_path / "x.svs") and not is_slide(SAMPLES[0])


def test_count_run_writes_slide_outputs(slide, tmp_path, model):
    out = tmp_path / "res"
    run = CountRun(model, out, CountSettings(slide_block=128, slide_min_pixels=1_000_000))
    recs = run.run([slide])
    assert recs[0].row.status == "ok", recs[0].row
    for name in ("mosaic_detections.csv", "mosaic_overlay.png", "mosaic_heatmap.png"):
        assert (out / name).is_file(), name
    row = next(csv.DictReader(open(out / "counts.csv")))
    # the pixel size came from the file's resolution tags, so the clinical fields are there
    assert float(row["pixel_size_um"]) == pytest.approx(0.08)
    assert 0 < float(row["area_mm2"]) < 1920 * 1440 * 0.08**2 * 1e-6
    assert float(row["density_per_mm2"]) == pytest.approx(int(row["count"]) / float(row["area_mm2"]), rel=1e-3)
    summary = json.loads((out / "summary.json").read_text())
    # a mosaic of 0.018 mm^2 is smaller than a field: its per-HPF figure is an estimate from its density
    assert row["hpf_basis"] == "estimate" and row["peak_hpf_count"] == ""
    assert summary["clinical"]["per_hpf"] == float(row["per_hpf"])
    heat = read_image(out / "mosaic_heatmap.png")
    assert heat.shape[0] > 200 and heat.shape[1] > 200
    n = sum(1 for _ in open(out / "mosaic_detections.csv")) - 1
    assert n == int(row["count"])
    # a re-run skips the finished slide, unless one of its outputs was deleted since
    again = CountRun(model, out, CountSettings(slide_block=128, slide_min_pixels=1_000_000))
    assert again.run([slide])[0].status == "skipped"
    (out / "mosaic_heatmap.png").unlink()
    again = CountRun(model, out, CountSettings(slide_block=128, slide_min_pixels=1_000_000))
    assert again.run([slide])[0].status == "ok" and (out / "mosaic_heatmap.png").is_file()


def test_unreadable_slide_is_one_line_error(tmp_path, model):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"II*\x00 definitely not a slide")
    run = CountRun(model, tmp_path / "res", CountSettings())
    rec = run.run([bad])[0]
    assert rec.row.status == "error" and "broken.svs" in rec.error and "\n" not in rec.row.error


def test_damaged_slide_fails_alone_and_the_rest_finish(tmp_path, model):
    # a tiled TIFF whose compressed tiles are cut off half-way: the header opens, the pixels don't
    bad = tmp_path / "damaged.svs"
    rng = np.random.default_rng(0)
    tifffile.imwrite(bad, rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8), tile=(256, 256),
                     compression="zlib", photometric="rgb")
    with open(bad, "r+b") as f:
        f.truncate(bad.stat().st_size // 2)
    run = CountRun(model, tmp_path / "res", CountSettings(workers=1))
    recs = run.run([bad, SAMPLES[0]])
    assert recs[0].row.status == "error", recs[0].row
    assert "damaged.svs" in recs[0].error and "damaged slide" in recs[0].error and "\n" not in recs[0].error
    assert recs[1].row.status == "ok"
    rows = list(csv.DictReader(open(tmp_path / "res" / "counts.csv")))
    assert [r["status"] for r in rows] == ["error", "ok"]


@pytest.mark.parametrize("tissue_share", [0.3, 0.97])
def test_slide_white_balance_comes_from_the_tissue_not_the_glass(tmp_path, tissue_share):
    """A smear photographed with a warm cast, laid on neutral bright glass: the
    helper's gains must be the photo's own (balanced on its plasma) however
    much glass surrounds it, not the glass's (found in review: a slide that was
    43% smear counted far more eosinophils per mm² than one that was 97%)."""
    rng = np.random.default_rng(0)
    side = 4096
    slide = np.full((side, side, 3), (243, 242, 245), np.uint8)  # bare glass
    smear = np.empty((side, side, 3), np.uint8)
    smear[:] = (214, 204, 190)  # warm plasma
    yy, xx = np.mgrid[:side, :side]
    for y, x in rng.integers(0, side, (2500, 2)):  # red cells
        r = slice(max(0, y - 20), y + 20), slice(max(0, x - 20), x + 20)
        disc = (yy[r] - y) ** 2 + (xx[r] - x) ** 2 < 400
        smear[r][disc] = (190, 120, 110)
    width = int(round(side * tissue_share))
    slide[:, :width] = smear[:, :width]
    path = write_pyramid(tmp_path / "s.tif", slide, levels=3)
    own = background_gains(smear)
    with SlideReader(path) as reader:
        thumb, tf = reader.thumbnail()
        gains = slide_gains(reader, tissue_mask(thumb), tf)
    np.testing.assert_allclose(gains, own, rtol=0.01)
    if tissue_share < 0.5:  # the old way, balancing on the whole thumbnail, was the glass's
        assert abs(background_gains(thumb)[2] - own[2]) > 0.1


def test_ctrl_c_stops_a_slide_at_its_next_block(slide, tmp_path, model, monkeypatch):
    """Ctrl-C while a slide is being counted stops it after the block in hand,
    not after its last block (found in review: the run waited for the whole
    slide), and leaves nothing of it marked done."""
    import os
    import signal
    import time

    from eosdetect.models.model import Model

    real, calls = Model.detect, []

    def slow_detect(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(Model, "detect", slow_detect)
    out = tmp_path / "res"
    run = CountRun(model, out, CountSettings(slide_block=128, slide_min_pixels=1_000_000))
    with pytest.raises(KeyboardInterrupt):
        run.run([slide])
    core, _ = block_geometry(model, 0.08, 128)
    assert -(-1440 // core) * -(-1920 // core) >= 8  # enough blocks that stopping early shows
    assert len(calls) <= 3
    assert not (out / "mosaic_detections.csv").exists()
    # a re-run counts the slide whole
    monkeypatch.setattr(Model, "detect", real)
    rec = CountRun(model, out, CountSettings(slide_block=128, slide_min_pixels=1_000_000)).run([slide])[0]
    assert rec.status == "ok" and (out / "mosaic_detections.csv").is_file()


def test_a_large_slide_with_little_tissue_is_not_called_smaller_than_a_field(tmp_path, model):
    """Smaller than a field is a matter of the picture's frame: a slide of 0.16 mm² is
    larger than a 0.1 mm² high-power field even when its tissue (area_mm2) is not."""
    glass = np.full((2000, 2000, 3), GLASS, np.uint8)
    glass[700:700 + 480, 700:700 + 640] = read_image(SAMPLES[0])[:480, :640]
    path = write_pyramid(tmp_path / "sparse.tif", glass, levels=3, pixel_size_um=0.2)
    out = tmp_path / "res"
    rec = CountRun(model, out, CountSettings(hpf_area_mm2=0.1, slide_min_pixels=1_000_000)).run([path])[0]
    assert rec.status == "ok", rec.row
    assert float(rec.row.area_mm2) < 0.1 < 2000 * 2000 * 0.2**2 / 1e6
    assert rec.row.hpf_basis == "peak" and rec.row.peak_hpf_count is not None
    assert "note" not in json.loads((out / "summary.json").read_text())["clinical"]
