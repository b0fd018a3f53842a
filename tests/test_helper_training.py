"""The multi-class helper: its config, network, crop augmentation, training and adaptation (tiny, synthetic)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from eosdetect.errors import ConfigError
from eosdetect.models.config import ModelConfig

CLASSES = ["eos", "neutro", "other"]


def _config(**kw):
    return ModelConfig(**{**dict(name="base", class_name="eos", unet_depth=2, unet_base_filters=4, tile_size=64,
                                 pixel_size_um=1.0, input_pixel_size_um=1.0, cell_diameter_um=12,
                                 helper_enabled=True, helper_pixel_size_um=1.0, helper_crop_size=16,
                                 helper_depth=2, helper_base_filters=4, helper_classes=CLASSES,
                                 helper_not_in_differential=["other"]), **kw})


def test_config_checks_the_classes():
    assert _config().multiclass and _config().counted_class_index == 0
    with pytest.raises(ConfigError, match="class_name 'lymph' must be one of helper_classes"):
        _config(class_name="lymph")
    with pytest.raises(ConfigError, match="distinct"):
        _config(helper_classes=["eos", "eos"])
    with pytest.raises(ConfigError, match="helper_kind: cnn"):
        _config(helper_kind="colour")
    with pytest.raises(ConfigError, match="helper_not_in_differential"):
        _config(helper_not_in_differential=["platelet"])
    with pytest.raises(ConfigError, match="helper_classes must be a list"):
        ModelConfig.from_dict({"helper_classes": "eos"})
    round_trip = ModelConfig.from_dict(_config().to_dict())
    assert round_trip.helper_classes == CLASSES and round_trip.helper_not_in_differential == ["other"]


def test_multiclass_network_gives_probabilities_per_class():
    from eosdetect.models.helper_cnn import build_helper, make_classify_fn

    net = build_helper(_config(), seed=0)
    p = make_classify_fn(net)(np.random.default_rng(0).random((5, 16, 16, 3), dtype=np.float32))
    assert p.shape == (5, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert make_classify_fn(net)(np.zeros((0, 16, 16, 3), np.float32)).shape == (0, 3)


def test_crop_augment_keeps_its_input_and_repeats_with_a_seed():
    from eosdetect.training.augment import crop_augment

    big = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    before = big.copy()
    a = crop_augment(big, 16, np.random.default_rng(3))
    b = crop_augment(big, 16, np.random.default_rng(3))
    assert a.shape == (16, 16, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(big, before)
    assert not np.array_equal(a, crop_augment(big, 16, np.random.default_rng(4)))


def test_crop_augment_without_jitter_is_the_centre():
    from eosdetect.training.augment import crop_augment

    big = np.zeros((40, 40, 3), np.uint8)
    big[12:28, 12:28] = 200  # a square filling the centre 16 x 16
    rng = np.random.default_rng(0)
    kw = dict(scale_jitter=0.0, shift_px=0.0, hed_strength=0.0, hed_shift=0.0, colour_cast=0.0, saturation=0.0,
              hue_deg=0.0, blur_sigma=0.0, low_res=1.0, noise=0.0, jpeg=False)
    for _ in range(5):  # any rotation and flip of a centred square: the square's centre stays bright
        out = crop_augment(big, 16, rng, **kw)
        assert out[4:12, 4:12].min() > 0.6


def test_cropset_targets_subset_and_concat():
    from eosdetect.training.helper import CropSet

    a = CropSet(np.zeros((3, 20, 20, 3)), [0, 1, 2], sources=["x"] * 3)
    b = CropSet(np.zeros((2, 24, 24, 3)), [1, 1], soft=[[0, 0.5, 0.5], [0, 1, 0]])
    assert a.targets(3).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    both = CropSet.concat([a, b])
    assert both.crops.shape == (5, 24, 24, 3) and both.labels.tolist() == [0, 1, 2, 1, 1]
    assert both.soft[3].tolist() == [0, 0.5, 0.5] and both.soft[0].tolist() == [1, 0, 0]
    assert both.subset([4]).soft.tolist() == [[0, 1, 0]]
    with pytest.raises(ValueError, match="2 crops but 3 labels"):
        CropSet(np.zeros((2, 4, 4, 3)), [0, 1, 2])


def test_soft_targets_leave_out_the_counted_class():
    from eosdetect.training.helper import soft_not_counted

    out = soft_not_counted(np.array([[1.0, 0.0, 0.0], [0.2, 0.6, 0.2]]), 0)
    np.testing.assert_allclose(out, [[0, 0.5, 0.5], [0, 0.75, 0.25]])


def _discs(n_images=6, seed=0):
    """Images of three discs each, red ('eos'), purple or a small grey speck."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_images):
        img = np.full((64, 96, 3), 235, np.uint8)
        yy, xx = np.mgrid[:64, :96]
        kinds = []
        for j, (r, c) in enumerate([(16, 16), (40, 48), (20, 76)]):
            r, c = r + int(rng.integers(-3, 4)), c + int(rng.integers(-3, 4))
            red = (i + j) % 2 == 0
            img[(yy - r) ** 2 + (xx - c) ** 2 <= 36] = (220, 60, 40) if red else (90, 40, 150)
            kinds.append((red, c, r))
        out.append((img, kinds))
    return out


