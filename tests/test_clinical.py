import numpy as np
import pytest

from eosdetect.clinical import hpf_summary


def test_photo_is_one_hpf():
    # 0.25 um/px, 1920x1440 -> 0.173 mm^2 < 0.24: the whole photo is one HPF
    xy = np.random.default_rng(0).uniform(0, 1400, size=(17, 2))
    s = hpf_summary(xy, (1440, 1920), 0.25)
    assert s.whole_image_is_one_hpf and s.peak_count == 17 and s.flag
    assert s.area_mm2 == pytest.approx(1440 * 1920 * 0.25e-3**2)
    assert s.density_per_mm2 == pytest.approx(17 / s.area_mm2)


def test_peak_window_found_in_large_image():
    # 1 um/px, 4000x4000 px = 16 mm^2; HPF 0.25 mm^2 = 500x500 px.
    rng = np.random.default_rng(1)
    background = np.mgrid[500:4000:1000, 500:4000:1000].reshape(2, -1).T.astype(float)  # 1 per 1000x1000 px
    cluster = rng.uniform([2600, 1000], [2900, 1300], size=(20, 2))  # 20 cells in a 300 px square
    s = hpf_summary(np.vstack([background, cluster]), (4000, 4000), 1.0, hpf_area_mm2=0.25, threshold=15)
    assert not s.whole_image_is_one_hpf
    assert 20 <= s.peak_count <= 24 and s.flag
    x0, y0, x1, y1 = s.peak_box
    assert x1 - x0 == 500 and y1 - y0 == 500
    assert x0 <= 2600 and x1 >= 2900 and y0 <= 1000 and y1 >= 1300
    assert s.n_hpf == pytest.approx(64)


def test_exact_counts_on_grid():
    # four cells in one 100x100 window, one far away; 1 um/px, HPF 0.01 mm^2 = 100x100 px
    xy = [[10, 10], [20, 20], [90, 90], [50, 50], [900, 900]]
    s = hpf_summary(xy, (1000, 1000), 1.0, hpf_area_mm2=0.01, threshold=5)
    assert s.peak_count == 4 and not s.flag


def test_bad_pixel_size():
    with pytest.raises(ValueError, match="pixel size"):
        hpf_summary([], (10, 10), 0)
