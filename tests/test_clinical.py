import numpy as np
import pytest

from eosdetect.core.clinical import ImageFigures, clinical_aggregate, hpf_summary


def test_a_photo_smaller_than_a_field_has_no_peak_but_an_estimate():
    # 0.25 um/px, 1920x1440 -> 0.173 mm^2 < 0.24: no whole field in it
    xy = np.random.default_rng(0).uniform(0, 1400, size=(17, 2))
    s = hpf_summary(xy, (1440, 1920), 0.25)
    assert s.peak_count is None and s.peak_box is None
    assert s.per_hpf_is_estimate and s.per_hpf_basis == "estimate"
    assert s.area_mm2 == pytest.approx(1440 * 1920 * 0.25e-3**2)
    assert s.density_per_mm2 == pytest.approx(17 / s.area_mm2)
    assert s.per_hpf == round(s.density_per_mm2 * 0.24, 1) == 23.6 and s.flag
    assert s.n_hpf == pytest.approx(0.72)


def test_the_flag_of_a_photo_smaller_than_a_field_judges_its_estimate():
    """One cell in a photo of 1/24 of a field: ~24 per HPF by density, flagged at 15 (was 'peak 1', not flagged)."""
    s = hpf_summary([[50, 50]], (100, 100), 1.0, hpf_area_mm2=0.24, threshold=15)
    assert s.peak_count is None and s.per_hpf == 24.0 and s.flag is True
    assert s.caveat == ("the image covers 0.042 of a high-power field (0.24 mm2): no whole field, so no peak; "
                        "its per-HPF figure (~24) is estimated from its density")
    d = s.to_dict()
    assert d["per_hpf"] == 24.0 and d["per_hpf_basis"] == "estimate" and d["peak_hpf_count"] is None
    assert d["peak_hpf_box"] is None and "whole_image_is_one_hpf" not in d
    # with no threshold, nothing is judged
    assert hpf_summary([[50, 50]], (100, 100), 1.0, threshold=None).flag is None


def test_an_image_of_at_least_one_field_keeps_its_peak():
    # exactly one field (490 x 490 px at 1 um/px = 0.2401 mm^2): the peak, a real count per field
    xy = np.random.default_rng(3).uniform(0, 489, size=(16, 2))
    s = hpf_summary(xy, (490, 490), 1.0, hpf_area_mm2=0.2401, threshold=15)
    assert not s.per_hpf_is_estimate and s.per_hpf_basis == "peak"
    assert s.peak_count == s.per_hpf == 16 and s.flag and s.caveat is None
    assert s.peak_box == (0, 0, 490, 490)


def test_peak_window_found_in_large_image():
    # 1 um/px, 4000x4000 px = 16 mm^2; HPF 0.25 mm^2 = 500x500 px.
    rng = np.random.default_rng(1)
    background = np.mgrid[500:4000:1000, 500:4000:1000].reshape(2, -1).T.astype(float)  # 1 per 1000x1000 px
    cluster = rng.uniform([2600, 1000], [2900, 1300], size=(20, 2))  # 20 cells in a 300 px square
    s = hpf_summary(np.vstack([background, cluster]), (4000, 4000), 1.0, hpf_area_mm2=0.25, threshold=15)
    assert not s.per_hpf_is_estimate and s.per_hpf == s.peak_count
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


def test_a_long_strip_smaller_than_a_field_is_estimated_from_its_density():
    # 1 um/px, 4000 x 40 px = 0.16 mm^2, less than one 0.24 mm^2 HPF: a 490-px window would
    # hold 5 cells in 8% of a field; the density (250/mm^2) says 60 in a whole one
    xy = np.column_stack([np.linspace(5, 3995, 40), np.full(40, 20.0)])  # one cell every ~100 px
    s = hpf_summary(xy, (40, 4000), 1.0, hpf_area_mm2=0.24, threshold=15)
    assert s.peak_count is None and s.per_hpf == 60.0 and s.flag


