import numpy as np
import pytest

from conftest import disc_image
from eosdetect.annotations.convert import boxes_to_mask
from eosdetect.core.geometry import resize
from eosdetect.training.augment import colour_augment, flip_rotate
from eosdetect.training.dataset import PatchSampler, Sample, fixed_patches


def _sample(seed=0):
    rng = np.random.default_rng(seed)
    centres = [tuple(rng.integers(10, 54, size=2)) for _ in range(4)]
    img = disc_image(shape=(64, 64), centres=centres, radius=6)
    yy, xx = np.mgrid[:64, :64]
    target = np.zeros((64, 64), np.float32)
    for r, c in centres:
        target[(yy - r) ** 2 + (xx - c) ** 2 <= 36] = 1
    return Sample(f"s{seed}", img, target, points=[(c, r) for r, c in centres])


def test_flip_rotate_keeps_image_and_target_aligned():
    rng = np.random.default_rng(0)
    a = np.arange(12).reshape(3, 4)
    for _ in range(10):
        x, y = flip_rotate([a, a * 10], rng)
        np.testing.assert_array_equal(y, x * 10)


def test_hed_jitter_without_jitter_is_identity():
    from eosdetect.training.augment import hed_jitter

    rng = np.random.default_rng(3)
    x = rng.uniform(0.05, 1.0, size=(8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(hed_jitter(x, rng, strength=0, shift=0), x, atol=1e-5)


def test_colour_augment_stays_in_range_and_keeps_input():
    rng = np.random.default_rng(1)
    x = rng.random((16, 16, 3)).astype(np.float32)
    before = x.copy()
    y = colour_augment(x, rng)
    assert y.shape == x.shape and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
    np.testing.assert_array_equal(x, before)
    assert np.abs(y - x).mean() < 0.1


def test_patch_sampler_shapes_and_weights():
    s = _sample()
    ps = PatchSampler([s], 32, fg_fraction=1.0, seed=0)
    x, y = ps.batch(4)
    assert x.shape == (4, 32, 32, 3) and y.shape == (4, 32, 32, 2)
    assert y[..., 0].max() == 1  # centred on objects
    # a patch reaching outside the image weights the mirrored part 0
    big = PatchSampler([s], 128, fg_fraction=0.0, seed=0).patch()[1]
    assert big[..., 1].min() == 0 and big[..., 1].max() == 1


def test_fixed_patches_cover_sample():
    s = _sample()
    x, y = fixed_patches([s], 48)
    assert x.shape == (4, 48, 48, 3)
    assert y[..., 1].sum() == 64 * 64  # each real pixel weighted once


def test_resize_and_ellipse():
    img = np.zeros((10, 20, 3), np.uint8)
    assert resize(img, 0.5).shape == (5, 10, 3)
    labels = np.array([[1, 2], [3, 4]], dtype=np.int32)
    assert resize(labels, 2, nearest=True).tolist()[0] == [1, 1, 2, 2]
    m = boxes_to_mask((20, 20), np.array([[5, 5, 15, 15]]), shrink=1.0)
    assert m[10, 10] and not m[0, 0] and 60 < m.sum() < 100


@pytest.mark.slow
def test_two_epoch_training_smoke(tmp_path):
    """Training runs end to end, writes its log and checkpoints, and the loss is finite."""
    import csv

    from eosdetect.models.config import ModelConfig
    from eosdetect.training.train import TrainConfig, train_unet

    cfg = ModelConfig(unet_depth=2, unet_base_filters=4, tile_size=64)
    tcfg = TrainConfig(train_epochs=2, train_steps_per_epoch=3, train_batch_size=4, train_patch_size=32)
    from eosdetect.training.evaluation import EvalItem

    val = _sample(2)
    items = [EvalItem("v", val.image, val.points, radius_px=4)]
    model = train_unet(cfg, tcfg, [_sample(0), _sample(1)], [val], tmp_path, val_items=items, verbose=0)
    rows = list(csv.DictReader(open(tmp_path / "unet_log.csv")))
    assert len(rows) == 2 and all(np.isfinite(float(r["loss"])) for r in rows)
    assert all(0 <= float(r["val_f1"]) <= 1 for r in rows)  # epochs are compared by detection F1
    assert (tmp_path / "unet_best.weights.h5").is_file() and (tmp_path / "unet_last.weights.h5").is_file()
    out = model.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0)
    assert out.shape == (1, 32, 32, 1)


@pytest.mark.parametrize("text, message", [
    ("train:\n  train_epochs: ten\n", "train_epochs must be a whole number, got 'ten'"),
    ("train:\n  train_steps_per_epoch: 0\n", "train_steps_per_epoch must be >= 1, got 0"),
    ("train:\n  train_batch_size: 0\n", "train_batch_size must be >= 1, got 0"),
    ("train:\n  train_learning_rate: 0\n", "train_learning_rate must be > 0, got 0"),
    ("train:\n  train_fg_fraction: 1.5\n", "train_fg_fraction must be between 0 and 1, got 1.5"),
    ("train: [1, 2]\n", "the train section must be a mapping"),
    ("threshold_grid:\n  prob_threshold: 0.5\n", "prob_threshold must be a non-empty list of numbers"),
    ("threshold_grid:\n  prob: [0.5]\n", "unknown threshold 'prob'"),
    ("threshold_grid:\n  prob_threshold: [0.5, 1.5]\n", "threshold_grid: prob_threshold must be in [0, 1] (got 1.5)"),
])
def test_config_file_mistakes_are_one_line_errors_before_any_training(tmp_path, text, message):
    from eosdetect.errors import ConfigError
    from eosdetect.training.train import load_config_file

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config_file(path)
    assert message in str(exc.value) and str(exc.value).startswith(str(path)) and "\n" not in str(exc.value)
    (tmp_path / "empty.yaml").write_text("train:\nthreshold_grid:\n")  # empty sections are fine
    assert load_config_file(tmp_path / "empty.yaml")["train"] == {}


def test_resume_does_not_log_an_epoch_twice(tmp_path):
    """Interrupted after epoch 2 was logged but before it was backed up: Keras trains epoch 2 again,
    so its first row goes (and the best-so-far is read from what stays)."""
    import json

    from eosdetect.training.train import _callbacks

    log = tmp_path / "unet_log.csv"
    log.write_bytes(b"epoch,loss,val_score\r\n0,0.9,0.1\r\n1,0.8,0.2\r\n2,0.7,0.9\r\n")
    (tmp_path / "unet_backup").mkdir()
    (tmp_path / "unet_backup" / "training_metadata.json").write_text(json.dumps({"epoch": 2}))
    cbs = _callbacks(tmp_path, "unet", patience=5, resume=True, monitor="val_score")
    assert log.read_bytes() == b"epoch,loss,val_score\r\n0,0.9,0.1\r\n1,0.8,0.2\r\n"
    best = [c for c in cbs if type(c).__name__ == "ModelCheckpoint"][0]
    assert best.best == 0.2  # epoch 2's 0.9 was never backed up
