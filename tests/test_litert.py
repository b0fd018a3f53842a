"""The networks on LiteRT: converted from the Keras weights, equal to Keras, chosen without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eosdetect.errors import ModelError
from eosdetect.io import find_images, read_image
from eosdetect.models import runtime
from eosdetect.models.store import BUNDLED_DIR, bundled_names, load_model

ROOT = Path(__file__).resolve().parents[1]
#: The largest difference of a probability allowed between LiteRT and Keras (issue 21).
TOLERANCE = 1e-4


def assert_same_cells(lite, keras, image, pixel_size_um=None):
    """Probability maps and helper probabilities within TOLERANCE, and the same cells."""
    a = lite.predict_prob(image, pixel_size_um=pixel_size_um)
    b = keras.predict_prob(image, pixel_size_um=pixel_size_um)
    assert np.abs(a.prob - b.prob).max() <= TOLERANCE
    ra, rb = lite.detect_from(a), keras.detect_from(b)
    assert np.array_equal(ra.candidates.xy, rb.candidates.xy)
    assert np.array_equal(ra.detections.xy, rb.detections.xy)
    if ra.class_probs is not None and len(ra.class_probs):
        assert np.abs(ra.class_probs - rb.class_probs).max() <= TOLERANCE
        assert np.array_equal(ra.candidate_class, rb.candidate_class)
    return ra


@pytest.mark.parametrize("name", bundled_names())
def test_every_bundled_model_ships_a_current_conversion(name):
    """Retraining a bundled model without running scripts/export_litert.py fails here."""
    assert runtime.stale_conversions(BUNDLED_DIR / name, load_model(name).config) == []
    assert load_model(name).runtime_used == "litert"
    for path in (BUNDLED_DIR / name).glob("*.tflite"):
        assert path.stat().st_size < 5e6


@pytest.mark.parametrize("name", bundled_names())
def test_bundled_models_on_litert_find_what_keras_finds_in_the_samples(name):
    lite, keras = load_model(name, runtime="litert"), load_model(name, runtime="keras")
    assert keras.runtime_used == "keras"
    for path in find_images([ROOT / "data" / "samples"]):
        assert_same_cells(lite, keras, read_image(path))


@pytest.mark.realdata
@pytest.mark.slow
def test_litert_equals_keras_on_real_images():
    """BCCD photos, MoNuSeg tiles and PBC cells (other labs and devices): maps within 1e-4, same cells."""
    from eosdetect.training import recipes, shared_data

    smear = load_model("eosinophil-smear", runtime="litert"), load_model("eosinophil-smear", runtime="keras")
    _, bccd_val = shared_data.bccd_split(shared_data.load_bccd(), 0)
    found = 0
    for item in bccd_val[:4]:
        found += len(assert_same_cells(*smear, read_image(item.path),
                                       pixel_size_um=shared_data.BCCD_PIXEL_SIZE_UM).candidates)
    for cell in shared_data.load_pbc()[::700]:
        found += len(assert_same_cells(*smear, read_image(cell.path),
                                       pixel_size_um=shared_data.PBC_PIXEL_SIZE_UM).candidates)
    nuclei = load_model("nuclei-he", runtime="litert"), load_model("nuclei-he", runtime="keras")
    _, monuseg_val = shared_data.monuseg_split(shared_data.load_monuseg())
    for item in monuseg_val[:2]:
        found += len(assert_same_cells(*nuclei, recipes.nuclei_eval_item(item).image).candidates)
    assert found > 100  # real cells were compared, not empty maps


def test_a_trained_model_is_saved_with_its_conversion(tiny_model_dir):
    """save_model (every training command) converts the weights; the folder runs on LiteRT."""
    manifest = json.loads((tiny_model_dir / runtime.MANIFEST).read_text())
    assert manifest["networks"]["unet"]["weights_sha256"] == runtime.file_sha256(tiny_model_dir / runtime.UNET_WEIGHTS)
    lite, keras = load_model(tiny_model_dir), load_model(tiny_model_dir, runtime="keras")
    assert lite.runtime_used == "litert"
    image = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    assert_same_cells(lite, keras, image)


def test_a_two_stage_model_with_a_colour_helper_is_converted_too(tmp_path):
    from eosdetect.models.config import ModelConfig, Thresholds
    from eosdetect.models.helper_cnn import build_helper
    from eosdetect.models.store import save_model
    from eosdetect.models.unet import build_unet

    for kind in ("colour", "cnn"):
        cfg = ModelConfig(name="two", class_name="cell", unet_depth=2, unet_base_filters=4, pixel_size_um=1.0,
                          input_pixel_size_um=1.0, tile_size=64, cell_diameter_um=10, helper_enabled=True,
                          helper_kind=kind, helper_crop_size=16, helper_base_filters=4, helper_depth=2,
                          helper_pixel_size_um=1.0)
        path = save_model(tmp_path / kind, cfg, Thresholds(prob_threshold=0.5, min_area_um2=4, helper_threshold=0.5),
                          build_unet(cfg, seed=1), build_helper(cfg, seed=2))
        lite, keras = load_model(path), load_model(path, runtime="keras")
        assert lite.runtime_used == "litert"
        crops = np.random.default_rng(1).random((300, 16, 16, 3), dtype=np.float32)  # more than one batch
        np.testing.assert_allclose(lite.class_probs_fn(crops), keras.class_probs_fn(crops), atol=TOLERANCE)


def test_weights_changed_after_conversion_are_run_by_keras_or_refused(tiny_model_dir, tmp_path, caplog):
    import shutil

    folder = shutil.copytree(tiny_model_dir, tmp_path / "changed")
    with open(folder / runtime.UNET_WEIGHTS, "ab") as fh:
        fh.write(b"\0")  # the conversion is no longer of these weights
    assert runtime.stale_conversions(folder, load_model(folder).config) == ["unet"]
    with caplog.at_level("WARNING"):
        assert load_model(folder).runtime_used == "keras"
    assert "older than its weights" in caplog.text and f"eosdetect export {folder}" in caplog.text
    with pytest.raises(ModelError, match=r"unet.tflite missing or not converted from this folder's weights"):
        load_model(folder, runtime="litert").runtime_used  # noqa: B018
    with pytest.raises(ModelError, match="unknown runtime 'onnx'"):
        load_model(folder, runtime="onnx")


def test_without_tensorflow_a_folder_without_conversion_says_how_to_get_one(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    folder = shutil.copytree(tiny_model_dir, tmp_path / "old")
    (folder / runtime.UNET_LITERT).unlink()
    monkeypatch.setattr(runtime, "has_tensorflow", lambda: False)
    with pytest.raises(ModelError) as err:
        load_model(folder).predict_fn  # noqa: B018
    assert str(err.value) == (f"{folder}: unet.tflite missing or not converted from this folder's weights; "
                              f"convert them with `eosdetect export {folder}` (needs TensorFlow: "
                              'pip install "eosdetect[train]")')


def test_the_export_command_converts_a_folder_again(tiny_model_dir, tmp_path, capsys):
    import shutil

    from eosdetect.apps.cli import main

    folder = shutil.copytree(tiny_model_dir, tmp_path / "again")
    for name in (runtime.UNET_LITERT, runtime.MANIFEST):
        (folder / name).unlink()
    assert main(["export", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == f"converted to LiteRT: unet.tflite in {folder}"
    assert load_model(folder).runtime_used == "litert"


#: A Python start that cannot import TensorFlow or Keras, as after `pip install eosdetect`.
NO_TENSORFLOW = ("import sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; "
                 "from eosdetect.apps.cli import main; rc = main(sys.argv[1:]); "
                 "assert 'tensorflow' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]; "
                 "sys.exit(rc)")


def test_count_needs_no_tensorflow_and_training_says_how_to_get_it(tmp_path):
    out = tmp_path / "r"
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, "count", str(ROOT / "data" / "samples"), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no start-up chatter of a native library
    assert "3 image(s) counted, 3 eosinophils in all" in done.stdout
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, "train", "--images", str(tmp_path), "--labels",
                           str(tmp_path), "-o", str(tmp_path / "m")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip() == ('eosdetect: error: eosdetect train needs TensorFlow, which is not installed: '
                                   'pip install "eosdetect[train]"')


def test_large_inputs_run_on_the_lean_kernels_with_the_same_maps(tiny_model_dir):
    """Above ``fast_max_pixels`` the U-Net runs on LiteRT's built-in kernels (less memory), to float rounding."""
    from eosdetect.models.litert import LiteRTNetwork

    batch = np.random.default_rng(2).random((2, 64, 96, 3), dtype=np.float32)
    fast = LiteRTNetwork(tiny_model_dir / runtime.UNET_LITERT)
    lean = LiteRTNetwork(tiny_model_dir / runtime.UNET_LITERT, fast_max_pixels=64 * 96)
    keras = load_model(tiny_model_dir, runtime="keras").predict_fn(batch)
    np.testing.assert_allclose(lean(batch), keras, atol=TOLERANCE)
    np.testing.assert_allclose(fast(batch), keras, atol=TOLERANCE)
    assert lean._lean is not None and fast._lean is None
    np.testing.assert_allclose(lean(batch[:1]), keras[:1], atol=TOLERANCE)  # small enough: the fast kernels
