import numpy as np
import pytest

from eosdetect.core.postprocess import Detections, detections_from_labels, filter_by_area, segment


def two_discs(gap=0):
    yy, xx = np.mgrid[:30, :50]
    d = 8 + gap
    a = (yy - 15) ** 2 + (xx - (25 - d)) ** 2 < 64
    b = (yy - 15) ** 2 + (xx - (25 + d)) ** 2 < 64
    return a | b


def test_touching_discs_are_split():
    mask = two_discs(gap=-1)  # centres 14 px apart, radius 8: they overlap
    from scipy import ndimage as ndi

    assert ndi.label(mask)[1] == 1  # they touch
    labels = segment(mask.astype(float), min_distance=3, smooth=0.5, seed_h=0.5)
    assert labels.max() == 2
    det = detections_from_labels(labels)
    xs = sorted(det.x)
    assert xs[0] == pytest.approx(18, abs=1) and xs[1] == pytest.approx(32, abs=1)
    assert det.y == pytest.approx([15, 15], abs=0.5)


def test_one_disc_stays_one():
    yy, xx = np.mgrid[:40, :40]
    disc = ((yy - 20) ** 2 + (xx - 20) ** 2 < 100).astype(float)
    assert segment(disc, min_distance=3).max() == 1


def test_seed_h_merges_shallow_peaks():
    # an elongated blob with a slight waist: one object unless seed_h is tiny
    yy, xx = np.mgrid[:30, :60]
    blob = ((yy - 15) ** 2 / 64 + (xx - 22) ** 2 / 100 < 1) | ((yy - 15) ** 2 / 64 + (xx - 36) ** 2 / 100 < 1)
    assert segment(blob.astype(float), min_distance=3, seed_h=3.0).max() == 1


def test_empty_and_threshold():
    assert segment(np.zeros((10, 10))).max() == 0
    prob = np.zeros((20, 20))
    prob[5:15, 5:15] = 0.4
    assert segment(prob, prob_threshold=0.5).max() == 0
    assert segment(prob, prob_threshold=0.3).max() == 1


def test_area_filter_and_input_untouched():
    labels = np.array([[1, 1, 0, 2], [1, 1, 0, 0], [0, 0, 0, 3]])
    before = labels.copy()
    out = filter_by_area(labels, min_area=2)
    np.testing.assert_array_equal(out, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(labels, before)
    prob = two_discs().astype(float)
    p0 = prob.copy()
    segment(prob)
    np.testing.assert_array_equal(prob, p0)


def test_detections_from_labels_exact():
    labels = np.zeros((6, 8), dtype=int)
    labels[1:3, 1:4] = 1  # 2x3 box
    labels[4, 6] = 2
    prob = np.full((6, 8), 0.5)
    prob[4, 6] = 0.9
    d = detections_from_labels(labels, prob)
    assert len(d) == 2
    np.testing.assert_allclose(d.x, [2.0, 6.0])
    np.testing.assert_allclose(d.y, [1.5, 4.0])
    np.testing.assert_allclose(d.area, [6, 1])
    np.testing.assert_allclose(d.score, [0.5, 0.9])
    np.testing.assert_allclose([d.xmin[0], d.ymin[0], d.xmax[0], d.ymax[0]], [1, 1, 4, 3])
    assert d.rows()[1] == (6.0, 4.0, 0.9, 1.0, 6, 4, 7, 5)


def test_rescaled_maps_pixel_centres():
    d = Detections.from_points([[0.0, 1.0]], radius=1)
    r = d.rescaled(4.0)
    # model pixel 0 covers input pixels 0..3, centre 1.5
    assert r.x[0] == pytest.approx(1.5) and r.y[0] == pytest.approx(5.5)
    assert r.area[0] == pytest.approx(np.pi * 16)
    r = d.rescaled((4.0, 2.0))  # columns and rows apart
    assert (r.x[0], r.y[0]) == pytest.approx((1.5, 2.5)) and r.area[0] == pytest.approx(np.pi * 8)
    assert len(Detections.empty()) == 0
