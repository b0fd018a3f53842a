"""Faults a busy lab hits (issue 20): a full disk, two runs in one folder, a run killed at any moment.

The disk-full cases run against a real full file system where one can be
mounted (a 1 MB tmpfs, as root), and everywhere with ``os.write`` patched
to raise ``ENOSPC`` once the output folder has taken its budget of bytes;
the concurrent and killed runs are real processes.
"""

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import disc_image, flat_png
from eosdetect.apps.cli import main
from eosdetect.io import write_image

linux_only = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")


def _images(folder: Path, n: int = 3, shape=(64, 80)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(folder / f"im{i}.png", disc_image(shape=shape, centres=((20, 20 + 3 * i), (40, 50))))
    return folder


def _count(args, capsys):
    code = main(["count", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock file aside), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "lock"}


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("eosdetect: error")]


_REAL_WRITE = os.write


class _DiskFills:
    """``os.write`` as on a disk with ``budget`` bytes free for files in ``folder``: past it, ENOSPC."""

    def __init__(self, folder: Path, budget: int):
        self.folder, self.budget = str(folder.resolve()), budget

    def __call__(self, fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(self.folder):
            if len(data) > self.budget:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.budget -= len(data)
        return _REAL_WRITE(fd, data)


@linux_only
def test_a_full_disk_keeps_earlier_results_and_stops_at_once(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """Case 1: re-run with --overwrite on a full disk: exit 1, one line, and every earlier file as it was;
    then with room for one image's files: it stops after that one; with space again it resumes."""
    images, out = _images(tmp_path / "imgs"), tmp_path / "res"
    assert _count([images, "-m", tiny_model_dir, "-o", out], capsys)[0] == 0
    before = _snapshot(out)

    monkeypatch.setattr(os, "write", _DiskFills(out, budget=0))
    code, _, err = _count([images, "-m", tiny_model_dir, "-o", out, "--overwrite"], capsys)
    assert code == 1
    assert _error_lines(err) == [f"eosdetect: error: {out}: disk full after 0 of 3 images; nothing earlier was "
                                 "lost; free some space and re-run to resume"], err
    assert _snapshot(out) == before  # no earlier file lost or changed, no temporary file left

    # other settings, room for one image's files and record (as large as a run with those settings
    # makes them): that image is replaced, the others kept
    other = ["--prob-threshold", "0.9", "--workers", "1"]
    assert _count([images, "-m", tiny_model_dir, "-o", tmp_path / "sizes", *other], capsys)[0] == 0
    sizes = _snapshot(tmp_path / "sizes")
    one_image = sum(len(sizes[k]) for k in sizes if k.startswith(("im0_", ".eosdetect/im0")))
    monkeypatch.setattr(os, "write", _DiskFills(out, budget=one_image + 400))  # and the lock's few bytes
    code, _, err = _count([images, "-m", tiny_model_dir, "-o", out, *other], capsys)
    assert code == 1 and len(_error_lines(err)) == 1 and "after 1 of 3 images" in err, err
    after = _snapshot(out)
    for name in ("im1_detections.csv", "im1_overlay.png", "im2_detections.csv", "im2_overlay.png"):
        assert after[name] == before[name]
    assert after["im0_detections.csv"] != before["im0_detections.csv"]

    monkeypatch.setattr(os, "write", _DiskFills(out, budget=10**9))
    code, out_text, err = _count([images, "-m", tiny_model_dir, "-o", out, "--prob-threshold", "0.9"], capsys)
    assert code == 0 and "1 already done" in out_text, err


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@linux_only
def test_a_really_full_file_system_keeps_earlier_results(tmp_path, tiny_model_dir, capsys):
    """Case 1 on a real file system that is full (a small tmpfs; needs root to mount)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2m"):
        pytest.skip("cannot mount a tmpfs here (needs root); the patched os.write test covers the logic")
    try:
        images, out = _images(tmp_path / "imgs"), disk / "res"
        assert _count([images, "-m", tiny_model_dir, "-o", out], capsys)[0] == 0
        before = _snapshot(out)
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # fill what is left of the disk
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        code, _, err = _count([images, "-m", tiny_model_dir, "-o", out, "--overwrite"], capsys)
        assert code == 1 and len(_error_lines(err)) == 1 and "disk full after 0 of 3 images" in err, err
        assert _snapshot(out) == before
        filler.unlink()
        code, _, err = _count([images, "-m", tiny_model_dir, "-o", out, "--overwrite"], capsys)
        assert code == 0, err
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# --------------------------------------------------------------------------- two runs, one folder

_HOLD = """
import sys
from pathlib import Path
from eosdetect.apps.batch.lock import FolderLock
out = Path(sys.argv[1])
with FolderLock(out, out / ".eosdetect" / "lock"):
    print("held", flush=True)
    sys.stdin.read()
"""


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "eosdetect.apps.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_a_second_run_into_a_busy_folder_refuses_and_writes_nothing(tmp_path, tiny_model_dir):
    """Case 2: while another process holds the output folder, ``count`` into it exits 1 with one line
    naming that process, and writes nothing; once it is gone, the folder is free."""
    images, out = _images(tmp_path / "imgs"), tmp_path / "res"
    (out / ".eosdetect").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = _cli("count", images, "-m", tiny_model_dir, "-o", out)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1 and f"eosdetect run {holder.pid} on " in lines[0], err
        assert "is writing to this folder" in lines[0]
        assert sorted(p.name for p in out.rglob("*")) == [".eosdetect", "lock"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    again = _cli("count", images, "-m", tiny_model_dir, "-o", out)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err


def test_two_counts_at_once_never_mix(tmp_path, tiny_model_dir):
    """Case 2 with two real counts started together with different settings: one refuses, and the
    folder holds the other's results alone (its settings in summary.json, every image its own)."""
    images, out = _images(tmp_path / "imgs", n=8, shape=(256, 256)), tmp_path / "res"
    runs = [_cli("count", images, "-m", tiny_model_dir, "-o", out, *extra)
            for extra in ((), ("--pixel-size", "0.9"))]
    results = [(r.wait(timeout=180), r.communicate()[1]) for r in runs]
    codes = sorted(code for code, _ in results)
    if codes == [0, 0]:  # the first was done before the second started: nothing mixed either
        pytest.skip("the runs did not overlap on this machine")
    assert codes == [0, 1], results
    winner = [i for i, (code, _) in enumerate(results) if code == 0][0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["pixel_size_um"] == (None, 0.9)[winner]
    assert summary["images_ok"] == 8 and summary["images_skipped_as_done"] == 0


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    """A run killed with SIGKILL leaves its lock file; the operating system dropped its flock, so the
    next run takes the folder without asking."""
    from eosdetect.apps.batch import lock as folder_lock

    out = tmp_path / "res"
    (out / ".eosdetect").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait(timeout=30)
    assert json.loads((out / ".eosdetect" / "lock").read_text())["pid"] == holder.pid
    with folder_lock.FolderLock(out, out / ".eosdetect" / "lock"):
        assert json.loads((out / ".eosdetect" / "lock").read_text())["pid"] == os.getpid()
    assert (out / ".eosdetect" / "lock").read_text() == ""


def test_a_lock_from_another_machine_is_respected_while_it_is_renewed(tmp_path):
    """On a network file system whose locks are local to each machine, flock cannot see a run on
    another machine: its lock is respected while it is renewed, and taken over once it is stale."""
    from eosdetect.apps.batch import lock as folder_lock

    out = tmp_path / "res"
    lock_path = out / ".eosdetect" / "lock"
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text(json.dumps({"pid": 4242, "host": "other-host", "started": time.time(),
                                     "command": "eosdetect count imgs"}))
    with pytest.raises(folder_lock.FolderBusy, match="eosdetect run 4242 on other-host .* is writing"):
        folder_lock.FolderLock(out, lock_path).acquire()
    old = time.time() - folder_lock.STALE_AFTER_S - 5
    os.utime(lock_path, (old, old))
    with folder_lock.FolderLock(out, lock_path):
        assert json.loads(lock_path.read_text())["host"] != "other-host"


# --------------------------------------------------------------------------- killed at any moment


def _comparable(folder: Path) -> dict[str, bytes]:
    """The files a user reads, as bytes, less what differs between any two runs: the seconds each image
    took (counts.csv), the run's seconds and how many images it found done (summary.json). Resume
    records are compared by name (they hold file times)."""
    files = {}
    for rel, data in _snapshot(folder).items():
        if rel.startswith(".eosdetect/"):
            files[rel] = b""
        elif rel == "counts.csv":
            rows = list(csv.reader(data.decode().splitlines()))
            col = rows[0].index("seconds")
            files[rel] = "\n".join(",".join(r[:col] + r[col + 1:]) for r in rows).encode()
        elif rel == "summary.json":
            summary = json.loads(data)
            for key in ("seconds", "images_skipped_as_done"):
                summary.pop(key)
            files[rel] = json.dumps(summary, sort_keys=True).encode()
        else:
            files[rel] = data
    return files


def _wait_for_lock(out: Path, pid: int, proc, limit_s: float = 120) -> bool:
    """Wait until ``proc`` holds the output folder (it has loaded the model and starts counting)."""
    lock_file = out / ".eosdetect" / "lock"
    end = time.time() + limit_s
    while time.time() < end and proc.poll() is None:
        try:
            if json.loads(lock_file.read_text() or "{}").get("pid") == pid:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return False


def test_killed_at_random_moments_the_rerun_gives_the_same_outputs(tmp_path, tiny_model_dir):
    """SIGKILL ``count`` at random moments while it counts, re-run after each kill, and finish: the
    outputs equal an uninterrupted run's, byte for byte (less the timings), every time."""
    images = _images(tmp_path / "imgs", n=10, shape=(800, 800))  # about 5 s of counting
    args = ["count", images, "-m", tiny_model_dir, "--workers", "2"]
    reference = tmp_path / "reference"
    ref = _cli(*args, "-o", reference)
    assert _wait_for_lock(reference, ref.pid, ref)
    counting_started = time.time()
    assert ref.wait(timeout=300) == 0, ref.communicate()[1]
    counting_s = time.time() - counting_started
    expected = _comparable(reference)

    seed = int(time.time())
    rng = random.Random(seed)
    out = tmp_path / "killed"
    kills = 0
    for round_ in range(5):
        proc = _cli(*args, "-o", out)
        if not _wait_for_lock(out, proc.pid, proc):
            proc.wait(timeout=300)
            continue  # done before it could be killed (everything was counted already)
        # the first kill falls while images remain (else a run that outlived its kill would leave nothing
        # to kill in the later rounds); the others may also fall as the run ends
        time.sleep(rng.uniform(0, counting_s * (0.7 if round_ == 0 else 1.2)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        proc.communicate()
    final = _cli(*args, "-o", out)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert kills >= 1, f"no run was killed while counting (seed {seed})"
    got = _comparable(out)
    assert sorted(got) == sorted(expected), f"seed {seed}"
    for name in expected:
        assert got[name] == expected[name], f"{name} differs after {kills} kills (seed {seed})"


# --------------------------------------------------------------------------- images that decode huge


def test_a_small_png_that_decodes_huge_is_refused_up_front(tmp_path, tiny_model_dir, capsys):
    """Case 4: a 1.2 MB PNG of 19999 x 19999 was accepted and peaked at 6 GB. Its pixels alone would
    take 1.6 GB decoded, so it is refused before decoding, naming its size and the limit, and what
    to do instead; the other images are counted."""
    import tracemalloc

    images = _images(tmp_path / "imgs", n=1)
    flat_png(images / "huge.png", 19999, 19999)
    assert (images / "huge.png").stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        code, out, err = _count([images, "-m", tiny_model_dir, "-o", tmp_path / "res"], capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 1 and "1 image(s) counted" in out
    [line] = _error_lines(err)
    assert "huge.png: image of 19999x19999 takes 1.6 GB decoded, over the limit of 1.0 GB" in line
    assert "save it as a tiled TIFF" in line
    assert peak < 200e6, f"{peak / 1e6:.0f} MB taken to refuse it"


def test_a_large_png_is_counted_block_by_block_in_bounded_memory(tmp_path, tiny_model_dir):
    """Case 4: a PNG of 250 MP (under the limit) is counted as a slide is, block by block: the whole
    process stays under 2.5 GB (its decoded pixels take 1 GB of that)."""
    images = tmp_path / "imgs"
    images.mkdir()
    flat_png(images / "large.png", 15800, 15800)
    code = ("import resource, sys\n"
            "from eosdetect.apps.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, "count", str(images), "-m", str(tiny_model_dir),
                           "-o", str(tmp_path / "res")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_gb = int(proc.stderr.rsplit("peak_kb", 1)[1].split()[0]) / 1e6
    assert peak_gb < 2.5, f"peak {peak_gb:.2f} GB"
    rows = list(csv.DictReader(open(tmp_path / "res" / "counts.csv")))
    assert rows[0]["status"] == "ok" and rows[0]["width"] == "15800"
    assert (tmp_path / "res" / "large_heatmap.png").is_file()  # counted as slides are


def test_a_png_counted_block_by_block_finds_what_its_tiff_finds(tmp_path, tiny_model_dir):
    """The block-by-block path for a PNG (decoded once) gives the detections of the same image as a
    tiled TIFF (read tile by tile)."""
    import numpy as np
    import tifffile

    from eosdetect.apps.batch.run import CountRun, CountSettings
    from eosdetect.models.store import load_model

    image = np.tile(disc_image(shape=(200, 240), centres=((50, 60), (120, 150), (170, 40))), (6, 6, 1))
    write_image(tmp_path / "m.png", image)
    tifffile.imwrite(tmp_path / "m.tif", image, tile=(256, 256), photometric="rgb")
    model = load_model(tiny_model_dir)
    found = {}
    for name in ("m.png", "m.tif"):
        out = tmp_path / name.replace(".", "_")
        [rec] = CountRun(model, out, CountSettings(slide_block=256, slide_min_pixels=1_000_000)).run([tmp_path / name])
        assert rec.status == "ok" and (out / "m_heatmap.png").is_file(), rec.error
        found[name] = (out / "m_detections.csv").read_bytes()
    assert found["m.png"] == found["m.tif"] and found["m.png"].count(b"\n") > 10