def _disc_finder(helper=None):
    from eosdetect.models.config import Thresholds
    from eosdetect.models.helper_cnn import build_helper
    from eosdetect.models.model import Model
    from eosdetect.models.unet import build_unet

    cfg = _config()
    base = Model.in_memory(cfg, Thresholds(min_distance_um=4, min_area_um2=20, helper_threshold=0.5),
                           build_unet(cfg, seed=0), helper if helper is not None else build_helper(cfg, seed=0))
    base._predict_fn = lambda b: (b.mean(axis=-1) < 0.75).astype(np.float32)
    return base


def test_training_learns_the_classes_of_crops(tmp_path):
    from eosdetect.training.helper import CropSet, predict_crops, train_multiclass_helper
    from eosdetect.training.train import TrainConfig

    rng = np.random.default_rng(0)
    crops, labels = [], []
    colours = {0: (220, 60, 40), 1: (90, 40, 150), 2: (235, 235, 235)}
    for k in range(60):
        c = np.full((32, 32, 3), 235, np.uint8)
        cls = k % 3
        c[10:22, 10:22] = colours[cls]
        crops.append(np.clip(c + rng.integers(-8, 9, c.shape), 0, 255))
        labels.append(cls)
    data = CropSet(np.array(crops), labels)
    tcfg = TrainConfig(helper_batch_size=12, helper_learning_rate=5e-3, helper_hed_strength=0.05)
    net = train_multiclass_helper(_config(), tcfg, data, data.subset(slice(0, 12)), tmp_path, epochs=15, verbose=0)
    pred = predict_crops(net, data.crops, 16).argmax(axis=1)
    assert (pred == data.labels).mean() > 0.9
    assert (tmp_path / "helper_log.csv").is_file()


def test_adapt_model_writes_a_folder_that_counts_the_new_class(tmp_path):
    """A random helper, adapted on labelled red discs, counts red discs and not purple ones."""
    from eosdetect.models.store import load_model
    from eosdetect.training.helper import adapt_model
    from eosdetect.training.labelset import LabelledImage
    from eosdetect.training.train import TrainConfig

    items = []
    for i, (img, kinds) in enumerate(_discs()):
        pts = np.array([(c, r) for red, c, r in kinds if red], float).reshape(-1, 2)
        Image.fromarray(img).save(tmp_path / f"s{i}.png")
        items.append(LabelledImage(f"s{i}.png", tmp_path / f"s{i}.png", None, img, pts))
    base = _disc_finder()
    tcfg = TrainConfig(helper_batch_size=12, helper_learning_rate=5e-3, helper_hed_strength=0.05)
    # a random 4-filter helper learns slower than a trained one: a larger step than the default
    metrics = adapt_model(base, items, tmp_path / "adapted", tcfg=tcfg, command="eosdetect adapt ...",
                          learning_rate=5e-3, verbose=0)
    a = metrics["adaptation"]
    assert a["cells"] == {"eos": 9, "other cells": 9}
    assert a["on_the_adaptation_cells"]["after"] == {"counted_of_labelled": 9, "counted_of_others": 0}
    model = load_model(tmp_path / "adapted")
    model._predict_fn = base.predict_fn  # the disc-finding stand-in for the U-Net
    assert model.config.helper_classes == CLASSES and model.config.training["adapted"]
    img, kinds = _discs(1, seed=5)[0]
    res = model.detect(img)
    assert res.count == sum(red for red, _, _ in kinds)
    from eosdetect.core.differential import differential_of

    assert differential_of(res, model.config).counts["eos"] == res.count
    assert "Adapted to a new lab" in model.card


