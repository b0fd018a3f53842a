"""Classical candidates (no network) on small synthetic pictures."""

import numpy as np

from eosdetect.core.candidates import classical_nuclei, classical_white_cells


def _smear():
    """A pale background, pink red cells, one white cell with a two-lobed purple nucleus, one platelet."""
    img = np.full((240, 320, 3), (230, 225, 220), np.uint8)
    yy, xx = np.mgrid[:240, :320]
    for r, c in [(40, 40), (60, 250), (180, 60), (200, 280), (120, 300)]:
        img[(yy - r) ** 2 + (xx - c) ** 2 <= 30**2] = (225, 150, 150)  # red cells
    img[(yy - 120) ** 2 + (xx - 150) ** 2 <= 45**2] = (230, 190, 180)  # white cell cytoplasm
    for r, c in [(110, 135), (130, 168)]:  # two nuclear lobes
        img[(yy - r) ** 2 + (xx - c) ** 2 <= 18**2] = (110, 50, 140)
    img[(yy - 30) ** 2 + (xx - 160) ** 2 <= 4**2] = (120, 60, 150)  # a platelet: too small
    return img


def test_white_cell_lobes_give_one_candidate_and_red_cells_none():
    labels, det = classical_white_cells(_smear(), pixel_size_um=0.06)
    assert len(det) == 1
    assert abs(det.x[0] - 151) < 6 and abs(det.y[0] - 120) < 6
    assert det.xmin[0] < 120 and det.xmax[0] > 180  # the box spans both lobes
    assert labels.max() == 1


def test_nuclei_split_by_watershed():
    img = np.full((100, 100, 3), (235, 220, 230), np.uint8)
    yy, xx = np.mgrid[:100, :100]
    for r, c in [(30, 30), (30, 47), (70, 70)]:  # two nuclei 1 px apart (merged by the blur) and one alone
        img[(yy - r) ** 2 + (xx - c) ** 2 <= 8**2] = (90, 50, 140)
    _, det = classical_nuclei(img, pixel_size_um=0.25, min_distance_um=2.0, min_area_um2=4)
    assert len(det) == 3
