import json
from pathlib import Path

import pytest

from eosdetect.errors import ConfigError, ModelError
from eosdetect.models.config import CONFIG_VERSION, ModelConfig, Thresholds, unet_receptive_field
from eosdetect.models.store import DEFAULT_MODEL, bundled_names, load_model, resolve_model_dir


def test_config_roundtrip_and_unknown_keys():
    cfg = ModelConfig(name="x", unet_depth=2)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ConfigError, match="unknown config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "unet_dpth": 3})


def test_newer_config_version_is_refused():
    with pytest.raises(ModelError, match="newer than this eosdetect"):
        ModelConfig.from_dict({"config_version": CONFIG_VERSION + 1})


def test_old_config_is_migrated():
    cfg = ModelConfig.from_dict({"name": "old", "um_per_px": 0.3})  # version 0: no config_version
    assert cfg.pixel_size_um == 0.3 and cfg.config_version == CONFIG_VERSION


def test_config_validation():
    with pytest.raises(ConfigError, match="unet_depth"):
        ModelConfig(unet_depth=9)
    with pytest.raises(ConfigError, match="helper_kind must be one of cnn, colour"):
        ModelConfig(helper_kind="svm")
    with pytest.raises(ConfigError, match="max_area"):
        Thresholds(min_area_um2=10, max_area_um2=5)


def test_scale_and_margin():
    cfg = ModelConfig(pixel_size_um=0.5, input_pixel_size_um=0.25, unet_depth=3)
    assert cfg.scale_for(None) == 0.5 and cfg.scale_for(1.0) == 2.0
    assert cfg.tile_margin() % cfg.align == 0 and cfg.tile_margin() >= unet_receptive_field(3) / 2


def test_unknown_model_lists_names():
    with pytest.raises(ModelError) as exc:
        resolve_model_dir("no-such-model")
    assert "bundled models:" in str(exc.value)
    for name in bundled_names():
        assert name in str(exc.value)


def test_model_folder_errors(tmp_path, tiny_model_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json is missing"):
        load_model(tmp_path / "empty")
    with pytest.raises(ModelError, match="no such model folder"):
        load_model(tmp_path / "missing" / "model")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "config.json").write_text(json.dumps({"config_version": 99}))
    with pytest.raises(ModelError, match="newer"):
        load_model(newer)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(broken)
    import shutil

    no_thr = tmp_path / "no-thresholds"
    shutil.copytree(tiny_model_dir, no_thr)
    (no_thr / "thresholds.json").unlink()
    with pytest.raises(ModelError, match=r"thresholds\.json: missing; a model folder needs the thresholds"):
        load_model(no_thr)


def test_tiny_model_loads_and_predicts(tiny_model_dir):
    import numpy as np

    m = load_model(tiny_model_dir)
    assert m.name == "tiny"
    out = m.predict_fn(np.zeros((1, 32, 32, 3), np.float32))
    assert out.shape == (1, 32, 32)


def test_bundled_models_are_complete():
    names = bundled_names()
    assert DEFAULT_MODEL in names
    for name in names:
        m = load_model(name)
        for f in ("config.json", "weights.weights.h5", "thresholds.json", "metrics.json", "MODEL_CARD.md"):
            assert (m.path / f).is_file(), f"{name} lacks {f}"
        size = sum(p.stat().st_size for p in m.path.glob("*.h5"))
        assert size < 20e6
        assert m.metrics["validation"]["f1"] > 0


def test_model_card_shows_the_recorded_cross_validation():
    from eosdetect.training.recipes import bundled_card as model_card

    model = load_model("eosinophil-smear")
    metrics = json.loads((model.path / "metrics.json").read_text())
    card = model_card(model.config, metrics)
    assert (model.path / "MODEL_CARD.md").read_text() == card  # the shipped card is the generated one
    cv = metrics["crossval"]["pooled"]
    assert f"5-fold cross-validation | {cv['precision']:.3f} | {cv['recall']:.3f} | {cv['f1']:.3f} |" in card
    del metrics["crossval"], metrics["transfer"]
    assert "cross-validation" not in model_card(model.config, metrics)


def test_model_card_of_a_model_sized_in_pixels_and_an_unfitted_helper():
    import dataclasses

    from eosdetect.models.card import model_card

    model = load_model("eosinophil-smear")
    metrics = json.loads((model.path / "metrics.json").read_text())
    del metrics["crossval"]
    # a helper trained on the bundled U-Net (estimated um, no recipe), with too few positives to fit on
    helper_cfg = dataclasses.replace(model.config, training={"command": "eosdetect train-helper ..."})
    metrics["thresholds_fitted_on"] = "helper threshold not fitted (fewer than 5 positives among the validation images): 0.5"
    card = model_card(helper_cfg, metrics)
    assert "Trained without a pixel size" not in card and "Inputs are assumed to be 0.08 um/px" in card
    assert "Helper threshold not fitted (fewer than 5" in card and "Thresholds fitted on" not in card
    assert "the thresholds were fitted on them" not in card
    # `eosdetect train` without --pixel-size: the network works at a fraction of the image size
    px_cfg = dataclasses.replace(model.config, helper_enabled=False, pixel_size_measured=False,
                                 input_pixel_size_um=1.0, pixel_size_um=6.3, training={})
    metrics["thresholds_fitted_on"] = "the validation images (pooled F1 over the threshold grid)"
    card = model_card(px_cfg, metrics)
    assert "probability map at 1/6.3 of the image size" in card and "um/px" not in card.split("## Training")[0]
    assert "Trained without a pixel size" in card
    assert "BCCD's subtype labels are noisy" not in card  # the bundled model's limits stay with its recipe


