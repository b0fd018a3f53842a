import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import disc_image
from eosdetect.apps.cli import main
from eosdetect.io import write_image


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_image(folder / "a.png", disc_image())
    write_image(folder / "b.png", disc_image(centres=((30, 30),)))
    return folder


def _count(args, capsys):
    code = main(["count", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_count_writes_all_outputs(images, tmp_path, tiny_model_dir, capsys):
    out_dir = tmp_path / "res"
    code, out, err = _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)
    assert code == 0, err
    rows = _rows(out_dir / "counts.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert list(rows[0])[:6] == ["image", "output_name", "status", "count", "width", "height"]
    assert [r["output_name"] for r in rows] == ["a", "b"]
    assert rows[0]["width"] == "80" and rows[0]["height"] == "64"
    for stem in ("a", "b"):
        det = _rows(out_dir / f"{stem}_detections.csv")
        with open(out_dir / f"{stem}_detections.csv") as fh:
            assert fh.readline().strip() == "x,y,score,area,xmin,ymin,xmax,ymax"
        assert len(det) == int(next(r for r in rows if r["image"].endswith(f"{stem}.png"))["count"])
        assert (out_dir / f"{stem}_overlay.png").stat().st_size > 0
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["complete"] and summary["images_ok"] == 2 and summary["model"]["name"] == "tiny"
    assert summary["clinical"] is None and "pixel-size" in summary["clinical_note"]
    assert not list(out_dir.glob("*.tmp")) and not list(out_dir.glob(".*.tmp"))


def test_rerun_skips_done_images_and_overwrite_redoes(images, tmp_path, tiny_model_dir, capsys):
    out_dir = tmp_path / "res"
    assert _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)[0] == 0
    code, out, _ = _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)
    assert code == 0 and "2 already done" in out
    assert json.loads((out_dir / "summary.json").read_text())["images_skipped_as_done"] == 2
    code, out, _ = _count([images, "-m", tiny_model_dir, "-o", out_dir, "--overwrite"], capsys)
    assert "already done" not in out
    # changed settings are not "done"
    code, out, _ = _count([images, "-m", tiny_model_dir, "-o", out_dir, "--prob-threshold", "0.9"], capsys)
    assert "already done" not in out


def test_outputs_follow_an_image_whose_name_became_shared(images, tmp_path, tiny_model_dir, capsys):
    """a.png counted alone writes a_*; when other/a.png joins, its files become imgs__a_* (reused, not
    recounted), and no stale a_* is left to be mistaken for either image's."""
    out_dir = tmp_path / "res"
    assert _count([images / "a.png", "-m", tiny_model_dir, "-o", out_dir], capsys)[0] == 0
    other = tmp_path / "other"
    other.mkdir()
    write_image(other / "a.png", disc_image(centres=((30, 30),)))
    code, out, err = _count([images / "a.png", other / "a.png", "-m", tiny_model_dir, "-o", out_dir], capsys)
    assert code == 0 and "1 already done" in out, err
    left = sorted(p.name for p in out_dir.iterdir() if p.name.startswith("a"))
    assert left == [] and (out_dir / "imgs__a_overlay.png").is_file() and (out_dir / "other__a_overlay.png").is_file()
    rows = _rows(out_dir / "counts.csv")
    assert [r["image"] for r in rows] == [str(images / "a.png"), str(other / "a.png")]


def test_renames_that_chain_still_resume(tmp_path, tiny_model_dir, monkeypatch):
    """z/p.png joining makes x/p.png 'x__p', the old name of y/x__p.png: both move, neither is recounted."""
    from eosdetect.apps.batch.run import CountRun, CountSettings
    from eosdetect.models.store import load_model

    monkeypatch.chdir(tmp_path)
    paths = [Path(p) for p in ("x/p.png", "y/x__p.png", "z/p.png")]
    for i, p in enumerate(paths):
        p.parent.mkdir()
        write_image(p, disc_image(centres=((30, 20 + 10 * i),)))
    model, out = load_model(tiny_model_dir), Path("out")
    first = CountRun(model, out, CountSettings()).run(paths[:2])
    assert [r.name for r in first] == ["p", "x__p"]
    second = CountRun(model, out, CountSettings()).run(paths)
    assert [(r.name, r.status) for r in second] == [("x__p", "skipped"), ("y__x__p", "skipped"), ("z__p", "ok")]
    for r_old, r_new in zip(first, second):  # each image's own files moved with it
        assert r_new.row == r_old.row
    assert sorted(f.name for f in out.glob("*_detections.csv")) == [
        "x__p_detections.csv", "y__x__p_detections.csv", "z__p_detections.csv"]


def test_an_overlay_older_than_the_detections_is_not_kept(images, tmp_path, tiny_model_dir, capsys):
    """Counted again without an overlay (other thresholds), then with one: the overlay is redrawn,
    and meanwhile no overlay of the old thresholds sits beside the new detections."""
    out_dir = tmp_path / "res"
    assert _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)[0] == 0
    assert _count([images, "-m", tiny_model_dir, "-o", out_dir, "--prob-threshold", "0.9", "--no-overlay"],
                  capsys)[0] == 0
    assert not list(out_dir.glob("*_overlay.png"))
    code, out, _ = _count([images, "-m", tiny_model_dir, "-o", out_dir, "--prob-threshold", "0.9"], capsys)
    assert code == 0 and "already done" not in out and len(list(out_dir.glob("*_overlay.png"))) == 2
    code, out, _ = _count([images, "-m", tiny_model_dir, "-o", out_dir, "--prob-threshold", "0.9"], capsys)
    assert "2 already done" in out