def test_adapt_refuses_labels_without_other_cells(tmp_path):
    from eosdetect.training.helper import adapt_model
    from eosdetect.training.labelset import LabelledImage

    img, kinds = _discs(1)[0]
    pts = np.array([(c, r) for _, c, r in kinds], float)
    with pytest.raises(ConfigError, match="needs the other white cells too|the other"):
        adapt_model(_disc_finder(), [LabelledImage("a.png", tmp_path / "a.png", None, img, pts)], tmp_path / "m",
                    verbose=0)
    with pytest.raises(ConfigError, match="no eos"):
        adapt_model(_disc_finder(), [LabelledImage("a.png", tmp_path / "a.png", None, img, np.zeros((0, 2)))],
                    tmp_path / "m", verbose=0)


def _voc_folder(root):
    """The disc images with their red discs labelled 'eos' in LabelImg VOC files."""
    from eosdetect.annotations.voc import VocAnnotation, VocObject, write_voc

    imgs, labs = root / "images", root / "labels"
    imgs.mkdir()
    labs.mkdir()
    for i, (img, kinds) in enumerate(_discs()):
        Image.fromarray(img).save(imgs / f"s{i}.png")
        objects = [VocObject("eos", c - 6, r - 6, c + 7, r + 7) for red, c, r in kinds if red]
        write_voc(labs / f"s{i}.xml", VocAnnotation(f"s{i}.png", 96, 64, objects=objects))
    return imgs, labs


def test_adapt_command_writes_a_model_folder(tmp_path, monkeypatch, capsys):
    import eosdetect.models.store as store
    from eosdetect.apps.cli import main

    real_load = store.load_model
    base = _disc_finder()
    monkeypatch.setattr(store, "load_model", lambda name=None: base if name == "disc-base" else real_load(name))
    imgs, labs = _voc_folder(tmp_path)
    out = tmp_path / "my-lab"
    assert main(["adapt", "--images", str(imgs), "--labels", str(labs), "-m", "disc-base", "-o", str(out),
                 "--pixel-size", "1.0"]) == 0
    said = capsys.readouterr().out
    assert "adapted on 6 image(s): 9 eos, 9 other cells" in said and "eosdetect evaluate" in said
    assert {"config.json", "weights.weights.h5", "helper.weights.h5", "thresholds.json", "metrics.json",
            "MODEL_CARD.md"} <= {p.name for p in out.iterdir()}
    assert not (out / ".adapt").exists()
    # a second run does not replace the folder without --overwrite
    assert main(["adapt", "--images", str(imgs), "--labels", str(labs), "-m", "disc-base", "-o", str(out)]) == 1
    assert "use --overwrite" in capsys.readouterr().err


def test_adapt_command_refuses_a_model_without_a_multiclass_helper(tmp_path, tiny_model_dir, capsys):
    from eosdetect.apps.cli import main

    imgs, labs = _voc_folder(tmp_path)
    assert main(["adapt", "--images", str(imgs), "--labels", str(labs), "-m", str(tiny_model_dir),
                 "-o", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "has no multi-class helper" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