@pytest.mark.parametrize("name", ["nuclei-he", "eosinophil-smear"])
def test_a_model_a_user_trains_gets_the_generic_card_whatever_its_name(name):
    """`eosdetect train -o models/nuclei-he` once got the bundled MoNuSeg model's limits in its card,
    because the card picked bundled text by the model's name (issue 19)."""
    import dataclasses

    from eosdetect.models.card import model_card
    from eosdetect.training.recipes import LIMITS, bundled_card

    bundled = load_model(name)
    metrics = json.loads((bundled.path / "metrics.json").read_text())
    mine = dataclasses.replace(bundled.config, training={"command": f"eosdetect train -o models/{name}"})
    card = model_card(mine, metrics)
    assert not any(limit in card for limit in LIMITS[name])
    assert "Check it on your own labelled images with `eosdetect evaluate`" in card
    assert "## The helper across labs" not in card
    # a user's model passed to the bundled recipes' card is still not taken for the bundled one
    assert not any(limit in bundled_card(mine, metrics) for limit in LIMITS[name])
    assert all(limit in bundled_card(bundled.config, metrics) for limit in LIMITS[name])


def _disc_crops(colours, n=32, radius=9, seed=0):
    """Grey crops with a disc of each colour at the centre, a little noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    disc = np.hypot(yy - n / 2, xx - n / 2) <= radius
    out = np.empty((len(colours), n, n, 3), np.uint8)
    for i, colour in enumerate(colours):
        crop = np.full((n, n, 3), 225.0) + rng.normal(0, 3, (n, n, 3))
        crop[disc] = np.array(colour) + rng.normal(0, 6, (int(disc.sum()), 3))
        out[i] = np.clip(crop, 0, 255)
    return out


def test_colour_features_describe_the_stained_centre():
    import numpy as np

    from eosdetect.core.colour import N_COLOUR_FEATURES, colour_features

    crops = _disc_crops([(225, 225, 225), (215, 80, 50), (95, 45, 150)])  # empty, orange-red, purple
    f = colour_features(crops)
    assert f.shape == (3, N_COLOUR_FEATURES) and f.dtype == np.float32
    stained, orange = f[:, 9], f[:, 10]
    assert stained[0] == 0 and stained[1] > 0.5 and stained[2] > 0.5
    assert orange[0] == 0 and orange[1] > 0.5 and orange[2] == 0
    assert f[1, 4] > 150 and f[2, 4] > 150 and abs(f[0, 4] - 128) < 5  # median a*: both stains red-ish, grey neutral
    assert f[2, 7] < 128 < f[1, 7]  # median b*: purple is blue, orange-red is yellowish
    np.testing.assert_array_equal(colour_features(crops.astype(np.float32) / 255), f)  # float input, same
    assert colour_features(crops[:0]).shape == (0, N_COLOUR_FEATURES)


def test_colour_helper_trains_saves_and_loads(tmp_path):
    """A colour helper separates orange-red from purple cells, and survives the model folder."""
    import numpy as np

    from eosdetect.models.config import ModelConfig, Thresholds
    from eosdetect.models.store import save_model
    from eosdetect.models.unet import build_unet
    from eosdetect.training.train import TrainConfig, train_helper

    cfg = ModelConfig(name="colour", unet_depth=2, unet_base_filters=4, tile_size=64, helper_enabled=True,
                      helper_kind="colour", helper_crop_size=24)
    rng = np.random.default_rng(1)
    y = np.array([1, 0] * 12)
    reds = rng.integers(180, 230, (len(y), 1)) * [1, 0.35, 0.25]
    purples = rng.integers(80, 120, (len(y), 1)) * [1, 0.5, 1.6]
    crops = _disc_crops(np.where(y[:, None] == 1, reds, purples), n=32)  # 8 px larger: room for shifts
    tcfg = TrainConfig(helper_jitter_px=3, helper_augment_copies=2)
    helper = train_helper(cfg, tcfg, crops[:16], y[:16], crops[16:, 4:28, 4:28], y[16:], tmp_path / "work")
    assert helper.count_params() == 12
    assert (tmp_path / "work" / "helper_log.csv").read_text().splitlines()[1] == "0,1.0000,1.0000"
    path = save_model(tmp_path / "m", cfg, Thresholds(), build_unet(cfg, seed=0), helper)
    loaded = load_model(path)
    assert loaded.config.helper_kind == "colour"
    assert (path / "helper.weights.h5").stat().st_size < 50_000
    p = loaded.class_probs_fn(crops[16:, 4:28, 4:28].astype(np.float32) / 255)[:, 0]
    assert p.shape == (8,) and p[y[16:] == 1].min() > 0.8 and p[y[16:] == 0].max() < 0.2


def test_white_balance_undoes_a_colour_cast():
    """The helper's view of a smear is the same under a warm or a cool lamp."""
    import dataclasses

    import numpy as np

    from eosdetect.core.colour import apply_gains, background_gains
    from eosdetect.models.config import ModelConfig
    from eosdetect.models.crops import helper_view

    rng = np.random.default_rng(0)
    smear = np.empty((120, 160, 3))
    smear[:] = (221, 226, 219)  # glass and plasma
    yy, xx = np.mgrid[:120, :160]
    glass = np.ones((120, 160), bool)
    for _ in range(12):  # red cells
        disc = np.hypot(yy - rng.uniform(0, 120), xx - rng.uniform(0, 160)) < 12
        smear[disc] = (214, 160, 150)
        glass &= ~disc
    disc = np.hypot(yy - 60, xx - 80) < 20
    smear[disc] = (120, 90, 190)  # a white cell
    glass &= ~disc
    smear = np.clip(smear + rng.normal(0, 2, smear.shape), 0, 255).astype(np.uint8)
    balanced = apply_gains(smear, background_gains(smear))
    assert np.abs(np.median(balanced[glass], axis=0) - 225).max() <= 2  # the background is grey now
    for cast in ((1.06, 1.0, 0.94), (0.94, 1.0, 1.06), (0.9, 0.9, 0.9)):
        shifted = apply_gains(smear, cast)
        again = apply_gains(shifted, background_gains(shifted))
        assert np.abs(again.astype(int) - balanced).max() <= 3, cast
    cfg = ModelConfig(pixel_size_um=1.0, input_pixel_size_um=1.0, helper_enabled=True, helper_pixel_size_um=1.0,
                      helper_white_balance=True)
    view = helper_view(smear, cfg, model_view=smear).image
    np.testing.assert_array_equal(view, balanced)
    assert view is not smear and smear[0, 0, 0] != view[0, 0, 0]  # the U-Net's input is left alone
    plain = dataclasses.replace(cfg, helper_white_balance=False)
    assert helper_view(smear, plain, model_view=smear).image is smear
    np.testing.assert_array_equal(helper_view(smear, cfg, gains=(1, 1, 1)).image, smear)  # a slide's own gains win


