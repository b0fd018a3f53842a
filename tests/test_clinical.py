import numpy as np
import pytest

from eosdetect.core.clinical import hpf_summary


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
    (cx0, cy0), (cx1, cy1) = cluster.min(axis=0), cluster.max(axis=0)
    assert x0 <= cx0 and x1 >= cx1 and y0 <= cy0 and y1 >= cy1  # the window holds the whole cluster
    assert s.n_hpf == pytest.approx(64)


def test_exact_counts_on_grid():
    # four cells in one 100x100 window, one far away; 1 um/px, HPF 0.01 mm^2 = 100x100 px
    xy = [[10, 10], [20, 20], [90, 90], [50, 50], [900, 900]]
    s = hpf_summary(xy, (1000, 1000), 1.0, hpf_area_mm2=0.01, threshold=5)
    assert s.peak_count == 4 and not s.flag


def test_bad_pixel_size():
    with pytest.raises(ValueError, match="pixel size"):
        hpf_summary([], (10, 10), 0)


def test_a_long_strip_is_several_fields_not_one():
    # 1 um/px, 4000 x 40 px = 0.16 mm^2, less than one 0.24 mm^2 HPF, but eight 490-um fields long
    xy = np.column_stack([np.linspace(5, 3995, 40), np.full(40, 20.0)])  # one cell every ~100 px
    s = hpf_summary(xy, (40, 4000), 1.0, hpf_area_mm2=0.24, threshold=15)
    assert not s.whole_image_is_one_hpf
    assert s.peak_count == 5 and not s.flag  # a 490-px window holds 5 of them, not all 40


@pytest.mark.parametrize("seed", range(5))
def test_peak_is_the_best_window_anywhere(seed):
    """Against brute force over every window whose left and top edges touch cells."""
    rng = np.random.default_rng(seed)
    xy = np.vstack([rng.uniform(0, 3000, (300, 2)), rng.normal(rng.uniform(500, 2500, 2), 120, (60, 2))])
    xy = np.clip(xy, 0, 2999)
    side = 500.0
    brute = max(int(np.sum((xy[:, 0] >= x) & (xy[:, 0] < x + side) & (xy[:, 1] >= y) & (xy[:, 1] < y + side)))
                for x in xy[:, 0] for y in xy[:, 1])
    s = hpf_summary(xy, (3000, 3000), 1.0, hpf_area_mm2=0.25)
    assert s.peak_count == brute
    x0, y0, x1, y1 = s.peak_box
    assert (x1 - x0, y1 - y0) == (500, 500) and 0 <= x0 and x1 <= 3000 and 0 <= y0 and y1 <= 3000


def test_many_cells_use_the_fine_grid_and_find_the_cluster(monkeypatch):
    import eosdetect.core.clinical as clinical

    monkeypatch.setattr(clinical, "EXACT_PEAK_MAX_CELLS", 0)  # the path taken beyond 5000 cells
    rng = np.random.default_rng(2)
    cluster = rng.uniform([2600, 1000], [2900, 1300], size=(20, 2))
    s = hpf_summary(cluster, (4000, 4000), 1.0, hpf_area_mm2=0.25)
    assert s.peak_count == 20 and not s.whole_image_is_one_hpf


def test_a_field_smaller_than_a_pixel_on_the_fine_grid(monkeypatch):
    import eosdetect.core.clinical as clinical

    monkeypatch.setattr(clinical, "EXACT_PEAK_MAX_CELLS", 0)
    xy = np.array([[10.2, 10.2], [10.4, 10.4], [50, 50]])
    s = hpf_summary(xy, (100, 100), 0.25, hpf_area_mm2=1e-9)  # was a broadcast error
    assert s.peak_count == 2
