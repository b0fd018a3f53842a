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


def _dark_is_cell():
    from eosdetect.models.config import ModelConfig, Thresholds
    from eosdetect.models.model import Model

    return Model.from_functions(
        ModelConfig(unet_depth=2, tile_size=64, pixel_size_um=1.0, input_pixel_size_um=1.0),
        Thresholds(min_distance_um=3, smooth_um=0.5, seed_h_um=0.5, min_area_um2=5),
        lambda batch: (batch.mean(axis=-1) < 0.6).astype(np.float32))


def _analysis(monkeypatch, hpf_area_mm2):
    """An analysis of two dark discs (80 x 64 px at 1 um/px, 0.00512 mm^2) by a stand-in model, and the
    caption lines and frame its overlay is drawn with."""
    import eosdetect.analysis.image as image_module

    a = image_module.analyse(_dark_is_cell(), disc_image(), pixel_size_um=1.0, hpf_area_mm2=hpf_area_mm2,
                             flag_threshold=15)
    drawn = {}
    monkeypatch.setattr(image_module, "draw_overlay", lambda *args, **kw: drawn.update(kw))
    a.overlay()
    return a, drawn


def test_overlay_of_a_photo_smaller_than_a_field_shows_the_estimate_and_frames_nothing(monkeypatch):
    from eosdetect.analysis.image import basis_caption, peak_caption

    a, drawn = _analysis(monkeypatch, 0.24)  # the photo covers 0.021 of a field
    assert a.count == 2 and a.peak_hpf_count is None and a.per_hpf == 93.8 and a.hpf_flag
    assert peak_caption(a.hpf, 15) == "~93.8/HPF, estimated from density  >= 15"
    assert basis_caption(a.hpf) == "no peak: the image covers 0.021 of a high-power field"
    assert drawn["lines"][:2] == ["390.6/mm2, ~93.8/HPF, estimated from density  >= 15",
                                  "no peak: the image covers 0.021 of a high-power field"]
    assert drawn["highlight_box"] is None
    assert not any("peak 2" in line or "orange frame" in line for line in drawn["lines"])


def test_overlay_of_an_image_of_several_fields_shows_its_peak_framed(monkeypatch):
    from eosdetect.analysis.image import PEAK_FRAME_CAPTION, peak_caption

    a, drawn = _analysis(monkeypatch, 0.001)  # a field of 31.6 px: the image covers 5 of them
    assert a.peak_hpf_count == a.per_hpf == 2 and not a.hpf_flag
    assert peak_caption(a.hpf, 15) == "peak 2/HPF"
    assert drawn["lines"][:2] == ["390.6/mm2, peak 2/HPF", PEAK_FRAME_CAPTION]
    assert drawn["highlight_box"] == a.hpf.peak_box is not None


def test_a_slide_smaller_than_a_field_goes_by_the_same_rule(monkeypatch):
    import eosdetect.analysis.slide as slide_module

    slide = disc_image(shape=(200, 300), centres=((30, 40), (100, 150), (170, 260)), radius=6)  # 0.06 mm^2
    s = slide_module.analyse_slide(_dark_is_cell(), slide, pixel_size_um=1.0, block_px=64, flag_threshold=15)
    assert s.count == 3 and s.peak_hpf_count is None and s.hpf.per_hpf_is_estimate and s.hpf_flag
    # the estimate is from the density the slide reports, per mm^2 of its tissue
    assert s.hpf.density_per_mm2 == s.density_per_mm2 and s.per_hpf == round(s.density_per_mm2 * 0.24, 1)
    drawn = {}
    monkeypatch.setattr(slide_module, "draw_overlay", lambda *args, **kw: drawn.update(kw))
    s.overlay()
    assert drawn["lines"][-2:] == [
        f"{s.density_per_mm2:.1f}/mm2 of tissue ({s.area_mm2:.2f} mm2), ~{s.per_hpf:g}/HPF, estimated from density"
        "  >= 15", "no peak: the image covers 0.25 of a high-power field"]
    assert drawn["highlight_box"] is None