def test_a_model_with_other_weights_is_not_taken_as_done(images, tmp_path, tiny_model_dir, capsys):
    """Same name, version and thresholds, different weights (a retrain into a folder of the same
    name): the earlier results are not reused."""
    import shutil

    out_dir = tmp_path / "res"
    assert _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)[0] == 0
    other = tmp_path / "other" / tiny_model_dir.name
    shutil.copytree(tiny_model_dir, other)
    from eosdetect.models.store import load_model

    unet = load_model(other).unet
    unet.set_weights([w * 0.5 for w in unet.get_weights()])
    unet.save_weights(next(other.glob("*.weights.h5")))
    code, out, _ = _count([images, "-m", other, "-o", out_dir], capsys)
    assert "already done" not in out
    code, out, _ = _count([images, "-m", other, "-o", out_dir], capsys)
    assert "2 already done" in out


def test_interrupted_run_resumes(images, tmp_path, tiny_model_dir, capsys, monkeypatch):
    from eosdetect.apps.batch.run import CountRun

    out_dir = tmp_path / "res"
    real = CountRun.count_image
    calls = []

    def flaky(self, path, name, **kw):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, path, name, **kw)

    monkeypatch.setattr(CountRun, "count_image", flaky)
    code, _, err = _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)
    assert code == 130 and "re-run to resume" in err
    rows = _rows(out_dir / "counts.csv")  # complete, well-formed CSV with the finished image
    assert [r["status"] for r in rows] == ["ok"]
    monkeypatch.setattr(CountRun, "count_image", real)
    code, out, _ = _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)
    assert code == 0 and "1 already done" in out


def test_an_unexpected_error_on_one_image_does_not_stop_the_others(images, tmp_path, tiny_model_dir, capsys,
                                                                  monkeypatch):
    from eosdetect.apps.batch.run import CountRun

    real = CountRun.count_image

    def broken_on_a(self, path, name, **kw):
        if name == "a":
            raise ValueError("something of ours went wrong\nsecond line")
        return real(self, path, name, **kw)

    monkeypatch.setattr(CountRun, "count_image", broken_on_a)
    out_dir = tmp_path / "res"
    code, out, err = _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)
    assert code == 1 and "Traceback" not in err
    rows = {Path(r["image"]).stem: r for r in _rows(out_dir / "counts.csv")}
    assert rows["b"]["status"] == "ok"
    assert rows["a"]["status"] == "error"
    assert rows["a"]["error"] == "internal error (ValueError: something of ours went wrong); please report it"


def test_interruption_while_an_image_is_being_recorded_keeps_it(images, tmp_path, tiny_model_dir, capsys,
                                                                monkeypatch):
    """Ctrl-C while the first finished image is being marked done: it is still listed and not redone."""
    from eosdetect.apps.batch.run import CountRun

    out_dir = tmp_path / "res"
    real = CountRun._mark_done
    calls = []

    def interrupted_once(self, rec, fingerprint):
        calls.append(rec.name)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(self, rec, fingerprint)

    monkeypatch.setattr(CountRun, "_mark_done", interrupted_once)
    code, _, err = _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)
    assert code == 130 and "re-run to resume" in err
    first = sorted(p.name for p in images.iterdir())[0]
    assert Path(_rows(out_dir / "counts.csv")[0]["image"]).name == first
    monkeypatch.setattr(CountRun, "_mark_done", real)
    n_listed = len(_rows(out_dir / "counts.csv"))
    code, out, _ = _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)
    assert code == 0 and f"{n_listed} already done" in out


