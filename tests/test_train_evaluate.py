"""The researcher's commands: `eosdetect evaluate` and `eosdetect train` (tiny models, synthetic images)."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from conftest import disc_image
from eosdetect.apps.cli import main

TINY_CONFIG = """
model:
  unet_depth: 2
  unet_base_filters: 4
  tile_size: 64
train:
  train_epochs: {epochs}
  train_steps_per_epoch: 3
  train_batch_size: 4
  train_patch_size: 32
threshold_grid:
  prob_threshold: [0.4, 0.6]
"""


def _dataset(root, n=5, seed=0):
    """Synthetic images of purple discs with point labels (CSV per image)."""
    rng = np.random.default_rng(seed)
    imgs, labs = root / "images", root / "labels"
    imgs.mkdir(parents=True)
    labs.mkdir()
    for i in range(n):
        centres = [(int(rng.integers(10, 54)), int(rng.integers(10, 70))) for _ in range(3)]
        Image.fromarray(disc_image(shape=(64, 80), centres=centres, radius=6)).save(imgs / f"img{i}.png")
        rows = "".join(f"{c},{r}\n" for r, c in centres)
        (labs / f"img{i}.csv").write_text("x,y\n" + rows)
    return imgs, labs


def test_evaluate_writes_full_report(tmp_path, tiny_model_dir, capsys):
    imgs, labs = _dataset(tmp_path / "d", n=3)
    out = tmp_path / "report"
    rc = main(["evaluate", "-m", str(tiny_model_dir), "--images", str(imgs), "--labels", str(labs),
               "--label-format", "points", "-o", str(out), "--count-threshold", "2"])
    assert rc == 0
    assert "F1" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    s = m["summary"]
    assert s["n_images"] == 3 and s["tp"] + s["fn"] == 9
    assert m["count_agreement"]["images"] == 3 and m["settings"]["match_radius_um"] == 5.0
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["image"] for r in rows] == ["img0", "img1", "img2"]
    assert sum(int(r["tp"]) for r in rows) == s["tp"] and sum(int(r["fp"]) for r in rows) == s["fp"]
    pr = list(csv.DictReader(open(out / "pr_curve.csv")))
    assert len(pr) == 19 and pr[0]["prob_threshold"] == "0.05"
    for row in pr:  # a threshold where nothing is detected has no precision (not a perfect 1.0)
        assert (row["precision"] == "") == (int(row["tp"]) + int(row["fp"]) == 0), row
    for name in ("pr_curve.png", "img0_errors.png", "img2_errors.png"):
        im = Image.open(out / name)
        assert im.size[0] > 50
    # numbers equal the library's evaluation
    from eosdetect.models.store import load_model
    from eosdetect.training.evaluation import evaluate_model
    from eosdetect.training.labelset import eval_item, load_labelled

    items, _ = load_labelled(imgs, labs, "points")
    ev = evaluate_model(load_model(tiny_model_dir), [eval_item(it, 5.0) for it in items])
    assert ev["summary"] == s


def test_evaluate_bad_labels_are_one_line_errors(tmp_path, tiny_model_dir, capsys):
    imgs, labs = _dataset(tmp_path / "d", n=2)
    (labs / "img1.csv").unlink()
    rc = main(["evaluate", "-m", str(tiny_model_dir), "--images", str(imgs), "--labels", str(labs),
               "--label-format", "points", "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0 and "img1.png: no label file" in err
    rc = main(["evaluate", "-m", str(tiny_model_dir), "--images", str(imgs), "--labels", str(tmp_path / "nope"),
               "--label-format", "points"])
    assert rc == 1 and "no such label file or folder" in capsys.readouterr().err


@pytest.mark.slow
def test_train_writes_a_complete_model_folder_that_counts(tmp_path, capsys):
    imgs, labs = _dataset(tmp_path / "d", n=5)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG.format(epochs=2))
    out = tmp_path / "my-model"
    args = ["train", "--images", str(imgs), "--labels", str(labs), "--label-format", "points",
            "--cell-diameter", "12", "--config", str(cfg), "-o", str(out)]
    assert main(args + ["--dry-run"]) == 0
    assert len(list((out / "dry-run").glob("*_target.png"))) == 5
    assert "4 for training, 1 for validation" in capsys.readouterr().out
    assert main(args) == 0
    for name in ("config.json", "weights.weights.h5", "thresholds.json", "metrics.json", "MODEL_CARD.md",
                 "training_log.csv"):
        assert (out / name).is_file(), name
    assert not (out / ".train").exists()  # checkpoints cleaned up
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["validation_images"] and metrics["training"]["train"]["train_epochs"] == 2
    thr = json.loads((out / "thresholds.json").read_text())
    assert thr["prob_threshold"] in (0.4, 0.6)
    assert "eosdetect train" in (out / "MODEL_CARD.md").read_text()
    # the new folder is a model like any other
    assert main(["count", str(imgs / "img0.png"), "-m", str(out), "-o", str(tmp_path / "res")]) == 0
    # refuses to replace it without --overwrite
    capsys.readouterr()
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_training_resumes_after_an_interruption(tmp_path):
    import keras

    from eosdetect.training.labelset import load_labelled
    from eosdetect.training.train import train_from_labels

    imgs, labs = _dataset(tmp_path / "d", n=4)
    items, _ = load_labelled(imgs, labs, "points")
    import yaml

    file_cfg = yaml.safe_load(TINY_CONFIG.format(epochs=3))
    out = tmp_path / "m"

    class Interrupt(keras.callbacks.Callback):  # a user pressing Ctrl-C in the middle of epoch 2
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_from_labels(items, out, file_cfg=file_cfg, cell_diameter_um=12, verbose=0,
                          extra_callbacks=[Interrupt()])
    assert (out / ".train").is_dir() and not (out / "metrics.json").exists()
    # resuming with other images or options is refused, and leaves the checkpoints for the right command
    from eosdetect.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\.train: the interrupted training had other train images \(img\d \d+ -> "
                                          r"\(none\)\);.*or start afresh$") as exc:
        train_from_labels(items[:3], out, file_cfg=file_cfg, cell_diameter_um=12, verbose=0, resume=True)
    assert exc.value.option == "resume"  # the CLI words it: --overwrite, not --resume
    with pytest.raises(ConfigError, match=r"had other model, thresholds \(cell_diameter_um 12 -> 14;"):
        train_from_labels(items, out, file_cfg=file_cfg, cell_diameter_um=14, verbose=0, resume=True)
    train_from_labels(items, out, file_cfg=file_cfg, cell_diameter_um=12, verbose=0, resume=True)
    log = list(csv.DictReader(open(out / "training_log.csv")))
    assert [int(r["epoch"]) for r in log] == [0, 1, 2]  # epoch 1 was redone, none repeated twice
    assert (out / "metrics.json").is_file() and not (out / ".train").exists()


@pytest.mark.slow
def test_resume_after_the_unet_finished_keeps_it(tmp_path, monkeypatch):
    # interrupted while the thresholds are fitted: Keras has already removed its backup, and
    # --resume must not train the U-Net again from its first epoch
    import keras
    import yaml

    from eosdetect.training import evaluation
    from eosdetect.training.labelset import load_labelled
    from eosdetect.training.train import train_from_labels

    imgs, labs = _dataset(tmp_path / "d", n=4)
    items, _ = load_labelled(imgs, labs, "points")
    file_cfg = yaml.safe_load(TINY_CONFIG.format(epochs=2))
    out = tmp_path / "m"
    epochs = []

    class Seen(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs.append(epoch)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    real_fit = evaluation.fit_thresholds
    monkeypatch.setattr(evaluation, "fit_thresholds", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_from_labels(items, out, file_cfg=file_cfg, cell_diameter_um=12, verbose=0, extra_callbacks=[Seen()])
    assert epochs == [0, 1]
    monkeypatch.setattr(evaluation, "fit_thresholds", real_fit)
    train_from_labels(items, out, file_cfg=file_cfg, cell_diameter_um=12, verbose=0, resume=True,
                      extra_callbacks=[Seen()])
    assert epochs == [0, 1]  # nothing trained again
    log = list(csv.DictReader(open(out / "training_log.csv")))
    assert [int(r["epoch"]) for r in log] == [0, 1]
    assert (out / "metrics.json").is_file() and not (out / ".train").exists()


def _disc_finder(**cfg):
    """A base model whose 'U-Net' finds every disc."""
    from eosdetect.models.config import ModelConfig, Thresholds
    from eosdetect.models.model import Model
    from eosdetect.models.unet import build_unet

    cfg = ModelConfig(**{**dict(name="base", unet_depth=2, unet_base_filters=4, tile_size=64, pixel_size_um=1.0,
                                input_pixel_size_um=1.0, cell_diameter_um=12, helper_pixel_size_um=1.0,
                                helper_crop_size=16, helper_depth=2, helper_base_filters=4), **cfg})
    base = Model.in_memory(cfg, Thresholds(min_distance_um=4, min_area_um2=20), build_unet(cfg, seed=0))
    base._predict_fn = lambda b: (b.mean(axis=-1) < 0.75).astype(np.float32)
    return base


def _red_and_purple_discs(root):
    """Six images of three discs; the red ones are labelled "eos" (VOC)."""
    from eosdetect.annotations.voc import VocAnnotation, VocObject, write_voc
    from eosdetect.training.labelset import load_labelled

    rng = np.random.default_rng(0)
    imgs, labs = root / "images", root / "labels"
    imgs.mkdir()
    labs.mkdir()
    for i in range(6):
        img = np.full((64, 96, 3), 235, np.uint8)
        yy, xx = np.mgrid[:64, :96]
        objects = []
        for j, (r, c) in enumerate([(16, 16), (40, 48), (20, 76)]):
            r, c = r + int(rng.integers(-3, 4)), c + int(rng.integers(-3, 4))
            red = (i + j) % 2 == 0
            img[(yy - r) ** 2 + (xx - c) ** 2 <= 36] = (220, 60, 40) if red else (90, 40, 150)
            if red:
                objects.append(VocObject("eos", c - 6, r - 6, c + 7, r + 7))
        Image.fromarray(img).save(imgs / f"s{i}.png")
        write_voc(labs / f"s{i}.xml", VocAnnotation(f"s{i}.png", 96, 64, objects=objects))
    return load_labelled(imgs, labs, "voc")[0]


def test_a_helper_on_a_base_sized_in_pixels_ignores_a_pixel_size(tmp_path):
    """The base was trained without a pixel size: --pixel-size cannot rescale its images, so the
    two-stage model keeps the base's scale and the helper sees the same crops."""
    from eosdetect.models.store import load_model
    from eosdetect.training.train import train_helper_from_labels

    base = _disc_finder(pixel_size_um=2.0, pixel_size_measured=False, helper_pixel_size_um=2.0)
    assert base.config.sizes_in_pixels
    metrics = train_helper_from_labels(base, _red_and_purple_discs(tmp_path), tmp_path / "h",
                                       file_cfg={"model": {"helper_kind": "colour"}}, class_name="eos",
                                       input_pixel_size_um=0.25, verbose=0)
    assert sum(metrics["data"]["crops"].values()) == 18  # every disc once, found at the base's own scale
    trained = load_model(tmp_path / "h")
    assert trained.config.input_pixel_size_um == 1.0 and trained.config.sizes_in_pixels
    assert trained.config.scale_for(0.25) == base.config.scale_for(None) == 0.5


