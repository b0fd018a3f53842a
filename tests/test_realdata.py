"""The bundled models on real images (../shared/data; skipped when it is absent).

The numbers asserted are the validation figures in each model's metrics.json
(small tolerance for float differences between machines): a regression in
any part of the pipeline (reading, scaling, tiling, network, watershed,
helper) shows up here.
"""

import pytest

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def nuclei_items():
    from eosdetect.training import recipes, shared_data

    _, val = shared_data.monuseg_split(shared_data.load_monuseg())
    return [recipes.nuclei_eval_item(i) for i in val]


@pytest.fixture(scope="module")
def smear_items():
    from eosdetect.training import recipes, shared_data

    _, val = shared_data.bccd_split(shared_data.load_bccd(), 0)
    return [recipes.smear_eval_item(i) for i in val if i.subtype is not None]


def test_nuclei_model_on_monuseg_validation(nuclei_items):
    from eosdetect.models.store import load_model
    from eosdetect.training.evaluation import evaluate_model

    model = load_model("nuclei-he")
    ev = evaluate_model(model, nuclei_items)["summary"]
    expected = model.metrics["validation"]
    assert ev["f1"] == pytest.approx(expected["f1"], abs=0.005)
    assert ev["f1"] >= model.metrics["baseline_classical"]["summary"]["f1"]


def test_eosinophil_model_on_bccd_validation(smear_items):
    from eosdetect.models.store import load_model
    from eosdetect.training.evaluation import evaluate_model

    model = load_model("eosinophil-smear")
    ev = evaluate_model(model, smear_items)["summary"]
    expected = model.metrics["validation"]
    assert ev["f1"] == pytest.approx(expected["f1"], abs=0.01)
    assert ev["tp"] + ev["fn"] == sum(len(i.true_xy) for i in smear_items)


def test_count_cli_on_real_smears(tmp_path, smear_items, capsys):
    """The user's journey on real photos: counts.csv agrees with the evaluation."""
    import csv

    from eosdetect.apps.cli import main
    from eosdetect.io import write_image

    folder = tmp_path / "smears"
    picked = [i for i in smear_items if len(i.true_xy)][:3] + [i for i in smear_items if not len(i.true_xy)][:3]
    for it in picked:
        write_image(folder / it.name.replace(".jpg", ".png"), it.image)
    assert main(["count", str(folder), "-o", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "counts.csv")))
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    from eosdetect.models.store import load_model

    # the command counts exactly what the evaluated pipeline detects on the same pixels
    model = load_model("eosinophil-smear")
    by_name = {r["image"].replace("\\", "/").rsplit("/", 1)[-1]: int(r["count"]) for r in rows}
    for it in picked:
        assert by_name[it.name.replace(".jpg", ".png")] == len(model.detect(it.image).detections), it.name
    # the first labelled eosinophil of the fold has orange-red granules and is found; the next two
    # labels look like neutrophils and are not (BCCD's label noise, see the model card)
    assert by_name[picked[0].name.replace(".jpg", ".png")] == 1


def test_label_audit_reproduces_its_committed_result(tmp_path):
    """The blind order is rebuilt from the shared data, so the committed
    grades land on the same cells and give the committed figures."""
    import json
    from pathlib import Path

    from conftest import load_script

    audit = load_script("audit_eosinophil_labels")
    results = Path(__file__).resolve().parent.parent / "data" / "results"
    out = tmp_path / "audit.json"
    audit.main(["score", "--grades", str(results / "eosinophil_label_grades_r1.txt"),
                "--grades2", str(results / "eosinophil_label_grades_r2.txt"), "-o", str(out)])
    assert json.loads(out.read_text()) == json.loads((results / "eosinophil_label_audit.json").read_text())


def test_nuclei_error_audit_lands_on_its_committed_cells():
    """The nuclei audit's blind order comes from the bundled model's own
    matches, so it holds only while the model is unchanged: the committed
    grades must still land on the same points, and the error breakdown must
    be the committed one (the threshold sweep, minutes long, is not rerun)."""
    import json
    from pathlib import Path

    from conftest import load_script

    audit = load_script("audit_nuclei_errors")
    committed = json.loads((Path(__file__).resolve().parent.parent / "data" / "results" / "nuclei_error_audit.json").read_text())
    runs = audit.validation_runs()
    cells = audit.blind_order(runs)
    assert [(c["tile"], c["kind"]) for c in cells] == [(c["tile"], c["kind"]) for c in committed["cells"]]
    assert [c["x"] for c in cells] == pytest.approx([c["x"] for c in committed["cells"]], abs=0.01)
    assert [c["y"] for c in cells] == pytest.approx([c["y"] for c in committed["cells"]], abs=0.01)
    for run, tile in zip(runs, committed["per_tile"]):
        assert audit.error_kinds(run) == {k: v for k, v in tile.items() if k in audit.error_kinds(run)}


def test_eosinophil_helper_on_pbc_validation_split():
    """The whole pipeline on PBC's 930 validation cells (another lab, pathologists' labels) gives the
    figures and confusion matrix in metrics.json, and meets the eosinophil F1 >= 0.97 target."""
    from eosdetect.models.store import load_model
    from eosdetect.training import recipes

    model = load_model("eosinophil-smear")
    expected = model.metrics["pbc_validation"]
    got = recipes.pbc_report(model)
    assert got["scores"]["f1"] >= 0.97
    for key in ("tp", "fp", "fn"):
        assert abs(got["scores"][key] - expected["scores"][key]) <= 2, key
    for true, row in expected["confusion"].items():
        for called, n in row.items():
            assert abs(got["confusion"][true].get(called, 0) - n) <= 2, (true, called)


def test_eosinophil_helper_on_bccd_validation_fold_judged_with_the_audit():
    """BCCD's fold 0 (not trained on): granular eosinophils found, look-alikes rarely counted, as recorded."""
    from eosdetect.models.store import load_model
    from eosdetect.training import recipes, shared_data

    model = load_model("eosinophil-smear")
    _, val = shared_data.bccd_split(shared_data.load_bccd(), 0)
    got = recipes.bccd_report(model, val)
    expected = model.metrics["bccd_validation_cells"]
    assert got["audit"]["look_alikes_counted"] == pytest.approx(expected["audit"]["look_alikes_counted"], abs=1)
    assert got["audit"]["recall_granular"] == pytest.approx(expected["audit"]["recall_granular"], abs=0.11)
    assert got["labels"]["f1"] == pytest.approx(expected["labels"]["f1"], abs=0.03)
    assert got["audit"]["look_alike_rate"] <= 0.05
