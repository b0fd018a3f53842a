"""Counting on a Dask cluster (a LocalCluster started here) gives the local run's results."""

import csv
import json
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed")

from eosdetect.apps.batch.run import CountRun, CountSettings  # noqa: E402
from eosdetect.apps.cli import main  # noqa: E402
from eosdetect.models.store import load_model  # noqa: E402

pytestmark = pytest.mark.slow
SAMPLES = sorted((Path(__file__).resolve().parent.parent / "data" / "samples").glob("*.jpg"))


@pytest.fixture(scope="module")
def cluster():
    # separate worker processes, as on real machines: data and the model travel by pickling
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                                  silence_logs=40) as c:
        yield c


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cluster_run_matches_local_run(cluster, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    for p in SAMPLES:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    files = sorted(images.iterdir())
    model = load_model()
    CountRun(model, tmp_path / "local", CountSettings(pixel_size_um=0.06)).run(files)
    recs = CountRun(model, tmp_path / "dask", CountSettings(pixel_size_um=0.06, scheduler=cluster.scheduler_address)).run(files)
    assert [r.image for r in recs] == [str(f) for f in files]  # input order kept
    local, remote = _rows(tmp_path / "local" / "counts.csv"), _rows(tmp_path / "dask" / "counts.csv")
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in remote] == \
        [{k: v for k, v in r.items() if k not in drop} for r in local]
    bad = [r for r in remote if r["status"] == "error"]
    assert len(bad) == 1 and "broken.jpg" in bad[0]["image"] and bad[0]["error"]
    for p in SAMPLES:
        a = (tmp_path / "local" / f"{p.stem}_detections.csv").read_text()
        assert (tmp_path / "dask" / f"{p.stem}_detections.csv").read_text() == a
        assert (tmp_path / "dask" / f"{p.stem}_overlay.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "dask" / "summary.json").read_text())
    assert summary["complete"] and summary["images_failed"] == 1


def test_cli_scheduler_option_ships_a_model_folder_and_resumes(cluster, tmp_path, tiny_model_dir, capsys):
    images = tmp_path / "in"
    images.mkdir()
    for p in SAMPLES:
        (images / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "res"
    args = ["count", str(images), "-m", str(tiny_model_dir), "-o", str(out), "--scheduler", cluster.scheduler_address]
    assert main(args) == 0
    assert [r["status"] for r in _rows(out / "counts.csv")] == ["ok"] * len(SAMPLES)
    capsys.readouterr()
    assert main(args) == 0  # a re-run skips what is done
    assert f"{len(SAMPLES)} already done" in capsys.readouterr().out


def test_unreachable_scheduler_is_one_line_error(tmp_path, capsys):
    code = main(["count", str(SAMPLES[0]), "-o", str(tmp_path / "r"), "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "Dask scheduler at tcp://127.0.0.1:9" in err[0]


def test_a_file_vanishing_here_does_not_abort_a_cluster_run(cluster, tmp_path, tiny_model_dir, monkeypatch):
    """An image's file vanished after it was sent: it is counted (not marked done), the others finish."""
    images = tmp_path / "in"
    images.mkdir()
    for p in SAMPLES:
        (images / p.name).write_bytes(p.read_bytes())
    files = sorted(images.iterdir())
    write_remote = CountRun._write_remote

    def vanishing(self, rec, res):
        if rec.image == str(files[1]):
            files[1].unlink()  # gone before it could be marked done
        return write_remote(self, rec, res)

    monkeypatch.setattr(CountRun, "_write_remote", vanishing)
    out = tmp_path / "res"
    recs = CountRun(load_model(tiny_model_dir), out, CountSettings(scheduler=cluster.scheduler_address)).run(files)
    assert [r.status for r in recs] == ["ok"] * len(files)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["images_failed"] == 0


def test_a_full_disk_stops_a_cluster_run_at_once(cluster, tmp_path, tiny_model_dir, monkeypatch):
    """Issue 20, case 1 on a cluster: writing a result fails for want of space: the run stops with one
    error saying how far it got, instead of recording the disk's failure against every image."""
    import errno

    from eosdetect.errors import StorageError

    images = tmp_path / "in"
    images.mkdir()
    for p in SAMPLES:
        (images / p.name).write_bytes(p.read_bytes())
    files = sorted(images.iterdir())

    def full(self, rec, res):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "res" / "x_detections.csv"))

    monkeypatch.setattr(CountRun, "_write_remote", full)
    with pytest.raises(StorageError, match=f"disk full after 0 of {len(files)} images; nothing earlier was lost"):
        CountRun(load_model(tiny_model_dir), tmp_path / "res", CountSettings(scheduler=cluster.scheduler_address)).run(files)


def test_a_workers_model_folder_is_removed_when_the_worker_ends(tmp_path):
    """Issue 20, case 10: the folder a worker wrote the model into was left in the temp dir forever."""
    import subprocess
    import sys

    code = (
        "import tempfile, sys; tempfile.tempdir = sys.argv[1]\n"
        "from eosdetect.apps.batch.dask import _worker_model, model_payload\n"
        "from eosdetect.models.store import load_model\n"
        "key, files = model_payload(load_model('nuclei-he'))\n"
        "m = _worker_model(key, files); assert _worker_model(key, files) is m\n"
        "print(m.path); assert m.path.is_dir()\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    folder = out.stdout.strip().splitlines()[-1]
    assert folder.startswith(str(tmp_path)) and list(tmp_path.iterdir()) == []