def test_a_helper_without_negative_examples_is_refused(tmp_path):
    """Every disc labelled "eos" (pre-labels accepted as they are): nothing to tell them apart from."""
    from eosdetect.errors import ConfigError
    from eosdetect.training.train import train_helper_from_labels

    items = _red_and_purple_discs(tmp_path)
    for it in items:  # the purple discs are labelled too
        it.points = np.array([[16, 16], [48, 40], [76, 20]], dtype=float)
        it.boxes = np.array([[c - 9, r - 9, c + 10, r + 10] for c, r in it.points], dtype=float)
    with pytest.raises(ConfigError, match="no negative examples: every cell that base finds"):
        train_helper_from_labels(_disc_finder(), items, tmp_path / "h", file_cfg={"model": {"helper_kind": "colour"}},
                                 class_name="eos", verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cnn", "colour"])
def test_train_helper_writes_a_two_stage_model(tmp_path, kind):
    """Helper crops: positives at labelled cells, negatives at the other U-Net candidates."""
    from eosdetect.apps.prelabel import PrelabelSettings, prelabel_image
    from eosdetect.models.store import load_model, with_helper_of
    from eosdetect.training.train import train_helper_from_labels

    base = _disc_finder()
    items = _red_and_purple_discs(tmp_path)
    file_cfg = {"model": {"helper_kind": kind},
                "train": {"helper_epochs": 3, "helper_batch_size": 4, "helper_jitter_px": 2}}
    out = tmp_path / "eos-helper"
    metrics = train_helper_from_labels(base, items, out, file_cfg=file_cfg, class_name="eos", verbose=0)
    crops = metrics["data"]["crops"]
    assert crops["train_positive"] > 0 and crops["train_negative"] > 0
    assert crops["train_positive"] + crops["train_negative"] + crops["validation_positive"] \
        + crops["validation_negative"] == 18  # every disc is a crop, once
    for name in ("config.json", "weights.weights.h5", "helper.weights.h5", "thresholds.json", "metrics.json",
                 "MODEL_CARD.md", "training_log.csv"):
        assert (out / name).is_file(), name
    trained = load_model(out)
    assert trained.config.helper_enabled and trained.config.class_name == "eos"
    assert trained.config.helper_kind == kind
    combined = with_helper_of(base, trained)
    combined._predict_fn = base._predict_fn
    rec = prelabel_image(combined, tmp_path / "images" / "s0.png", tmp_path / "s0.xml", PrelabelSettings(min_score=0.0))
    assert rec.new_boxes == 3  # every candidate is written when min_score is 0


def test_train_bad_inputs_are_one_line_errors(tmp_path, capsys):
    imgs, labs = _dataset(tmp_path / "d", n=3)
    base = ["train", "--images", str(imgs), "--labels", str(labs), "--label-format", "points"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    cases = [
        (["--config", str(bad), "-o", str(tmp_path / "m1")], "bad.yaml: not valid YAML"),
        (["--config", str(tmp_path / "none.yaml"), "-o", str(tmp_path / "m2")], "none.yaml: no such config file"),
        (["-o", str(tmp_path / "m3"), "--dry-run"], "--cell-diameter"),  # points do not tell the cell size
        (["-o", str(tmp_path / "m4"), "--resume"], "nothing to resume"),
    ]
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  train_epochz: 3\n")
    cases.append((["--config", str(unknown), "-o", str(tmp_path / "m5"), "--cell-diameter", "12"],
                  "unknown training keys ['train_epochz']"))
    for i, (text, message) in enumerate([
            ("model:\n  unet_depth: '3'\n", "model: unet_depth must be a whole number, got '3'"),
            ("model:\n  pixel_size_um: -2\n", "model: pixel_size_um must be > 0"),
            ("thresholds:\n  prob_threshold: high\n", "thresholds: prob_threshold must be a number, got 'high'"),
            ("train:\n  train_patch_size: 100\n", "train: train_patch_size must be a multiple of 8"),  # 2 ** unet_depth 3
            ("data:\n  gap_wieght: 5\n", "data: unknown keys ['gap_wieght']"),
            ("data:\n  gap_weight: lots\n", "data: gap_weight has the wrong type: 'lots'"),
            ("data:\n  gap_weight: -3\n", "data: gap_weight must be > 0, got -3"),
    ]):
        bad_section = tmp_path / f"section{i}.yaml"
        bad_section.write_text(text)
        cases.append((["--config", str(bad_section), "-o", str(tmp_path / f"s{i}"), "--cell-diameter", "12"],
                      f"section{i}.yaml: {message}"))
    for extra, message in cases:
        assert main(base + extra) == 1, extra
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, (extra, err)


def test_pr_curve_leaves_out_thresholds_that_detect_nothing(tmp_path, monkeypatch):
    from eosdetect.training.report import _row, plot_pr_curve

    rows = [_row("t", 0.1, {"precision": 0.5, "recall": 0.9, "f1": 0.64, "tp": 9, "fp": 9, "fn": 1}),
            _row("t", 0.9, {"precision": 1.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 10})]
    assert rows[1]["precision"] is None
    assert plot_pr_curve(rows, "t", rows[0], tmp_path / "pr.png").stat().st_size > 0
    # the model's own thresholds detect nothing: no operating point is drawn at precision 1.0
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda ax, *a, **k: drawn.append((a, k)) or original(ax, *a, **k))
    plot_pr_curve(rows, "t", {**rows[1], "precision": 1.0}, tmp_path / "pr2.png")
    marker = [a for a, k in drawn if "thresholds" in str(k.get("label"))]
    assert marker == [([], [], "D")]


def test_pr_curve_leaves_the_matplotlib_backend_alone(tmp_path):
    """A notebook's backend (and pyplot's figures) stay as they were after a report's PR curve is drawn."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('pdf')\n"
        "from eosdetect.training.report import _row, plot_pr_curve\n"
        "row = _row('t', 0.5, {'precision': 0.5, 'recall': 0.9, 'f1': 0.64, 'tp': 9, 'fp': 9, 'fn': 1})\n"
        f"plot_pr_curve([row], 't', row, {str(tmp_path / 'pr.png')!r})\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout.split()
    assert out == ["pdf", "False"] and (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dry_run_splits_a_validation_list_as_training_does(tmp_path, capsys):
    imgs, labs = _dataset(tmp_path / "d", n=4)
    args = ["train", "--images", str(imgs), "--labels", str(labs), "--label-format", "points",
            "--cell-diameter", "12", "-o", str(tmp_path / "m"), "--dry-run", "--val-images", str(tmp_path / "val.txt")]
    (tmp_path / "val.txt").write_text("img0.png\nimg2\n")  # file names and stems both name images
    assert main(args) == 0
    assert "2 for training, 2 for validation" in capsys.readouterr().out
    (tmp_path / "val.txt").write_text("img0.png\nimg9.png\n")
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'img9' is not among the labelled images" in err


def test_the_pr_plot_names_thresholds_given_on_the_command_line(tmp_path, tiny_model_dir, monkeypatch):
    from eosdetect.training import report

    labels = []
    real = report.plot_pr_curve
    monkeypatch.setattr(report, "plot_pr_curve", lambda *a, **k: labels.append(k["operating_label"]) or real(*a, **k))
    imgs, labs = _dataset(tmp_path / "d", n=2)
    args = ["evaluate", "-m", str(tiny_model_dir), "--images", str(imgs), "--labels", str(labs),
            "--label-format", "points", "-o", str(tmp_path / "r")]
    assert main(args) == 0 and main([*args, "--prob-threshold", "0.35"]) == 0
    assert labels == ["model's thresholds", "thresholds given (prob_threshold 0.35)"]


@pytest.mark.parametrize("inside", [True, False])
def test_evaluate_does_not_score_its_own_report(tmp_path, tiny_model_dir, capsys, inside):
    # the report folder inside the image folder, or the report written into the image folder itself
    imgs, labs = _dataset(tmp_path / "d", n=3)
    out = imgs / "report" if inside else imgs
    args = ["evaluate", "-m", str(tiny_model_dir), "--images", str(imgs), "--labels", str(labs),
            "--label-format", "points", "-o", str(out)]
    for _ in range(2):
        assert main(args) == 0, capsys.readouterr().err
        assert json.loads((out / "metrics.json").read_text())["summary"]["n_images"] == 3


def test_dry_run_states_the_scale_in_the_units_of_the_config(tmp_path, capsys):
    imgs, labs = _dataset(tmp_path / "d", n=2)
    args = ["train", "--images", str(imgs), "--labels", str(labs), "--label-format", "points",
            "--cell-diameter", "12", "-o", str(tmp_path / "m"), "--dry-run"]
    assert main(args) == 0
    assert "sizes are in image pixels" in capsys.readouterr().out  # no pixel size anywhere
    (tmp_path / "c.yaml").write_text("model:\n  input_pixel_size_um: 0.06\n  pixel_size_measured: false\n"
                                     "  pixel_size_um: 0.24\n")  # an estimated pixel size is still micrometres
    assert main([*args, "--config", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert "images at 0.06 um/px (an estimate), network at 0.24 um/px (1/4 of the image size)" in out
    assert "image pixels" not in out


def test_dry_run_shows_images_with_objects_first_and_says_a_helper_is_trained_apart(tmp_path, capsys, caplog):
    imgs, labs = _dataset(tmp_path / "d", n=10)
    for i in range(8):
        (labs / f"img{i}.csv").write_text("x,y\n")  # the first eight have no cells
    (tmp_path / "c.yaml").write_text("model:\n  helper_enabled: true\n")
    assert main(["train", "--images", str(imgs), "--labels", str(labs), "--label-format", "points",
                 "--cell-diameter", "12", "-o", str(tmp_path / "m"), "--dry-run", "--config",
                 str(tmp_path / "c.yaml")]) == 0
    shown = sorted(p.name for p in (tmp_path / "m" / "dry-run").glob("*_target.png"))
    assert len(shown) == 8 and {"img8_target.png", "img9_target.png"} <= set(shown)
    assert "helper_enabled is not used here" in caplog.text


def test_train_without_any_labelled_object_says_so_first(tmp_path, capsys):
    """Boxes tell the cell size, so with no box at all the missing objects are the problem, not --cell-diameter."""
    imgs, _ = _dataset(tmp_path / "d", n=2)
    empty = tmp_path / "voc"
    empty.mkdir()
    code = main(["train", "--images", str(imgs), "--labels", str(empty), "--label-format", "voc",
                 "--allow-unlabelled-as-empty", "-o", str(tmp_path / "m"), "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "hold no labelled objects" in err[-1] and "--cell-diameter" not in err[-1], err


def test_train_helper_starts_afresh_after_an_interrupted_run(tmp_path, monkeypatch):
    """Checkpoints an interrupted run left in .train/ must not be resumed by the next run."""
    import eosdetect.training.train as train

    out = tmp_path / "h"
    stale = out / ".train" / "helper" / "backup" / "stale"
    stale.parent.mkdir(parents=True)
    stale.write_text("epoch 8 of another run")
    seen = []
    real = train.train_helper
    monkeypatch.setattr(train, "train_helper", lambda *a, **k: seen.append(stale.exists()) or real(*a, **k))
    train.train_helper_from_labels(_disc_finder(), _red_and_purple_discs(tmp_path), out,
                                   file_cfg={"model": {"helper_kind": "colour"}}, class_name="eos", verbose=0)
    assert seen == [False]


@pytest.mark.parametrize("label_class,warned", [("WBC", True), ("cell", False), ("Cell", False)])
def test_evaluate_warns_when_the_labels_are_of_another_class(tmp_path, tiny_model_dir, capsys, label_class, warned):
    """Issue 20, case 9: ``--class WBC`` once scored the eosinophil model against every white cell without a word."""
    from eosdetect.annotations.voc import VocAnnotation, VocObject, write_voc

    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labs.mkdir()
    Image.fromarray(disc_image(shape=(64, 80), centres=[(20, 20), (40, 52)], radius=6)).save(imgs / "a.png")
    objects = [VocObject(label_class, c - 6, r - 6, c + 6, r + 6) for r, c in ((20, 20), (40, 52))]
    write_voc(labs / "a.xml", VocAnnotation("a.png", 80, 64, objects=objects))
    rc = main(["evaluate", "-m", str(tiny_model_dir), "--images", str(imgs), "--labels", str(labs),
               "--label-format", "voc", "--class", label_class, "-o", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert rc == 0
    assert ("is not what tiny counts ('cell')" in err) == warned, err