def test_bad_images_are_reported_and_skipped(images, tmp_path, tiny_model_dir, capsys):
    (images / "zero.png").write_bytes(b"")
    (images / "text.jpg").write_bytes(b"hello")
    good = (images / "a.png").read_bytes()
    from PIL import Image

    Image.fromarray(np.tile(disc_image(), (8, 8, 1))).save(images / "trunc.jpg", quality=90)
    data = (images / "trunc.jpg").read_bytes()
    (images / "trunc.jpg").write_bytes(data[: len(data) // 2])
    out_dir = tmp_path / "res"
    code, out, err = _count([images, "-m", tiny_model_dir, "-o", out_dir], capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("eosdetect: error:")]
    assert len(errors) == 3
    assert any("zero.png: empty file" in e for e in errors)
    assert any("text.jpg: not an image" in e for e in errors)
    assert any("trunc.jpg" in e and "truncated" in e for e in errors)
    assert "Traceback" not in err
    rows = {r["image"].split("/")[-1]: r for r in _rows(out_dir / "counts.csv")}
    assert rows["a.png"]["status"] == "ok" and rows["b.png"]["status"] == "ok"
    assert rows["zero.png"]["status"] == "error" and rows["zero.png"]["error"]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["images_failed"] == 3 and len(summary["failures"]) == 3
    assert (images / "a.png").read_bytes() == good  # inputs untouched


def test_formats_and_tiny_images(tmp_path, tiny_model_dir, capsys):
    import tifffile
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    img = disc_image()
    tifffile.imwrite(folder / "deep.tif", img.astype(np.uint16) * 257, photometric="rgb")
    Image.fromarray(np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(img[..., 0]).save(folder / "gray.png")
    Image.fromarray(disc_image(shape=(20, 20), centres=((10, 10),), radius=5)).save(folder / "small.png")
    out_dir = tmp_path / "res"
    code, _, err = _count([folder, "-m", tiny_model_dir, "-o", out_dir], capsys)
    assert code == 0, err
    rows = {r["image"].split("/")[-1]: r for r in _rows(out_dir / "counts.csv")}
    assert rows["small.png"]["width"] == "20" and rows["small.png"]["status"] == "ok"
    assert all(r["status"] == "ok" for r in rows.values())
    # a grey picture is counted, but a stain model may miss cells in it: said once, and in summary.json
    assert err.count("warning:") == 1 and "gray.png: a grey image, but tiny was trained on stained colour" in err
    warnings = json.loads((out_dir / "summary.json").read_text())["warnings"]
    assert [Path(w["image"]).name for w in warnings] == ["gray.png"]


def test_a_missing_file_fails_alone_and_the_output_folder_is_not_an_input(images, tmp_path, tiny_model_dir, capsys):
    import os

    os.symlink(tmp_path / "gone.png", images / "link.png")  # a broken link in the folder
    out_dir = images / "results"  # inside the input folder
    for _ in range(2):
        code, _, err = _count([images, tmp_path / "missing.png", "-m", tiny_model_dir, "-o", out_dir], capsys)
        assert code == 1 and "missing.png: no such file" in err and "link.png: no such file" in err
        rows = _rows(out_dir / "counts.csv")
        assert [(Path(r["image"]).name, r["status"]) for r in rows] == [
            ("a.png", "ok"), ("b.png", "ok"), ("link.png", "error"), ("missing.png", "error")]  # no overlays


@pytest.mark.parametrize("where", ["same", "parent", "earlier"])
def test_results_beside_the_images_or_above_them(images, tiny_model_dir, capsys, where):
    # -o the input folder (results beside the images) or a folder above it: the images are still
    # found, and on a re-run the overlays written there are not counted as images
    out_dir = {"same": images, "parent": images.parent, "earlier": images / "results-v2"}[where]
    if where == "earlier":  # results of an earlier run inside the image folder: its overlays are no images
        assert _count([images, "-m", tiny_model_dir, "-o", images / "results"], capsys)[0] == 0
    for _ in range(2):
        code, _, err = _count([images, "-m", tiny_model_dir, "-o", out_dir, "--overwrite"], capsys)
        assert code == 0, err
        assert sorted(Path(r["image"]).name for r in _rows(out_dir / "counts.csv")) == ["a.png", "b.png"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["{tmp}/missing.png"], "missing.png: no such file or folder"),
        (["{tmp}/emptydir"], "emptydir: folder holds no image files"),
        (["{img}", "-m", "no-such-model"], "unknown model 'no-such-model'; bundled models:"),
        (["{img}", "-m", "{tmp}/emptydir"], "emptydir: not a model folder (config.json is missing)"),
        (["{img}", "-m", "{tmp}/newer"], "newer than this eosdetect"),
    ],
)
def test_one_line_errors(tmp_path, images, capsys, args, message):
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "newer").mkdir()
    (tmp_path / "newer" / "config.json").write_text('{"config_version": 99}')
    args = [a.format(tmp=tmp_path, img=images / "a.png") for a in args]
    code, out, err = _count([*args, "-o", tmp_path / "res"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eosdetect: error:") and message in lines[0]


@pytest.mark.parametrize("value, message", [("-1", "must be > 0, got -1"), ("abc", "not a number: 'abc'"),
                                            ("inf", "must be a finite number"), ("nan", "must be a finite number")])
def test_usage_errors_exit_2_in_one_line(capsys, value, message):
    with pytest.raises(SystemExit) as exc:
        main(["count", "x.png", "--pixel-size", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"eosdetect count: error: argument --pixel-size: {message}" + (
        "" if value in ("-1", "abc") else f", got {value}") + " (see 'eosdetect count --help')"
    assert main([]) == 2


@pytest.mark.parametrize("argv, message", [
    (["train", "--images", "i", "--labels", "l", "-o", "m", "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["train-helper", "--images", "i", "--labels", "l", "-o", "m", "--epochs", "-1"], "must be >= 1, got -1"),
    (["serve", "--port", "70000"], "argument --port: must be between 1 and 65535, got 70000"),
])
def test_out_of_range_whole_numbers_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_library_messages_get_the_flag_that_sets_their_parameter(tmp_path, capsys):
    """The library names the parameter behind a message (the ``option`` of its errors and notices); the
    command line words it as the flag that sets it, one line each."""
    from eosdetect.annotations.voc import VocAnnotation, VocObject, write_voc

    imgs, lab, points = tmp_path / "imgs", tmp_path / "lab", tmp_path / "points"
    for folder in (imgs, lab, points):
        folder.mkdir()
    for name, verified in (("a", True), ("b", False), ("c", True)):
        write_image(imgs / f"{name}.png", disc_image())
        boxes = [VocObject("RBC", 12, 12, 28, 28)] + ([VocObject("WBC", 42, 32, 58, 48)] if name == "a" else [])
        write_voc(lab / f"{name}.xml", VocAnnotation(f"{name}.png", 80, 64, verified=verified, objects=boxes))
    (points / "a.csv").write_text("x,y\n20,20\n")
    (tmp_path / "all.csv").write_text("image,x,y\na.png,20,20\n")

    def stderr(*args, code=1):
        assert main(["train", "--images", str(imgs), "-o", str(tmp_path / "m"), "--dry-run", *map(str, args)]) == code
        return capsys.readouterr().err.strip().splitlines()

    assert stderr("--labels", lab) == [
        "eosdetect: error: the labels hold several classes (RBC, WBC); choose one (--class)"]
    assert stderr("--labels", lab, "--label-format", "points", "--cell-diameter", "16") == [
        f"eosdetect: error: {lab}: holds no label files of the points format (.csv named like the images); "
        "choose the labels' format (--label-format)"]
    assert stderr("--labels", points, "--label-format", "points", "--cell-diameter", "16") == [
        f"eosdetect: error: {imgs / 'b.png'}: no label file for this image (2 image(s) without labels); they may "
        "be taken as having no objects if they truly have none (--allow-unlabelled-as-empty)"]
    assert stderr("--labels", tmp_path / "all.csv", "--class", "RBC") == [
        f"eosdetect: error: {tmp_path / 'all.csv'}: must be a folder for the voc format (--labels)"]
    assert stderr("--labels", lab, "--class", "RBC", "--verified-only", code=0)[0] == (
        "eosdetect: warning: 1 unverified label file(s) skipped (--verified-only)")
    for name in ("a", "c"):
        write_voc(lab / f"{name}.xml", VocAnnotation(f"{name}.png", 80, 64, objects=[VocObject("RBC", 12, 12, 28, 28)]))
    assert stderr("--labels", lab, "--class", "RBC", "--verified-only") == [
        f"eosdetect: error: {lab}: no label file is marked verified (3 unverified skipped: only verified ones were "
        "asked for); save them with 'Verify Image' in LabelImg (--verified-only)"]


def test_a_decoders_warning_names_the_image_once_during_the_run(tmp_path, tiny_model_dir, capsys, caplog):
    """The CLI routes Pillow's warnings to the image being read for its run (the library does not), and
    leaves Python's warning hook as it was afterwards."""
    import struct
    import warnings

    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    exif = b"II*\x00" + struct.pack("<IHHHIII", 8, 1, 270, 2, 200, 5000, 0)  # EXIF pointing past its end
    Image.fromarray(disc_image()).save(folder / "exif.jpg", exif=b"Exif\x00\x00" + exif)
    shown = warnings.showwarning
    caplog.set_level("WARNING")
    for again in ([], ["--overwrite"]):  # the image read twice in one process
        code, _, err = _count([folder, "-m", tiny_model_dir, "-o", tmp_path / "res", *again], capsys)
        assert code == 0, err
    named = [r.getMessage() for r in caplog.records if "Tag data" in r.getMessage()]
    assert named == [f"{folder / 'exif.jpg'}: Tag data larger than file. Skipping tag 270"]  # named, once
    assert warnings.showwarning is shown


def test_the_flag_table_names_only_flags_the_command_line_has():
    import argparse

    from eosdetect.apps.cli import FLAGS, _with_flag, build_parser
    from eosdetect.errors import ConfigError, Notice

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {f for p in subparsers.choices.values() for a in p._actions for f in a.option_strings}
    assert {f for text in FLAGS.values() for f in text.replace(",", " ").split() if f.startswith("--")} <= flags
    refused = ConfigError("m/.train: the interrupted training had other settings; resume it with the same images, "
                          "labels and options, or start afresh", option="resume")
    assert _with_flag(refused).endswith("or start afresh (--overwrite, not --resume)")
    assert _with_flag(Notice("3 box(es) skipped")) == "3 box(es) skipped" == _with_flag("3 box(es) skipped")


def test_validation_line_says_when_nothing_was_there_to_find():
    from eosdetect.apps.cli import _validation_line

    assert _validation_line({"n_images": 1, "tp": 0, "fp": 2, "fn": 0, "f1": 1.0}).startswith(
        "validation F1 not measured: no labelled cell among the 1 validation image(s) (2 detection(s) there)")
    assert _validation_line({"n_images": 3, "tp": 4, "fp": 1, "fn": 1, "f1": 0.8, "precision": 0.8,
                             "recall": 0.8}) == "validation F1 0.800 (precision 0.800, recall 0.800) on 3 image(s)"


def test_count_line_names_the_class_in_plural():
    from eosdetect.apps.cli import _noun

    assert [_noun(1, "eosinophil"), _noun(3, "eosinophil"), _noun(2, "nucleus"), _noun(0, "cells")] == [
        "1 eosinophil", "3 eosinophils", "2 nuclei", "0 cells"]


def test_pixel_size_gives_densities(images, tmp_path, tiny_model_dir, capsys):
    out_dir = tmp_path / "res"
    code, _, err = _count([images, "-m", tiny_model_dir, "-o", out_dir, "--pixel-size", "0.5"], capsys)
    assert code == 0, err
    row = _rows(out_dir / "counts.csv")[0]
    assert float(row["area_mm2"]) == pytest.approx(80 * 64 * 0.0005**2, rel=1e-3)
    # the tiny model counts "cell": no standard per-HPF cut-off, so no flag unless one is given
    assert row["hpf_flag"] == ""
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["clinical"]["hpf_area_mm2"] == 0.24
    assert summary["clinical"]["flag"] is None and summary["clinical"]["threshold"] is None
    code, _, err = _count([images, "-m", tiny_model_dir, "-o", out_dir, "--pixel-size", "0.5", "--threshold", "0"],
                          capsys)
    assert code == 0, err
    assert _rows(out_dir / "counts.csv")[0]["hpf_flag"] == "yes"  # new settings: recounted, flagged
    assert json.loads((out_dir / "summary.json").read_text())["clinical"]["flag"] is True


def test_pixel_size_with_a_model_sized_in_pixels_serves_densities_only(images, tmp_path, tiny_model_dir, capsys):
    import shutil

    model = tmp_path / "px-model"
    shutil.copytree(tiny_model_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "pixel_size_measured": False}))
    code, _, err = _count([images, "-m", model, "-o", tmp_path / "plain"], capsys)
    assert code == 0, err
    code, _, err = _count([images, "-m", model, "-o", tmp_path / "px", "--pixel-size", "0.2"], capsys)
    assert code == 0 and "trained without a pixel size" in err and "densities only" in err
    plain, px = _rows(tmp_path / "plain" / "counts.csv"), _rows(tmp_path / "px" / "counts.csv")
    assert [r["count"] for r in px] == [r["count"] for r in plain]  # 0.2 um/px would be 5x smaller if rescaled
    assert float(px[0]["area_mm2"]) == pytest.approx(80 * 64 * 0.0002**2, rel=1e-3)
    assert "densities only" in json.loads((tmp_path / "px" / "summary.json").read_text())["settings"]["pixel_size_source"]


def test_absurd_pixel_size_is_one_error_before_any_image(images, tmp_path, tiny_model_dir, capsys):
    out_dir = tmp_path / "res"
    code, _, err = _count([images, "-m", tiny_model_dir, "-o", out_dir, "--pixel-size", "5000"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "check the pixel size" in err
    assert not out_dir.exists()


def test_models_command(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "eosinophil-smear (default)" in out and "nuclei-he" in out
    from eosdetect.models.store import load_model

    cv = load_model("eosinophil-smear").metrics["crossval"]["pooled"]["f1"]
    assert f"5-fold cross-validated F1 {cv:.3f}" in out.splitlines()[0]  # the honest figure, next to fold 0's
    assert main(["models", "nuclei-he"]) == 0
    assert "# nuclei-he" in capsys.readouterr().out


def test_output_folder_that_is_a_file(images, tmp_path, tiny_model_dir, capsys):
    blocker = tmp_path / "res"
    blocker.write_text("I am a file")
    code, _, err = _count([images, "-m", tiny_model_dir, "-o", blocker], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "res" in err and "a file is in the way" in err
    assert blocker.read_text() == "I am a file"


def test_output_into_a_closed_pipe_is_quiet():
    """`eosdetect models | head -1`: the reader leaves early; no traceback, no error line."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "eosdetect", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "error" not in err, err


def test_eosinophil_models_are_flagged_at_15_per_hpf_by_default(images, tmp_path, tiny_model_dir, capsys):
    import shutil

    model = tmp_path / "eos-model"
    shutil.copytree(tiny_model_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["class_name"] = cfg["unet_class_name"] = "eosinophil"
    (model / "config.json").write_text(json.dumps(cfg))
    out_dir = tmp_path / "res"
    code, _, err = _count([images, "-m", model, "-o", out_dir, "--pixel-size", "0.5"], capsys)
    assert code == 0, err
    rows = _rows(out_dir / "counts.csv")
    # photos of 1/190 of a field: the flag judges each one's estimate from its density
    assert [r["hpf_basis"] for r in rows] == ["estimate", "estimate"]
    assert [r["hpf_flag"] for r in rows] == ["yes" if float(r["per_hpf"]) >= 15 else "no" for r in rows]
    clinical = json.loads((out_dir / "summary.json").read_text())["clinical"]
    assert clinical["threshold"] == 15 and clinical["flag"] is (clinical["per_hpf"] >= 15)
    # the clinical summary on the screen; images smaller than an HPF are said to be so
    density = sum(int(r["count"]) for r in rows) / sum(float(r["area_mm2"]) for r in rows)
    assert clinical["density_per_hpf"] == pytest.approx(density * 0.24, rel=1e-3)
    code, out, err = _count([images, "-m", model, "-o", out_dir, "--pixel-size", "0.5"], capsys)
    assert f"per field by density; flag: {'YES' if clinical['flag'] else 'no'} (threshold 15 per field)" in out
    assert "every image is smaller than a high-power field" in err and "note" in clinical
    # a field no larger than the images: no note
    code, out, err = _count([images, "-m", model, "-o", out_dir, "--pixel-size", "0.5", "--hpf-area", "0.001"],
                            capsys)
    assert "smaller than a high-power field" not in err
    assert "note" not in json.loads((out_dir / "summary.json").read_text())["clinical"]


def test_summary_density_counts_only_the_images_of_known_area(tmp_path, tiny_model_dir):
    """A slide with its pixel size in the file, counted with photos of unknown pixel size."""
    import time

    from eosdetect.apps.batch.run import CountRun, CountSettings
    from eosdetect.apps.batch.tables import CountRow, ImageRecord
    from eosdetect.models.store import load_model

    run = CountRun(load_model(tiny_model_dir), tmp_path, CountSettings())
    run.records = [
        ImageRecord("slide.svs", "slide", row=CountRow("slide.svs", count=10, area_mm2=10.0, peak_hpf_count=2)),
        ImageRecord("a.png", "a", row=CountRow("a.png", count=500)),
        ImageRecord("b.png", "b", row=CountRow("b.png", count=500)),
    ]
    run._write_tables(time.time(), partial=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["total_count"] == 1010
    assert summary["clinical"]["density_per_mm2"] == 1.0 and summary["clinical"]["images_with_area"] == 1


def test_a_file_name_that_is_not_utf8(tmp_path, tiny_model_dir, capsys):
    """Latin-1 names (unzipped from an old archive): counted, pre-labelled and evaluated like any other
    (was a crash of the whole run). Issue 20, case 5: where a table, XML or message needs text, each odd
    byte is written ``\\xNN`` (was U+FFFD, which mangled the name and made two names differing only
    there collide), and counts.csv says each row's output name."""
    import os

    folder = tmp_path / "imgs"
    folder.mkdir()
    try:
        odd = Path(os.fsdecode(bytes(folder) + b"/caf\xe9.png"))
        write_image(odd, disc_image())
        write_image(Path(os.fsdecode(bytes(folder) + b"/caf\xe8.png")), disc_image())
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    (folder / "bad\udce9.jpg").write_bytes(b"not an image")
    code, _, err = _count([folder, "-m", tiny_model_dir, "-o", tmp_path / "res"], capsys)
    assert code == 1 and "bad\\xe9.jpg: not an image file" in err
    rows = _rows(tmp_path / "res" / "counts.csv")
    assert [(Path(r["image"]).name, r["output_name"], r["status"]) for r in rows] == [
        ("bad\\xe9.jpg", "bad\\xe9", "error"), ("caf\\xe8.png", "caf\\xe8", "ok"), ("caf\\xe9.png", "caf\\xe9", "ok")]
    assert (tmp_path / "res" / f"{odd.stem}_overlay.png").is_file()
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert summary["failures"][0]["image"] == rows[0]["image"]
    _, out, _ = _count([folder, "-m", tiny_model_dir, "-o", tmp_path / "res"], capsys)
    assert "(2 already done" in out  # resumes
    (folder / "bad\udce9.jpg").unlink()
    assert main(["prelabel", str(folder), "-m", str(tiny_model_dir), "-o", str(tmp_path / "xml")]) == 0
    assert main(["prelabel", str(folder), "-m", str(tiny_model_dir), "-o", str(tmp_path / "xml")]) == 0  # its own
    from eosdetect.annotations.voc import read_voc

    assert read_voc(tmp_path / "xml" / f"{odd.stem}.xml").filename == "caf\\xe9.png"
    assert main(["evaluate", "--images", str(folder), "--labels", str(tmp_path / "xml"), "-m", str(tiny_model_dir),
                 "-o", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / f"{odd.stem}_errors.png").is_file()


def test_folders_counted_one_by_one_into_one_results_folder_keep_their_results(tmp_path, tiny_model_dir, capsys):
    res = tmp_path / "res"
    for slide, centres in (("slideA", ((20, 20),)), ("slideB", ((20, 20), (40, 40)))):
        (tmp_path / slide).mkdir()
        write_image(tmp_path / slide / "x.png", disc_image(centres=centres))
    assert _count([tmp_path / "slideA", "-m", tiny_model_dir, "-o", res], capsys)[0] == 0
    first = (res / "x_detections.csv").read_bytes()
    assert _count([tmp_path / "slideB", "-m", tiny_model_dir, "-o", res], capsys)[0] == 0
    assert (res / "x_detections.csv").read_bytes() == first  # slideA's results are not replaced
    assert (res / "slideB__x_overlay.png").is_file()
    assert [Path(r["image"]).parent.name for r in _rows(res / "counts.csv")] == ["slideB"]
    # slideA again, by another spelling of its path: done already, under its own name
    _, out, _ = _count([(tmp_path / "slideA").resolve(), "-m", tiny_model_dir, "-o", res], capsys)
    assert "(1 already done" in out and (res / "x_detections.csv").read_bytes() == first


def test_folders_counted_from_inside_each_keep_their_results(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """The same, with the image named relative to each folder (cd slideA; count x.png -o ../res)."""
    res = tmp_path / "res"
    for slide, centres in (("slideA", ((20, 20),)), ("slideB", ((20, 20), (40, 40)))):
        (tmp_path / slide).mkdir()
        write_image(tmp_path / slide / "x.png", disc_image(centres=centres))
        monkeypatch.chdir(tmp_path / slide)
        assert _count(["x.png", "-m", tiny_model_dir, "-o", res], capsys)[0] == 0
    assert sorted(p.name for p in res.glob("*_detections.csv")) == ["slideB__x_detections.csv", "x_detections.csv"]


def test_output_names_unique_after_cleaning_and_short(tmp_path):
    from eosdetect.apps.batch.naming import MAX_NAME_BYTES, output_names

    names = output_names([Path("d/t:1.png"), Path("d/t_1.png")])
    assert names == ["t_1", "t_1__2"]
    long = "é" * 120  # 240 bytes: with '_detections.csv' and a temporary file, over the 255-byte limit
    a, b = output_names([Path(f"d/{long}a.png"), Path(f"d/{long}b.png")])
    assert a != b and max(len(a.encode()), len(b.encode())) <= MAX_NAME_BYTES
    assert output_names([Path("d/x.png")], taken={"x"}) == ["x__2"]


def test_a_three_way_name_clash_keeps_the_readme_rule(tmp_path, tiny_model_dir):
    """Issue 20, case 6: ``a/x.jpg``, ``a/x.png`` and ``b/x.jpg`` once gave ``x.jpg_*``, ``x.png_*`` and ``x_*``:
    ``b/x.jpg`` lost its folder although its stem is shared with another folder's images."""
    import cv2

    from eosdetect.apps.batch.naming import output_names

    assert output_names([Path("a/x.jpg"), Path("a/x.png"), Path("b/x.jpg")]) == ["a__x.jpg", "a__x.png", "b__x"]
    assert output_names([Path("d1/a/x.jpg"), Path("d2/a/x.jpg")]) == ["d1__a__x", "d2__a__x"]
    img = np.full((48, 64, 3), 200, np.uint8)
    for rel in ("a/x.jpg", "a/x.png", "b/x.jpg"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        write_image(tmp_path / rel, img) if rel.endswith(".png") else cv2.imwrite(str(tmp_path / rel), img)
    out = tmp_path / "out"
    assert main(["count", str(tmp_path / "a"), str(tmp_path / "b"), "-m", str(tiny_model_dir), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*_detections.csv")) == [
        "a__x.jpg_detections.csv", "a__x.png_detections.csv", "b__x_detections.csv"]


def test_a_long_file_name_is_counted(tmp_path, tiny_model_dir, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image = folder / ("slide_" + "é" * 110 + ".png")  # 226 bytes: a valid name
    write_image(image, disc_image())
    code, _, err = _count([folder, "-m", tiny_model_dir, "-o", tmp_path / "res"], capsys)
    assert code == 0, err
    assert len(list((tmp_path / "res").glob("slide_*_overlay.png"))) == 1


def test_an_image_that_fails_now_loses_its_earlier_results(images, tmp_path, tiny_model_dir, capsys):
    res = tmp_path / "res"
    assert _count([images, "-m", tiny_model_dir, "-o", res], capsys)[0] == 0
    (images / "a.png").write_bytes((images / "a.png").read_bytes()[:100])  # truncated since
    assert _count([images, "-m", tiny_model_dir, "-o", res], capsys)[0] == 1
    assert not (res / "a_detections.csv").exists() and not (res / "a_overlay.png").exists()
    assert (res / "b_detections.csv").exists()


def test_an_early_interrupt_or_sigterm_stops_without_a_traceback(tmp_path, monkeypatch, capsys):
    import os
    import signal

    import eosdetect.apps.cli as cli

    def interrupted(*a):
        raise KeyboardInterrupt

    import eosdetect.models.store as store

    monkeypatch.setattr(store, "load_model", interrupted)  # Ctrl-C while the model loads
    write_image(tmp_path / "a.png", disc_image())
    assert main(["count", str(tmp_path), "-o", str(tmp_path / "r")]) == 130
    assert capsys.readouterr().err.strip() == "eosdetect: interrupted; finished images are kept, re-run to resume"
    old = signal.getsignal(signal.SIGTERM)
    try:
        monkeypatch.setattr(cli, "_load_tensorflow", lambda *a: os.kill(os.getpid(), signal.SIGTERM))
        assert main(["train-helper", "--images", "i", "--labels", "l", "-o", str(tmp_path / "m")]) == 130
        assert "interrupted; no model was written" in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGTERM, old)


def test_readme_quick_start_counts_the_drawn_eosinophils(tmp_path):
    """The README's first command, on the shipped synthetic samples: the bundled
    model counts the eosinophils drawn (data/samples/truth.csv), where they are,
    and none of the neutrophils."""
    from eosdetect.core.metrics import match_points

    samples = Path(__file__).resolve().parent.parent / "data" / "samples"
    assert main(["count", str(samples), "-o", str(tmp_path)]) == 0
    truth = list(csv.DictReader(open(samples / "truth.csv")))
    for row in _rows(tmp_path / "counts.csv"):
        name = Path(row["image"]).name
        true = np.array([[float(t["x"]), float(t["y"])] for t in truth if t["image"] == name]).reshape(-1, 2)
        found = _rows(tmp_path / name.replace(".jpg", "_detections.csv"))
        xy = np.array([[float(d["x"]), float(d["y"])] for d in found]).reshape(-1, 2)
        m = match_points(xy, true, radius=40.0)
        assert m.tp == len(true) and m.fp == 0, (name, xy, true)


@pytest.fixture
def dark_model(tmp_path, monkeypatch):
    """An eosinophil model whose 'U-Net' calls dark pixels cells (every disc of :func:`disc_image` is one),
    loaded by ``eosdetect count -m`` its folder."""
    import eosdetect.models.store as store
    from eosdetect.models.config import ModelConfig, Thresholds
    from eosdetect.models.model import Model

    folder = tmp_path / "dark-model"
    folder.mkdir()
    cfg = ModelConfig(name="dark", class_name="eosinophil", unet_class_name="eosinophil", unet_depth=2,
                      tile_size=64, pixel_size_um=1.0, input_pixel_size_um=1.0)
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    model = Model(folder, cfg, Thresholds(min_distance_um=3, smooth_um=0.5, seed_h_um=0.5, min_area_um2=5))
    model._predict_fn = lambda batch: (batch.mean(axis=-1) < 0.6).astype(np.float32)
    real = store.load_model
    monkeypatch.setattr(store, "load_model", lambda path=None: model if str(path) == str(folder) else real(path))
    return folder


def test_a_folder_of_photos_smaller_than_a_field_reports_estimates(images, tmp_path, dark_model, capsys):
    """80x64-px photos at 1 um/px (0.021 of a 0.24 mm^2 field): 2 cells and 1 cell are ~94 and ~47 per HPF by
    density, no peak anywhere, and the flag judges the highest estimate (it said 'peak 2', not flagged)."""
    out_dir = tmp_path / "res"
    code, out, err = _count([images, "-m", dark_model, "-o", out_dir, "--pixel-size", "1"], capsys)
    assert code == 0, err
    rows = {Path(r["image"]).name: r for r in _rows(out_dir / "counts.csv")}
    assert [rows[n]["count"] for n in ("a.png", "b.png")] == ["2", "1"]
    assert {n: (r["peak_hpf_count"], r["per_hpf"], r["hpf_basis"], r["hpf_flag"]) for n, r in rows.items()} == {
        "a.png": ("", "93.8", "estimate", "yes"), "b.png": ("", "46.9", "estimate", "yes")}
    clinical = json.loads((out_dir / "summary.json").read_text())["clinical"]
    assert (clinical["per_hpf"], clinical["per_hpf_basis"], Path(clinical["per_hpf_image"]).name) == \
        (93.8, "estimate", "a.png")
    assert clinical["peak_hpf_count"] is None and clinical["peak_hpf_image"] is None
    assert clinical["images_smaller_than_field"] == 2 and clinical["per_hpf_image_fields"] == 0.0213
    assert clinical["flag"] is True and clinical["density_per_hpf"] == pytest.approx(70.31, abs=0.01)
    assert "~93.8 per high-power field, estimated from density (a.png: it covers 0.021 of a field); " \
           "mean 70.3 per field by density; flag: YES (threshold 15 per field)" in out
    assert "Peak" not in out
    assert err.count("every image is smaller than a high-power field") == 1 and "note" in clinical
    # a re-run takes the rows from its records: the same figures
    code, out, _ = _count([images, "-m", dark_model, "-o", out_dir, "--pixel-size", "1"], capsys)
    assert "2 already done" in out and json.loads((out_dir / "summary.json").read_text())["clinical"] == clinical


def test_a_mix_of_photos_and_a_larger_image_reports_the_highest_figure(images, tmp_path, dark_model, capsys):
    """A 600x600-px image at 1 um/px (1.5 fields) has a peak; the small photos beside it an estimate each;
    the run reports the highest of these figures, saying which it is, and no note."""
    write_image(images / "c.png", disc_image(shape=(600, 600), centres=((100, 100), (120, 160), (500, 500))))
    out_dir = tmp_path / "res"
    code, out, err = _count([images, "-m", dark_model, "-o", out_dir, "--pixel-size", "1"], capsys)
    assert code == 0, err
    rows = {Path(r["image"]).name: r for r in _rows(out_dir / "counts.csv")}
    assert (rows["c.png"]["peak_hpf_count"], rows["c.png"]["per_hpf"], rows["c.png"]["hpf_basis"]) == \
        ("3", "3", "peak")
    assert rows["c.png"]["hpf_flag"] == "no" and rows["a.png"]["hpf_basis"] == "estimate"
    clinical = json.loads((out_dir / "summary.json").read_text())["clinical"]
    assert (clinical["per_hpf"], clinical["per_hpf_basis"], Path(clinical["per_hpf_image"]).name) == \
        (93.8, "estimate", "a.png")
    assert (clinical["peak_hpf_count"], Path(clinical["peak_hpf_image"]).name) == (3, "c.png")
    assert clinical["images_smaller_than_field"] == 2 and "note" not in clinical
    assert "~93.8 per high-power field, estimated from density (a.png: it covers 0.021 of a field)" in out
    assert "smaller than a high-power field" not in err
    # with a field of 70x70 px, no larger than the photos, every image has a peak: the highest, 2, first in a.png
    code, out, err = _count([images, "-m", dark_model, "-o", out_dir, "--pixel-size", "1", "--hpf-area", "0.005"],
                            capsys)
    clinical = json.loads((out_dir / "summary.json").read_text())["clinical"]
    assert (clinical["per_hpf"], clinical["per_hpf_basis"], clinical["images_smaller_than_field"]) == (2, "peak", 0)
    assert clinical["peak_hpf_count"] == 2 and {r["hpf_basis"] for r in _rows(out_dir / "counts.csv")} == {"peak"}
    assert "Peak 2 per high-power field (a.png); mean " in out and "estimated" not in out


def test_count_rows_keep_the_per_hpf_figure_through_a_resume_record():
    from eosdetect.apps.batch.tables import COUNT_COLUMNS, CountRow

    i = COUNT_COLUMNS.index("hpf_flag")
    assert COUNT_COLUMNS[i + 1:i + 3] == ("per_hpf", "hpf_basis")
    row = CountRow("a.png", count=2, area_mm2=0.00512, per_hpf=93.8, hpf_basis="estimate", hpf_flag=True)
    assert CountRow.from_dict(row.to_dict()) == row
    assert row.cells(("peak_hpf_count", "per_hpf", "hpf_basis", "hpf_flag")) == ["", 93.8, "estimate", "yes"]
    old = {"image": "a.png", "status": "ok", "count": 2, "peak_hpf_count": 2, "hpf_flag": False}  # an older record
    assert CountRow.from_dict(old) == CountRow("a.png", count=2, peak_hpf_count=2, hpf_flag=False)


@pytest.mark.parametrize("args, words", [
    (["count", "{tmp}/missing", "-o", "{tmp}/out"], "no such file or folder"),
    (["count", "{tmp}/a.png", "-m", "no-such-model", "-o", "{tmp}/out"], "unknown model 'no-such-model'"),
    (["count", "{tmp}/a.png", "--pixel-size", "50", "-o", "{tmp}/out"], "check the pixel size"),
    (["prelabel", "{tmp}/missing"], "no such file or folder"),
    (["evaluate", "--images", "{tmp}", "--labels", "{tmp}", "-m", "nuclei"], "unknown model 'nuclei'"),
])
def test_a_usage_mistake_is_answered_before_anything_heavy_loads(tmp_path, args, words):
    """Issue 21: a typo, a missing folder, an unknown model or an impossible --pixel-size was reported
    only after TensorFlow's import (5-7 s); now before it, and before the image-processing stack.
    (Times are measured by scripts/bench_startup.py, not here.)"""
    import subprocess

    code = ("import sys\n"
            "from eosdetect.apps.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'skimage') if m in sys.modules)\n"
            "print('heavy', heavy, file=sys.stderr)\n"
            "sys.exit(rc)\n")
    write_image(tmp_path / "a.png", disc_image())
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert words in proc.stderr and "heavy []" in proc.stderr, proc.stderr


def test_count_exports_qupath_geojson_that_reads_back_as_the_counted_cells(tmp_path, capsys):
    """``--export geojson --export napari``: one <name>.geojson and <name>_napari.csv per image, its eosinophil cells those of the
    detections CSV, the same bytes on a re-count, and a resume that asks for the export it lacks."""
    from eosdetect.annotations.geojson import read_geojson
    from eosdetect.annotations.napari import read_napari_points
    from eosdetect.io import read_csv

    samples = Path(__file__).resolve().parents[1] / "data" / "samples"
    out = tmp_path / "r"
    assert main(["count", str(samples), "-o", str(out)]) == 0
    assert not list(out.glob("*.geojson"))
    assert main(["count", str(samples), "-o", str(out), "--export", "geojson", "--export", "napari"]) == 0
    assert json.loads((out / "summary.json").read_text())["images_skipped_as_done"] == 0  # the export was missing
    capsys.readouterr()
    rows = {r["output_name"]: r for r in read_csv(out / "counts.csv")}
    for name, row in rows.items():
        cells = [o for o in read_geojson(out / f"{name}.geojson") if o.object_type == "detection"]
        counted = [o for o in cells if o.class_name == "eosinophil"]
        assert len(counted) == int(row["count"])
        det = read_csv(out / f"{name}_detections.csv")
        got = sorted((round(o.xy[0]), round(o.xy[1])) for o in counted)
        want = sorted((round(float(d["x"])), round(float(d["y"]))) for d in det)
        assert np.abs(np.array(got, float).reshape(-1, 2) - np.array(want, float).reshape(-1, 2)).max(initial=0) <= 2
        assert all(len(o.rings) and o.class_name for o in cells)
    napari = read_napari_points(out / "synthetic_smear_02_napari.csv")  # every white cell, with its class
    assert napari.classes.count("eosinophil") == int(rows["synthetic_smear_02"]["count"])
    first = (out / "synthetic_smear_02.geojson").read_bytes()
    assert main(["count", str(samples), "-o", str(out), "--export", "geojson"]) == 0
    assert json.loads((out / "summary.json").read_text())["images_skipped_as_done"] == 3  # resumed
    assert main(["count", str(samples), "-o", str(out), "--export", "geojson", "--overwrite"]) == 0
    assert (out / "synthetic_smear_02.geojson").read_bytes() == first  # ids drawn from the file name
    assert main(["count", str(samples), "-o", str(out), "--overwrite"]) == 0
    assert not list(out.glob("*.geojson")) + list(out.glob("*_napari.csv"))  # no stale export beside new results
