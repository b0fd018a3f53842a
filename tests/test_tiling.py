import numpy as np
import pytest

from eosdetect.core.tiling import predict_tiled, predict_whole, read_region, tile_grid
from eosdetect.models.config import ModelConfig


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (37, 101), (64, 64), (65, 200)])
@pytest.mark.parametrize("tile,margin,align", [(16, 4, 1), (32, 8, 4), (24, 2, 2)])
def test_write_regions_partition_the_image(shape, tile, margin, align):
    cover = np.zeros(shape, dtype=int)
    for t in tile_grid(shape, tile, margin, align):
        cover[t.write] += 1
        # crop and write have the same shape; read is a full tile
        assert (t.crop[0].stop - t.crop[0].start, t.crop[1].stop - t.crop[1].start) == (
            t.write[0].stop - t.write[0].start, t.write[1].stop - t.write[1].start)
        assert t.read[0].stop - t.read[0].start == (tile // align) * align
        assert t.read[0].start % align == 0 and t.read[1].start % align == 0  # pooling grids line up
    assert (cover == 1).all()


def test_tile_grid_rejects_margin_bigger_than_tile():
    with pytest.raises(ValueError, match="no room"):
        tile_grid((10, 10), tile_size=8, margin=4)


def test_read_region_matches_numpy_reflect_pad():
    img = np.arange(5 * 7 * 2).reshape(5, 7, 2)
    padded = np.pad(img, ((9, 9), (9, 9), (0, 0)), mode="reflect")
    got = read_region(img, slice(-9, 14), slice(-9, 16))
    np.testing.assert_array_equal(got, padded)
    one = np.array([[[3]]])
    assert read_region(one, slice(-2, 3), slice(-1, 2)).ravel().tolist() == [3] * 15


def test_read_region_does_not_modify_input():
    img = np.arange(12.0).reshape(3, 4, 1)
    before = img.copy()
    out = read_region(img, slice(0, 3), slice(0, 4))
    out[:] = -1
    np.testing.assert_array_equal(img, before)


def _box_filter(batch):
    """A toy 'network' with a 5x5 receptive field (zero padding at the tile border)."""
    from scipy.ndimage import uniform_filter

    return np.stack([uniform_filter(b[..., 0], size=5, mode="constant") for b in batch])


def test_tiled_equals_whole_for_local_operator():
    rng = np.random.default_rng(0)
    img = rng.random((45, 70, 1)).astype(np.float32)
    whole = predict_whole(img, _box_filter, margin=3)
    tiled = predict_tiled(img, _box_filter, tile_size=16, margin=3, batch_size=3)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
    assert tiled.shape == img.shape[:2]


def test_tiled_equals_whole_for_unet():
    """Tiled and untiled U-Net maps agree to < 1e-3 (exact stitching, no seams)."""
    from eosdetect.models.unet import build_unet, make_predict_fn

    cfg = ModelConfig(unet_depth=2, unet_base_filters=4, tile_size=64)
    fn = make_predict_fn(build_unet(cfg, seed=3))
    rng = np.random.default_rng(1)
    img = rng.random((150, 97, 3)).astype(np.float32)
    margin = cfg.tile_margin()
    whole = predict_whole(img, fn, margin=margin, align=cfg.align)
    tiled = predict_tiled(img, fn, tile_size=cfg.tile_size, margin=margin, align=cfg.align, batch_size=4)
    assert np.abs(tiled - whole).max() < 1e-3
    # and a tiny image (smaller than one tile) is padded, not refused
    small = predict_tiled(img[:7, :5], fn, tile_size=64, margin=margin, align=cfg.align)
    assert small.shape == (7, 5)


def test_tiled_equals_whole_with_test_time_augmentation():
    from eosdetect.models.unet import build_unet, make_predict_fn

    cfg = ModelConfig(unet_depth=2, unet_base_filters=4, tile_size=64)
    net = build_unet(cfg, seed=4)
    fn = make_predict_fn(net, tta=True)
    img = np.random.default_rng(5).random((70, 90, 3)).astype(np.float32)
    margin = cfg.tile_margin()
    whole = predict_whole(img, fn, margin=margin, align=cfg.align)
    tiled = predict_tiled(img, fn, tile_size=cfg.tile_size, margin=margin, align=cfg.align)
    assert np.abs(tiled - whole).max() < 1e-3
    # the mean of the 8 views is not the plain map
    plain = predict_whole(img, make_predict_fn(net), margin=margin, align=cfg.align)
    assert np.abs(plain - whole).max() > 1e-4


def test_receptive_field_formula_matches_the_network():
    """Perturbing one input pixel changes outputs only within the computed receptive field."""
    from eosdetect.models.unet import build_unet, make_predict_fn

    cfg = ModelConfig(unet_depth=2, unet_base_filters=4, unet_batchnorm=False, tile_size=64)
    fn = make_predict_fn(build_unet(cfg, seed=5))
    rng = np.random.default_rng(2)
    x = rng.random((1, 96, 96, 3)).astype(np.float32)
    y0 = fn(x)
    x2 = x.copy()
    x2[0, 48, 48] += 1.0
    changed = np.argwhere(np.abs(fn(x2) - y0)[0] > 0)
    extent = changed.max(0) - changed.min(0) + 1
    assert (extent <= cfg.receptive_field()).all()
    assert extent.max() >= cfg.receptive_field() - 2 * cfg.align  # the formula is not loose either
