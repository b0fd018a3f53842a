"""Counting a batch of images into an output folder, resumably: the orchestration.

For every image: ``<name>_detections.csv``, ``<name>_overlay.png`` and a row in
``counts.csv``; for the run: ``summary.json``. Every file is written
atomically. A per-image record in ``OUT_DIR/.eosdetect/`` is written last and
marks the image done; a re-run with the same settings skips done images
(unless ``overwrite``), so an interrupted run resumes where it stopped. A bad
image is recorded with its error and the others carry on.

:class:`CountRun` names the outputs (:mod:`~eosdetect.apps.batch.naming`),
finds what is done (:mod:`~eosdetect.apps.batch.resume`), has each image
analysed (:func:`eosdetect.analysis.image.analyse`,
:func:`eosdetect.analysis.slide.analyse_slide`) here in threads
(:mod:`~eosdetect.apps.batch.local`) or on a Dask cluster
(:mod:`~eosdetect.apps.batch.dask`), and writes the files
(:mod:`~eosdetect.apps.batch.tables`).
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

from eosdetect.analysis.image import analyse
from eosdetect.analysis.slide import analyse_slide
from eosdetect.apps.batch import resume
from eosdetect.apps.batch.dask import Cluster, WorkerSettings
from eosdetect.apps.batch.local import default_workers, run_in_order
from eosdetect.apps.batch.lock import FolderLock
from eosdetect.apps.batch.naming import output_paths, run_names
from eosdetect.apps.batch.tables import (
    CountRow,
    ImageRecord,
    count_columns,
    error_row,
    exports_of,
    image_row,
    run_differential,
    run_summary,
    slide_row,
    write_counts,
    write_outputs,
)
from eosdetect.apps.layout import LOCK_FILE, RUN_RECORD_DIR
from eosdetect.core.clinical import DEFAULT_HPF_AREA_MM2, default_flag_threshold
from eosdetect.core.differential import Differential
from eosdetect.errors import EosdetectError, InputError, StorageError
from eosdetect.io import read_image, remove_stale_temp_files, write_json
from eosdetect.models.config import Thresholds
from eosdetect.models.slides import SlideStopped
from eosdetect.slideio import is_slide

#: While a folder is counted, counts.csv and summary.json are rewritten at most this often
#: (each image's own files and resume record are written as soon as it is done).
TABLES_EVERY_S = 2.0
#: Write failures that are the machine's whatever file they hit (the run stops at the first), in words.
STORAGE_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EFBIG: "file too large for its file system"}


@dataclass
class CountSettings:
    pixel_size_um: float | None = None
    hpf_area_mm2: float = DEFAULT_HPF_AREA_MM2
    threshold: float | None = None  # per-HPF flag; None: the model's default (15 for eosinophils, else none)
    thresholds: Thresholds | None = None  # None: the model's own
    overlay: bool = True
    #: Formats to also write each image's cells in (``count --export``; see
    #: :data:`~eosdetect.apps.batch.tables.EXPORT_FORMATS`).
    exports: tuple[str, ...] = ()
    overwrite: bool = False
    #: Whole-slide images: block side at the model's scale, and the size (pixels) from which an
    #: image of any format is counted block by block (see :mod:`eosdetect.models.slides`).
    slide_block: int = 1024
    slide_min_pixels: int = 64_000_000
    #: Images counted at once in threads (0: :func:`~eosdetect.apps.batch.local.default_workers`).
    workers: int = 0
    #: A Dask scheduler address (``tcp://host:8786``): count on that cluster (see :mod:`eosdetect.apps.batch.dask`).
    scheduler: str | None = None


class CountRun:
    """Count cells in many images with one model, writing results to ``out_dir``."""

    def __init__(self, model, out_dir: str | os.PathLike, settings: CountSettings | None = None):
        self.model = model
        self.out_dir = Path(out_dir)
        self.settings = settings or CountSettings()
        self.thresholds = self.settings.thresholds or model.thresholds
        t = self.settings.threshold
        self.flag_threshold = t if t is not None else default_flag_threshold(model.config.class_name)
        self.columns = count_columns(model.config)
        self.records: list[ImageRecord] = []
        self.summary: dict | None = None  # what summary.json holds, once written
        #: The white-cell differential of the images counted (multi-class helpers), once summary.json is written.
        self.differential: Differential | None = None
        self._stop = threading.Event()  # set when the run is interrupted: a slide stops at its next block
        self._tables_at = 0.0

    # ------------------------------------------------------------------ settings
    def settings_dict(self) -> dict:
        s = self.settings
        return {
            "model": self.model.config.name,
            "model_version": self.model.config.version,
            "model_path": str(self.model.path),
            "pixel_size_um": s.pixel_size_um,
            "pixel_size_source": ("--pixel-size (densities only: the model's sizes are in pixels of its training "
                                  "images, so images are not rescaled)" if self.model.config.sizes_in_pixels else
                                  "--pixel-size") if s.pixel_size_um else
            f"not given; images assumed to be {self.model.config.input_pixel_size_um} um/px (the model's training "
            "data), except whole-slide images with a pixel size in their metadata (counts.csv pixel_size_um)",
            "hpf_area_mm2": s.hpf_area_mm2,
            "threshold_per_hpf": self.flag_threshold,
            "thresholds": self.thresholds.to_dict(),
        }

    # ------------------------------------------------------------------ batch
    def run(self, images: list[Path], *, progress: Callable[[ImageRecord], None] | None = None) -> list[ImageRecord]:
        """Count every image; a failing image is recorded and skipped.

        Images are counted ``workers`` at a time in threads
        (:func:`~eosdetect.apps.batch.local.run_in_order`), or on the Dask
        cluster at ``scheduler``. Whole-slide images are counted one at a
        time, here. Records, ``counts.csv`` and the resume records follow
        the input order.
        """
        record_dir = self.out_dir / RUN_RECORD_DIR
        record_dir.mkdir(parents=True, exist_ok=True)
        with FolderLock(self.out_dir, record_dir / LOCK_FILE):  # one run at a time in a folder
            for folder in (self.out_dir, record_dir):  # what a run killed while writing left
                remove_stale_temp_files(folder)
            fingerprint = resume.settings_fingerprint(self.settings_dict(), self.model.digest())
            self._stop.clear()
            self.records = []
            self._tables_at = 0.0
            started = time.time()
            try:
                with self._writing():
                    names = self._names(images)
                jobs = [self._job(path, name, fingerprint) for path, name in zip(images, names)]
                if self.settings.scheduler:
                    return self._run_on_cluster(jobs, fingerprint, started, progress)
                return self._run_here(jobs, fingerprint, started, progress)
            except _OutputFailed as failed:
                raise StorageError(self._stopped_message(failed.error, len(images))) from None

    @contextmanager
    def _writing(self):
        """Around writes into the output folder: a failure that is the machine's (a full disk, a quota,
        a read-only folder) becomes :class:`_OutputFailed`, which stops the run."""
        try:
            yield
        except OSError as exc:
            if exc.errno in STORAGE_ERRNOS or _inside(exc.filename, self.out_dir):
                raise _OutputFailed(exc) from None
            raise

    def _stopped_message(self, exc: OSError, total: int) -> str:
        """The one line of a run stopped by a write failure."""
        what = STORAGE_ERRNOS.get(exc.errno) or f"cannot write {exc.filename or 'the results'} ({exc.strerror})"
        fix = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "put that right"
        return (f"{self.out_dir}: {what} after {len(self.records)} of {total} images; nothing earlier was lost; "
                f"{fix} and re-run to resume")

    def _names(self, images: list[Path]) -> list[str]:
        """Output names of ``images`` (:func:`~eosdetect.apps.batch.naming.run_names`); files of an
        image recorded under another name are moved to its new one."""
        recorded = resume.recorded_images(self.out_dir)
        names = run_names(images, recorded)
        resume.follow_renames(self.out_dir, images, names, recorded)
        return names

    def _job(self, path: Path, name: str, fingerprint: str) -> ImageRecord:
        """The record of an image about to be counted; ``skipped``, with its row, when it is done."""
        rec = ImageRecord(image=str(path), name=name)
        cached = None if self.settings.overwrite else resume.done_row(self.out_dir, path, name, fingerprint,
                                                                      overlay=self.settings.overlay,
                                                                      exports=self.settings.exports)
        if cached is not None:
            rec.row, rec.status = replace(cached, image=str(path)), "skipped"
        return rec

    def _run_here(self, jobs: list[ImageRecord], fingerprint: str, started: float, progress) -> list[ImageRecord]:
        """:meth:`run` in threads on this machine."""
        if any(rec.status != "skipped" for rec in jobs):
            self.model.predict_fn  # noqa: B018 - build the networks once, before threads share them
            self.model.class_probs_fn  # noqa: B018

        def tasks():
            for rec in jobs:
                if rec.status == "skipped":
                    yield rec, None, False
                else:
                    path = Path(rec.image)
                    slide = is_slide(path, self.settings.slide_min_pixels)  # its header read once
                    yield rec, partial(self.count_image, path, rec.name, slide=slide), slide

        def finish(rec: ImageRecord, outcome) -> None:
            if outcome is not None:
                self._settle(rec, fingerprint, outcome)
            if not (self.records and self.records[-1] is rec):  # finished again after an interruption
                self.records.append(rec)
            self._finished(rec, started, progress)

        try:
            run_in_order(tasks(), finish, workers=self.settings.workers or default_workers(), stop=self._stop)
        except BaseException:  # interrupted: the tables list the images counted (and marked done)
            self._write_tables_if_possible(started)
            raise
        self._write_tables(started, partial=False)
        return self.records

    def _run_on_cluster(self, jobs: list[ImageRecord], fingerprint: str, started: float,
                        progress) -> list[ImageRecord]:
        """:meth:`run` on a Dask cluster: workers count, this process writes (see
        :mod:`eosdetect.apps.batch.dask`). Whole-slide images are counted here."""
        s = self.settings
        finished: dict[int, ImageRecord] = {}

        def record(i: int) -> None:
            finished[i] = jobs[i]
            self.records = [finished[k] for k in sorted(finished)]
            self._finished(jobs[i], started, progress)

        def done(i: int, res) -> None:
            rec = jobs[i]
            if res.error:
                self._fail(rec, InputError(Path(rec.image), res.error))
                self._discard_outputs(rec)
            else:
                self._settle(rec, fingerprint, partial(self._write_remote, rec, res))
            record(i)

        with Cluster(s.scheduler, self.model) as cluster:  # an unreachable scheduler: one error, nothing written
            remote, here = [], []
            for i, rec in enumerate(jobs):
                if rec.status == "skipped":
                    record(i)
                elif is_slide(Path(rec.image), s.slide_min_pixels):
                    here.append(i)
                else:
                    remote.append(i)
            settings = WorkerSettings(pixel_size_um=s.pixel_size_um, thresholds=self.thresholds,
                                      hpf_area_mm2=s.hpf_area_mm2, flag_threshold=self.flag_threshold,
                                      overlay=s.overlay, exports=s.exports)
            try:
                cluster.count([(i, Path(jobs[i].image)) for i in remote], settings, done)
                for i in here:
                    self._settle(jobs[i], fingerprint, partial(self.count_image, Path(jobs[i].image), jobs[i].name,
                                                               slide=True))
                    record(i)
            except BaseException:
                self._write_tables_if_possible(started)
                raise
        self._write_tables(started, partial=False)
        return self.records

    def _finished(self, rec: ImageRecord, started: float, progress) -> None:
        """An image is done: the tables now and then, and the caller's progress."""
        if time.time() - self._tables_at >= TABLES_EVERY_S:  # a write failure here stops the run
            self._write_tables(started, partial=True)
            self._tables_at = time.time()
        if progress is not None:
            progress(rec)

    # ------------------------------------------------------------------ one image
    def count_image(self, image_path: Path, name: str, *, slide: bool | None = None) -> CountRow:
        """Analyse one image and write its files; returns its counts.csv row. ``slide``: whether it is
        counted block by block (None: :func:`~eosdetect.slideio.is_slide` tells)."""
        if slide is None:
            slide = is_slide(image_path, self.settings.slide_min_pixels)
        if slide:
            return self.count_slide(image_path, name)
        t0 = time.perf_counter()
        image = read_image(image_path)
        s = self.settings
        a = analyse(self.model, image, source=image_path, pixel_size_um=s.pixel_size_um, thresholds=self.thresholds,
                    hpf_area_mm2=s.hpf_area_mm2, flag_threshold=self.flag_threshold)
        write_outputs(output_paths(self.out_dir, name), a.detections.rows(), overlay=a.overlay() if s.overlay else None,
                      exports=exports_of(a, image_path, s.exports),
                      before_replacing=partial(resume.withdraw, self.out_dir, name))
        return image_row(str(image_path), a, seconds=time.perf_counter() - t0)

    def count_slide(self, path: Path, name: str) -> CountRow:
        """A whole-slide image, block by block: the usual files (the overlay at thumbnail
        size) and ``<name>_heatmap.png``; returns its counts.csv row."""
        from tqdm import tqdm

        t0 = time.perf_counter()
        s = self.settings
        bar = tqdm(desc=f"{path.name} (blocks)", unit="block", leave=False, disable=None, file=sys.stderr)

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            sa = analyse_slide(self.model, path, pixel_size_um=s.pixel_size_um, thresholds=self.thresholds,
                               hpf_area_mm2=s.hpf_area_mm2, flag_threshold=self.flag_threshold,
                               block_px=s.slide_block, progress=progress, stop=self._stop.is_set)
        except SlideStopped:  # Ctrl-C: this slide stops now, not after its last block, and is not recorded
            raise KeyboardInterrupt from None
        finally:
            bar.close()
        write_outputs(output_paths(self.out_dir, name), sa.detections.rows(),
                      overlay=sa.overlay() if s.overlay else None, heatmap=sa.heatmap() if s.overlay else None,
                      exports=exports_of(sa, path, s.exports),
                      before_replacing=partial(resume.withdraw, self.out_dir, name))
        return slide_row(str(path), sa, seconds=time.perf_counter() - t0)

    def _write_remote(self, rec: ImageRecord, res) -> CountRow:
        """Write the files of an image a cluster worker counted; returns its counts.csv row."""
        write_outputs(output_paths(self.out_dir, rec.name), res.detections, overlay=res.overlay_png,
                      exports=res.exports, before_replacing=partial(resume.withdraw, self.out_dir, rec.name))
        return replace(res.row, image=rec.image)

    def _settle(self, rec: ImageRecord, fingerprint: str, work: Callable[[], CountRow]) -> None:
        """``work()`` writes one image's files and returns its counts.csv row; then the image is
        marked done. A failure is recorded on this image alone, and the run goes on, unless it is
        the machine's (a full disk: :meth:`_writing`), which stops the run and keeps the files of
        earlier runs."""
        try:
            with self._writing():
                rec.row = work()
                self._mark_done(rec, fingerprint)
        except _OutputFailed:
            raise
        except EosdetectError as exc:
            self._fail(rec, exc)
        except MemoryError:
            rec.status, rec.error = "error", f"{rec.image}: out of memory"
            rec.row = error_row(rec.image, "out of memory")
        except Exception as exc:  # noqa: BLE001 - one image's failure must not lose the others
            reason = _unexpected_reason(exc)
            rec.status, rec.error = "error", f"{rec.image}: {reason}"
            rec.row = error_row(rec.image, reason)
        if rec.status == "error":
            self._discard_outputs(rec)

    def _mark_done(self, rec: ImageRecord, fingerprint: str) -> None:
        """Written last: the record that lets a re-run skip this image."""
        resume.mark_done(self.out_dir, rec.name, Path(rec.image), fingerprint, rec.row)

    def _discard_outputs(self, rec: ImageRecord) -> None:
        resume.discard(self.out_dir, rec.name)

    @staticmethod
    def _fail(rec: ImageRecord, exc: EosdetectError) -> None:
        path = Path(rec.image)
        rec.status, rec.error = "error", str(exc)
        rec.row = error_row(str(path), _error_reason(exc, path))

    # ------------------------------------------------------------------ tables
    def _write_tables(self, started: float, *, partial: bool) -> None:
        """``counts.csv`` and ``summary.json`` of the records so far (sets :attr:`summary`, :attr:`differential`)."""
        self.differential = run_differential(self.records, self.model.config)
        self.summary = run_summary(self.records, model=self.model, settings=self.settings_dict(),
                                   differential=self.differential, hpf_area_mm2=self.settings.hpf_area_mm2,
                                   flag_threshold=self.flag_threshold, complete=not partial,
                                   seconds=time.time() - started)
        with self._writing():
            write_counts(self.out_dir / "counts.csv", self.records, self.columns)
            write_json(self.out_dir / "summary.json", self.summary)

    def _write_tables_if_possible(self, started: float) -> None:
        """The tables of a run that is stopping: a table that cannot be written now (the disk that
        stopped the run is full) stays as it was."""
        try:
            self._write_tables(started, partial=True)
        except _OutputFailed:
            pass


class _OutputFailed(Exception):
    """A write into the output folder failed for a reason of the machine (see :meth:`CountRun._writing`)."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def _inside(filename, folder: Path) -> bool:
    """Whether the file an error names lies in ``folder``."""
    if not filename:
        return False
    try:
        return Path(os.fsdecode(filename)).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError, TypeError):
        return False


def _unexpected_reason(exc: Exception) -> str:
    """One line for an error that is not a known input problem (disk full, a bug of ours)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, OSError):
        return (exc.strerror or text or type(exc).__name__) + (f" ({exc.filename})" if exc.filename else "")
    return f"internal error ({type(exc).__name__}{': ' + text if text else ''}); please report it"


def _error_reason(exc: Exception, path: Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text