@pytest.mark.parametrize("path", sorted(str(p) for p in (Path(__file__).parent.parent / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(path):
    """Every YAML in configs/ loads; a bundled model's config.json is what its YAML describes."""
    from eosdetect.training.train import TrainConfig, load_config_file

    cfg = load_config_file(path)
    model = ModelConfig.from_dict(cfg.get("model", {}), source=path)
    TrainConfig.from_dict(cfg.get("train", {}), source=path)
    Thresholds.from_dict(cfg.get("thresholds", {}))
    shipped = [n for n in bundled_names() if load_model(n).config.training.get("config_file") == Path(path).name]
    experiments = ("unet.yaml", "eosinophil-smear-cnn.yaml", "nuclei-he-fullres.yaml")  # results in data/results/
    assert shipped or Path(path).name in experiments  # the others built a bundled model
    for name in shipped:
        bundled = load_model(name).config
        assert {**bundled.to_dict(), "training": {}} == {**model.to_dict(), "training": {}}, name


def test_colour_helper_ignores_a_feature_constant_in_training(tmp_path):
    """A statistic that barely varied in training (one orange-red pixel in 32 crops) gets weight 0."""
    import numpy as np

    from eosdetect.core.colour import colour_features
    from eosdetect.models.config import ModelConfig
    from eosdetect.training.train import TrainConfig, train_helper

    cfg = ModelConfig(helper_enabled=True, helper_kind="colour", helper_crop_size=24)
    y = np.array([1, 0] * 16)
    crops = _disc_crops(np.where(y[:, None] == 1, [[150, 60, 160]], [[95, 45, 150]]), n=24)
    crops[0, 12, 12] = (230, 90, 20)  # one orange-red pixel in one crop: a spread of under 0.001
    orange = colour_features(crops)[:, 10]
    assert 0 < orange.std() < 1e-3
    helper = train_helper(cfg, TrainConfig(helper_augment_copies=0), crops, y, crops[:0], y[:0], tmp_path)
    kernel, bias = helper.get_weights()
    assert np.isfinite(kernel).all() and np.isfinite(bias).all()
    assert kernel[10, 0] == 0  # the orange-red fraction gets no say


def test_a_plain_folder_named_like_a_bundled_model_does_not_hide_it(tmp_path, monkeypatch):
    """`count imgs -m nuclei-he -o nuclei-he` run twice: the results folder is not the model."""
    monkeypatch.chdir(tmp_path)
    name = bundled_names()[0]
    (tmp_path / name).mkdir()
    assert resolve_model_dir(name) == resolve_model_dir(None).parent / name
    (tmp_path / "other").mkdir()
    with pytest.raises(ModelError, match="config.json is missing"):
        resolve_model_dir("other")
