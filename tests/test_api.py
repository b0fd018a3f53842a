"""The public Python API: what a researcher calls from a notebook (stand-in networks, exact results)."""

import numpy as np
import pytest

import eosdetect as ed
from conftest import disc_image

CENTRES = ((20, 20), (40, 52), (15, 60), (100, 30), (70, 110), (120, 120))  # (row, col)


def dark_is_cell(**cfg) -> ed.Model:
    """A model whose 'U-Net' marks dark pixels, and whose one-class 'helper' counts red cells."""
    config = ed.ModelConfig(unet_depth=2, tile_size=64, pixel_size_um=1.0, input_pixel_size_um=1.0, **cfg)
    thresholds = ed.Thresholds(min_distance_um=3, smooth_um=0.5, seed_h_um=0.5, min_area_um2=5)

    def redness(crops):
        centre = crops[:, 6:10, 6:10]
        return (centre[..., 0].mean((1, 2)) - centre[..., 2].mean((1, 2)) + 0.5).clip(0, 1)[:, None]

    return ed.Model.from_functions(config, thresholds, lambda b: (b.mean(axis=-1) < 0.6).astype(np.float32),
                                   redness if config.helper_enabled else None)


@pytest.fixture
def smear():
    img = disc_image(shape=(140, 150), centres=CENTRES, radius=6)
    yy, xx = np.mgrid[:140, :150]
    for r, c in CENTRES[::2]:  # every other cell red: counted by the helper
        img[(yy - r) ** 2 + (xx - c) ** 2 <= 36] = (150, 30, 30)
    return img


def two_stage():
    return dark_is_cell(helper_enabled=True, helper_pixel_size_um=1.0, helper_crop_size=16)


def test_detect_finds_every_cell_and_the_helper_decides(smear):
    res = two_stage().detect(smear)
    assert len(res.candidates) == len(CENTRES)
    found = sorted(map(tuple, np.round(res.detections.xy).astype(int)))
    assert found == sorted((c, r) for r, c in CENTRES[::2])
    assert res.count == 3


def test_thresholds_are_overridden_per_call_and_the_model_is_unchanged(smear):
    model = two_stage()
    before = model.thresholds
    assert model.detect(smear, helper_threshold=0.0).count == len(CENTRES)
    assert model.detect(smear, helper_threshold=1.0).count == 0
    with pytest.raises(ed.ConfigError, match="helper_threshold must be in"):
        model.detect(smear, helper_threshold=1.5)
    strict = model.thresholds.replace(min_area_um2=500)
    assert len(model.detect(smear, thresholds=strict).candidates) == 0
    assert model.thresholds == before
    with pytest.raises((TypeError, ed.ConfigError), match="no_such_threshold"):
        model.detect(smear, no_such_threshold=1)


def test_a_probability_map_is_reused_for_other_thresholds(smear):
    model = two_stage()
    pmap = model.predict_prob(smear)
    assert np.asarray(pmap).shape == smear.shape[:2] and pmap.factors == (1.0, 1.0)
    for t in (0.0, 0.5, 0.9):
        thr = model.thresholds.replace(helper_threshold=t)
        direct, again = model.detect(smear, thresholds=thr), model.detect_from(pmap, thr)
        np.testing.assert_array_equal(direct.detections.xy, again.detections.xy)
        np.testing.assert_array_equal(direct.candidates.score, again.candidates.score)


def test_the_input_is_not_modified(smear):
    copy = smear.copy()
    two_stage().detect(smear)
    np.testing.assert_array_equal(smear, copy)


@pytest.mark.parametrize("kind", ["numpy", "zarr", "dask"])
def test_an_array_too_large_for_memory_is_counted_block_by_block_like_the_whole(smear, kind):
    """Each cell exactly once, whatever array library holds the pixels."""
    model = two_stage()
    big = np.tile(smear, (3, 4, 1))
    if kind == "zarr":
        zarr = pytest.importorskip("zarr")
        arr = zarr.zeros(big.shape, chunks=(64, 64, 3), dtype=np.uint8)
        arr[:] = big
    elif kind == "dask":
        da = pytest.importorskip("dask.array")
        arr = da.from_array(big, chunks=(100, 100, 3))
    else:
        arr = big
    whole = model.detect(big).detections
    sc = model.detect_slide(arr, block_px=64)
    assert sc.blocks > 4 and len(sc.detections) == len(whole) == 36
    m = ed.match_points(sc.detections.xy, whole.xy, radius=1.0)
    assert m.tp == len(whole)
    assert not sc.pixel_size_known


def test_an_array_slide_keeps_its_pixel_size():
    sc = two_stage().detect_slide(ed.ArraySlide(np.full((50, 60, 3), 240, np.uint8), mpp=1.0))
    assert sc.pixel_size_um == 1.0 and sc.pixel_size_source == "slide metadata" and len(sc.detections) == 0


def test_bad_inputs_say_what_was_expected():
    model = two_stage()
    with pytest.raises(ValueError, match=r"\(M, N, 3\) uint8 RGB image, got \(10, 10\)"):
        model.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(TypeError, match="slide path, a SlideReader or an array"):
        model.detect_slide(42)
    with pytest.raises(ValueError, match="has no helper"):
        dark_is_cell().classify(None, np.zeros((1, 2)))
