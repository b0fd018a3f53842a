"""image -> detections, with a stand-in network (dark pixels are cells) so results are exact."""

import numpy as np
import pytest

from conftest import disc_image
from eosdetect.models.config import ModelConfig, Thresholds
from eosdetect.models.model import Model


def DarkIsCell(**cfg) -> Model:
    """A model whose 'U-Net' marks dark pixels (no network)."""
    return Model.from_functions(
        ModelConfig(unet_depth=2, tile_size=64, **cfg),
        Thresholds(min_distance_um=3, smooth_um=0.5, seed_h_um=0.5, min_area_um2=5),
        lambda batch: (batch.mean(axis=-1) < 0.6).astype(np.float32),
    )


CENTRES = ((20, 20), (40, 52), (15, 60))  # (row, col)


def test_detections_at_model_scale():
    model = DarkIsCell(pixel_size_um=1.0, input_pixel_size_um=1.0)
    res = model.detect(disc_image(centres=CENTRES, radius=6))
    found = sorted(map(tuple, np.round(res.detections.xy).astype(int)))
    assert found == sorted((c, r) for r, c in CENTRES)
    assert res.count == 3 and res.scale == 1.0


@pytest.mark.parametrize("pixel_size,zoom", [(0.5, 2), (0.25, 4)])
def test_pixel_size_rescales_and_reports_input_pixels(pixel_size, zoom):
    """The same cells photographed at a finer pixel size are found at the same
    physical places, reported in the input image's pixels."""
    import cv2

    model = DarkIsCell(pixel_size_um=1.0, input_pixel_size_um=1.0)
    img = disc_image(centres=CENTRES, radius=6)
    big = cv2.resize(img, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    res = model.detect(big, pixel_size_um=pixel_size)
    assert res.scale == pytest.approx(pixel_size) and res.labels.shape == img.shape[:2]
    expected = sorted(((c + 0.5) * zoom - 0.5, (r + 0.5) * zoom - 0.5) for r, c in CENTRES)
    got = sorted(map(tuple, res.detections.xy))
    np.testing.assert_allclose(got, expected, atol=0.6 * zoom)
    # areas are in input pixels too
    assert res.detections.area.mean() == pytest.approx(np.pi * 6.5**2 * zoom**2, rel=0.15)


def test_a_model_sized_in_pixels_is_not_rescaled_by_a_pixel_size():
    """Trained without a pixel size, a model's "um" are pixels of its training images: a real pixel size
    cannot be converted to them, so the image keeps its scale (the value serves densities only)."""
    model = DarkIsCell(pixel_size_um=1.0, input_pixel_size_um=1.0, pixel_size_measured=False)
    assert model.config.sizes_in_pixels
    img = disc_image(centres=CENTRES, radius=6)
    plain, given = model.detect(img), model.detect(img, pixel_size_um=0.25)
    assert given.scale == 1.0 and given.count == plain.count == 3
    np.testing.assert_array_equal(given.detections.xy, plain.detections.xy)
    assert given.pixel_size_um == 0.25  # kept for densities
    # a bundled recipe's estimated pixel size is a real one
    assert not ModelConfig(pixel_size_measured=False, input_pixel_size_um=1.0, training={"recipe": "x"}).sizes_in_pixels
    assert not ModelConfig(pixel_size_measured=False, input_pixel_size_um=0.06).sizes_in_pixels


def test_rows_and_columns_are_scaled_back_apart():
    """1003 rows at scale 0.25 become 251 (not 250.75): rows map back by 1003/251, columns by 640/160."""
    model = DarkIsCell(pixel_size_um=0.24, input_pixel_size_um=0.06)
    res = model.detect(np.zeros((1003, 640, 3), np.uint8))  # one cell filling the image
    (x, y, *_rest, xmax, ymax), = res.detections.rows()
    assert res.labels.shape == (251, 160)
    assert (x, y) == pytest.approx((319.5, 501.0)) and (xmax, ymax) == (640, 1003)


def test_tiled_path_gives_same_detections():
    model = DarkIsCell(pixel_size_um=1.0, input_pixel_size_um=1.0)
    img = disc_image(shape=(150, 170), centres=((20, 20), (75, 80), (130, 150), (30, 140)), radius=7)
    whole = model.detect(img)
    model.config.tile_whole_max_pixels = 100  # force tiles of 64 px
    tiled = model.detect(img)
    np.testing.assert_allclose(sorted(map(tuple, whole.detections.xy)), sorted(map(tuple, tiled.detections.xy)))


def test_bad_image_type():
    with pytest.raises(ValueError, match="uint8 RGB"):
        DarkIsCell().detect(np.zeros((10, 10), np.uint8))


def test_two_stage_helper_decides_which_cells_count():
    model = DarkIsCell(pixel_size_um=1.0, input_pixel_size_um=1.0, helper_enabled=True,
                       helper_pixel_size_um=1.0, helper_crop_size=16)
    img = disc_image(centres=((20, 20),), radius=6)
    yy, xx = np.mgrid[:64, :80]
    img[(yy - 40) ** 2 + (xx - 52) ** 2 <= 36] = (150, 30, 30)  # a red cell
    # 'helper': the centre of the crop is more red than blue
    model._class_probs_fn = lambda crops: (crops[:, 6:10, 6:10, 0].mean((1, 2)) > crops[:, 6:10, 6:10, 2].mean((1, 2))
                                           + 0.1).astype(np.float32)[:, None]
    res = model.detect(img)
    assert len(res.candidates) == 2 and res.count == 1
    assert tuple(np.round(res.detections.xy[0])) == (52, 40)
    assert sorted(res.candidates.score) == [0.0, 1.0]