def test_a_long_strip_of_more_than_a_field_keeps_its_peak():
    # 4000 x 80 px = 0.32 mm^2: at least one field, the peak of the densest window as before
    xy = np.column_stack([np.linspace(5, 3995, 40), np.full(40, 20.0)])
    s = hpf_summary(xy, (80, 4000), 1.0, hpf_area_mm2=0.24, threshold=15)
    assert s.peak_count == s.per_hpf == 5 and not s.flag  # a 490-px window holds 5 of them, not all 40


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
    assert s.peak_count == 20 and s.per_hpf_basis == "peak"


def test_a_field_smaller_than_a_pixel_on_the_fine_grid(monkeypatch):
    import eosdetect.core.clinical as clinical

    monkeypatch.setattr(clinical, "EXACT_PEAK_MAX_CELLS", 0)
    xy = np.array([[10.2, 10.2], [10.4, 10.4], [50, 50]])
    s = hpf_summary(xy, (100, 100), 0.25, hpf_area_mm2=1e-9)  # was a broadcast error
    assert s.peak_count == 2


def _figures(name, count, shape, px, hpf=0.24):
    s = hpf_summary(np.zeros((count, 2)), shape, px, hpf_area_mm2=hpf)
    return ImageFigures(name, count, s.peak_count, s.area_mm2, per_hpf=s.per_hpf,
                        per_hpf_is_estimate=s.per_hpf_is_estimate)


def test_run_of_photos_all_smaller_than_a_field():
    """The highest estimate is the run's figure, the flag judges it, and there is no peak at all."""
    images = [_figures("a", 1, (480, 640), 0.17), _figures("b", 13, (480, 640), 0.17)]  # 0.037 of a field each
    agg = clinical_aggregate(images, hpf_area_mm2=0.24, threshold=15)
    assert agg.per_hpf == images[1].per_hpf == round(13 * 0.24 / images[1].area_mm2, 1)
    assert agg.per_hpf_image == "b" and agg.per_hpf_basis == "estimate" and agg.flag is True
    assert agg.peak_hpf_count is None and agg.peak_hpf_image is None
    assert agg.every_image_smaller_than_field and agg.images_estimated == 2
    assert agg.per_hpf_image_fields == pytest.approx(480 * 640 * 0.17**2 / 1e6 / 0.24)


def test_run_of_a_photo_and_an_image_of_several_fields():
    big = _figures("big", 12, (2000, 2000), 1.0)  # 4 mm^2: all 12 cells piled in one field, a peak of 12
    small = _figures("small", 1, (100, 100), 1.0)  # 1/24 of a field: ~24 per HPF
    agg = clinical_aggregate([big, small], hpf_area_mm2=0.24, threshold=15)
    assert (agg.per_hpf, agg.per_hpf_image, agg.per_hpf_basis, agg.flag) == (24.0, "small", "estimate", True)
    assert (agg.peak_hpf_count, agg.peak_hpf_image) == (12, "big")
    assert not agg.every_image_smaller_than_field and agg.images_estimated == 1
    # the peak wins when it is higher, and is then the figure judged
    agg = clinical_aggregate([_figures("big", 30, (2000, 2000), 1.0), small], hpf_area_mm2=0.24, threshold=15)
    assert (agg.per_hpf, agg.per_hpf_image, agg.per_hpf_basis, agg.flag) == (30, "big", "peak", True)


def test_figures_of_an_older_record_follow_the_rule():
    """Rows of an older version carry a peak and no per_hpf: a photo smaller than a field is estimated."""
    old = ImageFigures("old", 13, peak_hpf_count=13, area_mm2=0.012)  # its 'peak' was the whole photo's count
    assert old.figure(0.24) == (260.0, True)
    assert ImageFigures("big", 13, peak_hpf_count=5, area_mm2=1.0).figure(0.24) == (5, False)
    agg = clinical_aggregate([old], hpf_area_mm2=0.24, threshold=15)
    assert agg.per_hpf == 260.0 and agg.peak_hpf_count is None and agg.every_image_smaller_than_field
