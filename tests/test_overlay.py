import numpy as np

from conftest import disc_image
from eosdetect.analysis.overlay import COUNTED, REJECTED, draw_overlay
from eosdetect.core.postprocess import detections_from_labels


def _near(img, colour, tol=40):
    return np.abs(img.astype(int) - np.array(colour)).sum(axis=-1) < tol


def _labels():
    labels = np.zeros((64, 80), np.int32)
    yy, xx = np.mgrid[:64, :80]
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 <= 64] = 1
    labels[(yy - 40) ** 2 + (xx - 50) ** 2 <= 64] = 2
    return labels


def test_overlay_outlines_counted_and_rejected_cells():
    img = disc_image()
    before = img.copy()
    labels = _labels()
    det = detections_from_labels(labels)
    out = draw_overlay(img, det.subset([0]), labels=labels, rejected=det.subset([1]), title="cell: 1")
    np.testing.assert_array_equal(img, before)
    header = out.shape[0] - img.shape[0]
    # an 80-px-wide image is padded to 400 px on the right, so that its caption can be read
    assert header > 0 and out.shape[1:] == (400, 3) and out.dtype == np.uint8
    pic = out[header:, :80]
    assert (out[header:, 80:] == 30).all()
    green = _near(pic, COUNTED)
    grey = _near(pic, REJECTED)
    assert green[8:33, 8:33].any() and not green[30:52, 38:62].any()
    assert grey[28:53, 38:63].any()
    assert _near(out[:header], COUNTED).any()  # the caption


def test_overlay_on_upscaled_labels():
    """Labels at a quarter of the image size are outlined at image scale."""
    img = np.full((256, 320, 3), 200, np.uint8)
    labels = np.zeros((64, 80), np.int32)
    labels[10:20, 10:20] = 1
    det = detections_from_labels(labels).rescaled(4.0)
    out = draw_overlay(img, det, labels=labels)
    assert out.shape == img.shape  # no caption, no header
    green = _near(out, COUNTED)
    rows, cols = np.nonzero(green)
    assert rows.min() >= 18 and rows.max() <= 90 and cols.min() >= 30 and cols.max() <= 90  # outline and its number


def test_numbers_at_the_right_edge_stay_whole():
    img = np.full((100, 600, 3), 200, np.uint8)
    labels = np.zeros((100, 600), np.int32)
    for k in range(9):
        labels[70:90, 20 + 50 * k:35 + 50 * k] = k + 1
    labels[40:60, 585:600] = 10  # a cell cut by the right edge: number 10
    det = detections_from_labels(labels)
    out = draw_overlay(img, det, labels=labels)
    green = _near(out[:38, 500:], COUNTED)  # its number sits above it
    cols = np.nonzero(green)[1] + 500
    assert cols.size and cols.max() < 599 and cols.min() > 560  # "10" drawn whole, left of the edge


def test_output_names_disambiguate():
    from pathlib import Path

    from eosdetect.apps.batch.naming import output_names

    names = output_names([Path("a/x.png"), Path("b/x.png"), Path("c/y.png"), Path("z/x.jpg")])
    assert names[2] == "y" and len(set(names)) == 4 and names[0] == "a__x"
    # one folder: the extension, not the whole path, tells them apart
    assert output_names([Path("/data/col/x.png"), Path("/data/col/x.JPG"), Path("/data/col/y.png")]) == [
        "x.png", "x.JPG", "y"]
    # both at once: folder and extension
    assert output_names([Path("a/x.png"), Path("a/x.jpg"), Path("b/x.png"), Path("b/x.jpg")]) == [
        "a__x.png", "a__x.jpg", "b__x.png", "b__x.jpg"]
