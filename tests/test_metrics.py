import numpy as np

from eosdetect.core.metrics import match_points, summarize


def test_one_to_one_by_radius():
    r = match_points([[0, 0], [1, 0]], [[0.5, 0]], radius=1)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)


def test_hungarian_beats_greedy():
    # greedy by distance would pair p0-t1 (0.9) and leave t0 unmatched
    pred = [[0.0, 0.0], [2.0, 0.0]]
    true = [[-1.0, 0.0], [0.9, 0.0]]
    r = match_points(pred, true, radius=1.15)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)


def test_inside_box_and_mask():
    boxes = [[0, 0, 10, 10], [20, 0, 30, 10]]
    r = match_points([[5, 5], [6, 6], [25, 9]], [[5, 5], [25, 5]], true_boxes=boxes)
    assert (r.tp, r.fp, r.fn) == (2, 1, 0)
    labels = np.zeros((10, 10), dtype=int)
    labels[2:5, 2:5] = 1
    labels[6:9, 6:9] = 2
    r = match_points([[3, 3], [8, 8], [0, 9]], [[3, 3], [7, 7]], true_labels=labels)
    assert (r.tp, r.fp, r.fn) == (2, 1, 0)


def test_empty_cases_and_scores():
    assert match_points([], [[1, 1]]).fn == 1
    r = match_points([[1, 1]], [])
    assert (r.tp, r.fp, r.fn, r.precision, r.recall) == (0, 1, 0, 0.0, 1.0)
    r = match_points([], [])
    assert r.f1 == 1.0



def test_reports_leave_undefined_rates_blank():
    """Nothing detected: no precision (not a perfect 1.0); nothing to find: no recall."""
    from eosdetect.core.metrics import fmt_rate, summarize

    missed = match_points([], [[1, 1]])
    assert missed.rates() == {"precision": None, "recall": 0.0, "f1": 0.0}
    assert match_points([[1, 1]], []).rates() == {"precision": 0.0, "recall": None, "f1": 0.0}
    s = summarize([missed, missed])
    assert s["precision"] is None and s["recall"] == 0.0 and fmt_rate(s["precision"]) == "n/a"


def test_summarize():
    a = match_points([[0, 0], [5, 5]], [[0, 0]], radius=1)
    b = match_points([[0, 0]], [[0, 0], [9, 9]], radius=1)
    s = summarize([a, b])
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 1)
    assert s["f1"] == round(4 / 6, 4)
    assert s["count_mae"] == 1.0
    assert s["count_mape"] == round((1 / 1 + 1 / 2) / 2, 4)


def test_label_ceiling_counts_whole_grades():
    """scripts/audit_eosinophil_labels.py: counting a grade brings in its look-alikes."""
    from conftest import load_script

    ceiling = load_script("audit_eosinophil_labels").ceiling
    rows = {r["grades_counted"]: r for r in ceiling({"G": 6, "P": 2, "N": 2}, {"G": 0, "P": 2, "N": 8})}
    assert rows["G"]["precision"] == 1.0 and rows["G"]["recall"] == 0.6
    assert rows["GP"]["tp"] == 8 and rows["GP"]["fp"] == 2 and rows["GP"]["f1"] == 0.8
    assert rows["GPN"]["recall"] == 1.0 and rows["GPN"]["precision"] == 0.5
    assert ceiling({"G": 6, "P": 2, "N": 2}, {"G": 0, "P": 2, "N": 8})[0]["grades_counted"] == "GP"
