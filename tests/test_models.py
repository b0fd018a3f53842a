import json

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
    from eosdetect.recipes import model_card

    model = load_model("eosinophil-smear")
    metrics = json.loads((model.path / "metrics.json").read_text())
    card = model_card(model.config, metrics)
    assert (model.path / "MODEL_CARD.md").read_text() == card  # the shipped card is the generated one
    cv = metrics["crossval"]["pooled"]
    assert f"5-fold cross-validation | {cv['precision']:.3f} | {cv['recall']:.3f} | {cv['f1']:.3f} |" in card
    del metrics["crossval"]
    assert "cross-validation" not in model_card(model.config, metrics)
