"""Counting a batch of images into an output folder, resumably.

For every image: ``<name>_detections.csv``, ``<name>_overlay.png`` and a row in
``counts.csv``; for the run: ``summary.json``. Every file is written
atomically. A per-image record in ``OUT_DIR/.eosdetect/`` is written last and
marks the image done; a re-run with the same settings skips done images
(unless ``overwrite``), so an interrupted run resumes where it stopped. A bad
image is recorded with its error and the others carry on.

With a multi-class helper (``ModelConfig.multiclass``) every image also gets
its white-cell differential (:mod:`eosdetect.core.differential`): one
``n_<class>`` column per class at the end of ``counts.csv`` (kept in the
resume records with the rest of the row), their sum in ``summary.json``'s
``differential``, and each candidate outlined in its class's colour on the
overlay, with a legend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from eosdetect import __version__
from eosdetect.core.clinical import DEFAULT_HPF_AREA_MM2, HpfSummary, default_flag_threshold, hpf_summary
from eosdetect.core.differential import Differential, class_columns, differential_of
from eosdetect.errors import EosdetectError, InputError
from eosdetect.io import RUN_RECORD_DIR, atomic_write_bytes, is_grey, read_image, read_json, write_csv, write_image, write_json
from eosdetect.models.config import Thresholds
from eosdetect.analysis.overlay import class_colours, draw_overlay
from eosdetect.core.postprocess import DETECTION_COLUMNS
from eosdetect.models.model import Result

log = logging.getLogger(__name__)

COUNT_COLUMNS = (
    "image", "status", "count", "width", "height", "pixel_size_um", "area_mm2", "density_per_mm2",
    "peak_hpf_count", "hpf_flag", "candidates", "seconds", "error",
)
#: While a folder is counted, counts.csv and summary.json are rewritten at most this often
#: (each image's own files and resume record are written as soon as it is done).
TABLES_EVERY_S = 2.0


def count_columns(config) -> tuple[str, ...]:
    """The columns of counts.csv for a model: :data:`COUNT_COLUMNS`, then, with a multi-class
    helper, one ``n_<class>`` per class (:func:`eosdetect.core.differential.class_columns`)."""
    return COUNT_COLUMNS + class_columns(config)


def default_workers() -> int:
    """Images counted at once: the CPU cores plus one (at most 4). On 2 cores, 3 threads
    count the 292 BCCD photos 1.5x faster than one (scripts/bench_folder.py)."""
    return max(1, min(4, (os.cpu_count() or 1) + 1))


@dataclass
class CountSettings:
    pixel_size_um: float | None = None
    hpf_area_mm2: float = DEFAULT_HPF_AREA_MM2
    threshold: float | None = None  # per-HPF flag; None: the model's default (15 for eosinophils, else none)
    thresholds: Thresholds | None = None  # None: the model's own
    overlay: bool = True
    overwrite: bool = False
    #: Whole-slide images: block side at the model's scale, and the pyramidal-TIFF size
    #: from which a TIFF is counted block by block (see :mod:`eosdetect.models.slides`).
    slide_block: int = 1024
    slide_min_pixels: int = 64_000_000
    #: Images counted at once in threads (0: :func:`default_workers`).
    workers: int = 0
    #: A Dask scheduler address (``tcp://host:8786``): count on that cluster (see :mod:`eosdetect.apps.distributed`).
    scheduler: str | None = None


@dataclass
class ImageRecord:
    image: str
    name: str
    status: str = "ok"
    error: str = ""
    row: dict = field(default_factory=dict)


def output_names(paths: list[Path], taken: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """File-name stems for outputs: the image stem, prefixed by parent folders when two
    images share a stem (``a/x.png``, ``b/x.png`` -> ``a__x``, ``b__x``), with its
    extension when they are in one folder (``x.png``, ``x.jpg`` -> ``x.png``, ``x.jpg``).
    A name that is still shared, or is in ``taken`` (the results of other images), is
    numbered (``x__2``); a very long one is shortened, with a hash of the whole kept."""
    folder_stems: dict[tuple[Path, str], int] = {}
    for p in paths:
        key = (p.resolve().parent, p.stem)
        folder_stems[key] = folder_stems.get(key, 0) + 1
    bases = [p.name if folder_stems[(p.resolve().parent, p.stem)] > 1 else p.stem for p in paths]
    names = list(bases)
    depth = 0
    while len(set(names)) < len(names) and depth < 32:
        depth += 1
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        names = [
            "__".join([*p.parent.parts[-depth:], base]) if counts[n] > 1 else n
            for p, base, n in zip(paths, bases, names)
        ]
    return _numbered([_short_name(n.replace(os.sep, "_").replace(":", "_")) for n in names], taken)


def _numbered(names: list[str], taken) -> list[str]:
    """Names still shared (same file name in identical folder names, or ``t:1`` beside ``t_1``),
    or in ``taken``, get a number."""
    used = set(taken)
    out = []
    for n in names:
        unique, k = n, 1
        while unique in used:
            k += 1
            unique = f"{n}__{k}"
        used.add(unique)
        out.append(unique)
    return out


#: Images smaller than this fraction of a high-power field get a note on their per-HPF figures.
SMALL_IMAGE_HPF_FRACTION = 0.5

#: Output names are kept to this many bytes (file systems allow 255, with the suffixes and temporary files).
MAX_NAME_BYTES = 160


def _short_name(name: str) -> str:
    raw = os.fsencode(name)
    if len(raw) <= MAX_NAME_BYTES:
        return name
    tag = hashlib.sha1(raw).hexdigest()[:10]
    return raw[: MAX_NAME_BYTES - 12].decode("utf-8", "ignore") + "~" + tag  # no half character kept


MIN_SIDE = 8


@dataclass
class Analysis:
    """What :func:`analyse_image` found: the counts.csv fields, the detection
    result, the overlay picture (None when not asked for), the clinical summary
    (None without a pixel size) and the white-cell differential (None without a
    multi-class helper; ``row`` holds it too, as its ``n_<class>`` fields)."""

    row: dict
    result: Result
    overlay: np.ndarray | None = None
    hpf: HpfSummary | None = None
    differential: Differential | None = None

    @property
    def detections(self):
        return self.result.detections


def analyse_image(
    model,
    image: np.ndarray,
    *,
    source="image",
    pixel_size_um: float | None = None,
    thresholds: Thresholds | None = None,
    hpf_area_mm2: float = DEFAULT_HPF_AREA_MM2,
    threshold: float | None = None,
    overlay: bool = True,
) -> Analysis:
    """Count the cells in one RGB image: detections, the clinical summary when
    the pixel size is known, and the overlay. Used by ``eosdetect count`` and
    by the web service, so both give the same answer.

    ``source`` names the image in errors (a path or an upload's file name).
    ``threshold`` is the per-HPF count that raises the flag (``None``: the
    model's default, see :func:`eosdetect.core.clinical.default_flag_threshold`).
    """
    if threshold is None:
        threshold = default_flag_threshold(model.config.class_name)
    rows, cols = image.shape[:2]
    if rows < MIN_SIDE or cols < MIN_SIDE:
        raise InputError(source, f"image of {cols}x{rows} px is too small (at least {MIN_SIDE}x{MIN_SIDE})")
    thr = thresholds if thresholds is not None else model.thresholds
    res = model.detect(image, pixel_size_um=pixel_size_um, thresholds=thr)
    det = res.detections
    row = {
        "status": "ok", "count": len(det), "width": cols, "height": rows,
        "pixel_size_um": pixel_size_um, "area_mm2": None, "density_per_mm2": None,
        "peak_hpf_count": None, "hpf_flag": None, "candidates": len(res.candidates), "error": "",
    }
    diff = differential_of(res, model.config)
    if diff is not None:
        row.update(diff.columns())
    peak_box = None
    caption = []
    hpf = None
    if is_grey(image):  # a stain model sees no stain: a low count would look like a true one
        row["warning"] = (f"a grey image, but {model.config.name} was trained on stained colour images: "
                          "cells may be missed")
        caption.append("grey image: colour model, cells may be missed")
    if pixel_size_um:
        hpf = hpf_summary(det.xy, (rows, cols), pixel_size_um, hpf_area_mm2=hpf_area_mm2, threshold=threshold)
        row.update(area_mm2=_sig(hpf.area_mm2), density_per_mm2=round(hpf.density_per_mm2, 2),
                   peak_hpf_count=hpf.peak_count, hpf_flag=hpf.flag)
        caption.append(f"{hpf.density_per_mm2:.1f}/mm2, peak {hpf.peak_count}/HPF"
                       + (f"  >= {threshold:g}" if hpf.flag else ""))
        if not hpf.whole_image_is_one_hpf:
            peak_box = hpf.peak_box
            caption.append("orange frame: the densest high-power field")
    over = None
    if overlay:
        t0 = time.perf_counter()
        rejected = classified = legend = None
        if diff is not None:
            classified, legend = _class_layers(res, model.config.class_name, diff)
            caption.append(f"{diff.white_cells} white cells; outline colour = class:")
        elif model.config.helper_enabled:
            rejected = res.candidates.subset(res.candidates.score < thr.helper_threshold)
            caption.append(f"grey outline: {model.config.unet_class_name} not counted ({len(rejected)})")
        over = draw_overlay(image, det, labels=res.labels, rejected=rejected, classified=classified, legend=legend,
                            title=f"{model.config.class_name}: {len(det)}   {Path(str(source)).name}",
                            lines=caption, highlight_box=peak_box)
        res.timings["overlay"] = time.perf_counter() - t0
    return Analysis(row=row, result=res, overlay=over, hpf=hpf, differential=diff)


def _class_layers(res: Result, counted: str, diff: Differential) -> tuple[list, list]:
    """For the overlay of a multi-class helper: the candidates of each class but the counted one,
    each group with its colour (thin outlines), and the legend entries (class and count, colour)."""
    colours = class_colours(res.class_names, counted)
    groups = [(res.candidates.subset(res.candidate_class == k), colours[name])
              for k, name in enumerate(res.class_names) if name != counted]
    legend = [(f"{name} {n}", colours[name]) for name, n in diff.counts.items()]
    return groups, legend


def _sig(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant digits (an area of 0.000101 mm2 keeps its 101)."""
    return float(f"{value:.{digits}g}")


def _unexpected_reason(exc: Exception) -> str:
    """One line for an error that is not a known input problem (disk full, a bug of ours)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, OSError):
        return (exc.strerror or text or type(exc).__name__) + (f" ({exc.filename})" if exc.filename else "")
    return f"internal error ({type(exc).__name__}{': ' + text if text else ''}); please report it"


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

    def _fingerprint(self) -> str:
        d = self.settings_dict()
        d.pop("model_path")
        d["model_files"] = self.model.digest()  # other weights, other results
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ paths
    def _paths(self, name: str) -> dict[str, Path]:
        return {
            "detections": self.out_dir / f"{name}_detections.csv",
            "overlay": self.out_dir / f"{name}_overlay.png",
            "heatmap": self.out_dir / f"{name}_heatmap.png",  # slides only
            "state": self.out_dir / RUN_RECORD_DIR / f"{name}.json",
        }

    def _names(self, images: list[Path]) -> list[str]:
        """Output names of ``images``; the results of other images, counted into this folder by
        an earlier run and still there, keep theirs (``slideA/x.jpg`` counted before ``slideB/x.jpg``:
        ``x`` stays slideA's, the new one is ``slideB__x``)."""
        recorded: dict[str, str] = {}  # output name -> image, from the resume records
        for state in sorted((self.out_dir / RUN_RECORD_DIR).glob("*.json")):
            try:
                record = read_json(state)
                recorded[state.stem] = str(record.get("resolved") or record["image"])
            except (InputError, KeyError, TypeError, AttributeError):
                continue
        here = {p.resolve() for p in images}
        others = {name: Path(image) for name, image in recorded.items()
                  if Path(image).resolve() not in here and Path(image).is_file()}
        names = output_names(images)
        clash = set(names) & set(others)
        if clash:  # those get their folder in front, as if the other images were in this run
            combined = output_names([*(p.resolve() for p in images), *others.values()])[: len(images)]
            names = _numbered([c if n in clash else n for n, c in zip(names, combined)], taken=set(others))
        self._follow_renames(images, names, recorded)
        return names

    def _follow_renames(self, images: list[Path], names: list[str], recorded: dict[str, str]) -> None:
        """Files of an image counted before under another output name (its stem became shared when an
        image of the same stem joined the run, or stopped being shared) take its new name, so that
        nothing stale is left behind under the old one and the re-run can still skip the image."""
        wanted = {p.resolve(): n for p, n in zip(images, names)}
        moves = [(old, wanted[Path(image).resolve()]) for old, image in recorded.items()
                 if wanted.get(Path(image).resolve(), old) != old]
        if not moves:
            return
        state_dir = self.out_dir / RUN_RECORD_DIR
        # two passes, through a side folder: a new name may be another moving image's old one
        side = state_dir / "renaming"
        side.mkdir(exist_ok=True)
        for i, (old, _) in enumerate(moves):
            for key, path in self._paths(old).items():
                if path.is_file():
                    os.replace(path, side / f"{i}.{key}")
        for i, (_, new) in enumerate(moves):
            after = self._paths(new)
            for key in ("detections", "overlay", "heatmap", "state"):  # the record last
                if (side / f"{i}.{key}").is_file():
                    os.replace(side / f"{i}.{key}", after[key])
                else:  # what another image left under this name is not this image's
                    after[key].unlink(missing_ok=True)
        shutil.rmtree(side, ignore_errors=True)

    def _done(self, image: Path, name: str, fingerprint: str) -> dict | None:
        p = self._paths(name)
        if not p["state"].is_file() or not p["detections"].is_file():
            return None
        if self.settings.overlay and not p["overlay"].is_file():
            return None
        try:
            state = read_json(p["state"])
        except InputError:
            return None
        if self.settings.overlay and "overlay" not in state.get("outputs", ["overlay"]):
            return None  # counted without an overlay: the one there is older than these results
        if (state.get("fingerprint") != fingerprint
                or Path(str(state.get("resolved") or state.get("image"))).resolve() != image.resolve()):
            return None
        if not all(p[k].is_file() for k in state.get("outputs", []) if k in p):
            return None  # an output was deleted since
        try:
            st = image.stat()
        except OSError:
            return None
        if state.get("mtime") != st.st_mtime or state.get("size") != st.st_size:
            return None
        return state.get("row")

    # ------------------------------------------------------------------ one image
    def count_image(self, image_path: Path, name: str) -> dict:
        """Process one image and write its files; returns its counts.csv row."""
        from eosdetect.slideio import is_slide

        if is_slide(image_path, self.settings.slide_min_pixels):
            return self.count_slide(image_path, name)
        t0 = time.perf_counter()
        image = read_image(image_path)
        s = self.settings
        a = analyse_image(self.model, image, source=image_path, pixel_size_um=s.pixel_size_um,
                          thresholds=self.thresholds, hpf_area_mm2=s.hpf_area_mm2, threshold=self.flag_threshold,
                          overlay=s.overlay)
        p = self._paths(name)
        write_csv(p["detections"], DETECTION_COLUMNS, a.detections.rows())
        self._write_pictures(p, overlay=a.overlay)
        return {"image": str(image_path), **a.row, "seconds": round(time.perf_counter() - t0, 3)}

    def count_slide(self, path: Path, name: str) -> dict:
        """A whole-slide image, block by block: the usual files (the overlay at thumbnail
        size) and ``<name>_heatmap.png``; returns its counts.csv row."""
        import sys

        from tqdm import tqdm

        from eosdetect.analysis.heatmap import density_heatmap

        t0 = time.perf_counter()
        s = self.settings
        bar = tqdm(desc=f"{path.name} (blocks)", unit="block", leave=False, disable=None, file=sys.stderr)

        def progress(done, total):
            if self._stop.is_set():  # Ctrl-C: give up this slide now, not after its last block
                raise KeyboardInterrupt
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            sc = self.model.detect_slide(path, pixel_size_um=s.pixel_size_um, thresholds=self.thresholds,
                                         block_px=s.slide_block, progress=progress)
        finally:
            bar.close()
        det = sc.detections
        rows, cols = sc.shape
        known_px = sc.pixel_size_source != "not given; the model's training pixel size"
        row = {
            "image": str(path), "status": "ok", "count": len(det), "width": cols, "height": rows,
            "pixel_size_um": sc.pixel_size_um if known_px else None, "area_mm2": None, "density_per_mm2": None,
            "peak_hpf_count": None, "hpf_flag": None, "candidates": sc.candidates, "error": "",
        }
        caption = [f"whole slide {cols}x{rows} px, {sc.blocks_with_tissue} of {sc.blocks} blocks with tissue"]
        if sc.differential is not None:
            row.update(sc.differential.columns())
            caption.append(sc.differential.line())
        peak_box = None
        if known_px:
            hpf = hpf_summary(det.xy, (rows, cols), sc.pixel_size_um, hpf_area_mm2=s.hpf_area_mm2,
                              threshold=self.flag_threshold)
            area = sc.tissue_area_mm2
            row.update(area_mm2=_sig(area), density_per_mm2=round(len(det) / area, 2) if area else 0.0,
                       peak_hpf_count=hpf.peak_count, hpf_flag=hpf.flag)
            caption.append(f"{row['density_per_mm2']:.1f}/mm2 of tissue ({area:.2f} mm2), peak {hpf.peak_count}/HPF"
                           + (f"  >= {self.flag_threshold:g}" if hpf.flag else ""))
            peak_box = hpf.peak_box
        p = self._paths(name)
        write_csv(p["detections"], DETECTION_COLUMNS, det.rows())
        if s.overlay:
            f = 1.0 / sc.thumb_factor
            box = None if peak_box is None else tuple(int(round(v * f)) for v in peak_box)
            over = draw_overlay(sc.thumbnail, det.rescaled(f),
                                title=f"{self.model.config.class_name}: {len(det)}   {path.name}",
                                lines=[*caption, "orange frame: the densest high-power field"] if box else caption,
                                highlight_box=box)
            side_um = math.sqrt(s.hpf_area_mm2) * 1000.0
            heat = density_heatmap(sc, bin_um=side_um / 4, class_name=self.model.config.class_name,
                                   peak_box=peak_box)
            self._write_pictures(p, overlay=over, heatmap=heat)
        else:
            self._write_pictures(p)
        row["seconds"] = round(time.perf_counter() - t0, 3)
        return row

    # ------------------------------------------------------------------ batch
    def run(self, images: list[Path], *, progress: Callable[[ImageRecord], None] | None = None) -> list[ImageRecord]:
        """Count every image; a failing image is recorded and skipped.

        Images are counted ``workers`` at a time in threads (reading, the
        networks, the watershed and PNG encoding all release the GIL for most
        of their time), so both cores stay busy; at most ``2 * workers``
        images are in flight, so memory stays bounded. Whole-slide images are
        counted one at a time. Records, ``counts.csv`` and the resume records
        follow the input order.
        """
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        from eosdetect.slideio import is_slide

        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / RUN_RECORD_DIR).mkdir(exist_ok=True)
        fingerprint = self._fingerprint()
        names = self._names(images)
        self._stop.clear()
        self.records = []
        started = time.time()
        jobs = []
        for image_path, name in zip(images, names):
            rec = ImageRecord(image=str(image_path), name=name)
            cached = None if self.settings.overwrite else self._done(image_path, name, fingerprint)
            if cached is not None:
                rec.row, rec.status = {**cached, "image": str(image_path)}, "skipped"
            jobs.append(rec)
        if self.settings.scheduler:
            return self._run_distributed(jobs, fingerprint, started, progress)
        workers = self.settings.workers or default_workers()
        if any(rec.status != "skipped" for rec in jobs):
            self.model.predict_fn  # noqa: B018 - build the networks once, before threads share them
            self.model.class_probs_fn  # noqa: B018
        pool = ThreadPoolExecutor(workers, thread_name_prefix="eosdetect-count")
        pending: deque = deque()  # (record, future or None), in input order

        def finish(rec, fut) -> None:
            if fut is not None:
                self._settle(rec, fingerprint, fut.result)
            if not (self.records and self.records[-1] is rec):  # finished again after an interruption
                self.records.append(rec)
            if time.time() - last_tables[0] >= TABLES_EVERY_S:
                self._write_tables(started, partial=True)
                last_tables[0] = time.time()
            if progress is not None:
                progress(rec)

        def finish_next() -> None:
            # leave the record queued until it is finished: an interruption part-way through
            # (Ctrl-C while its outputs are being marked done) finishes it again below
            finish(*pending[0])
            pending.popleft()

        last_tables = [0.0]
        try:
            for rec in jobs:
                if rec.status == "skipped":
                    pending.append((rec, None))
                elif is_slide(Path(rec.image), self.settings.slide_min_pixels):
                    while pending:  # a slide alone: it needs the memory
                        finish_next()
                    pending.append((rec, pool.submit(self.count_image, Path(rec.image), rec.name)))
                    finish_next()
                else:
                    pending.append((rec, pool.submit(self.count_image, Path(rec.image), rec.name)))
                while pending and (len(pending) > 2 * workers or pending[0][1] is None or pending[0][1].done()):
                    finish_next()
            while pending:
                finish_next()
        except BaseException:  # interrupted: keep (and mark done) the images already counted
            self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            while pending:
                fut = pending[0][1]
                if fut is not None and (fut.cancelled() or not fut.done()):
                    break
                try:
                    finish_next()
                except BaseException:  # noqa: BLE001 - already failing; a re-run redoes what is not marked done
                    break
            self._write_tables(started, partial=True)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        self._write_tables(started, partial=False)
        return self.records

    def _write_remote(self, rec: ImageRecord, res: dict) -> dict:
        """Write the files of an image a cluster worker counted; returns its counts.csv row."""
        p = self._paths(rec.name)
        write_csv(p["detections"], DETECTION_COLUMNS, res["detections"])
        self._write_pictures(p, overlay=res["overlay_png"])
        return {"image": rec.image, **res["row"], "seconds": round(res["seconds"], 3)}

    def _run_distributed(self, jobs: list[ImageRecord], fingerprint: str, started: float, progress):
        """:meth:`run` on a Dask cluster: workers count, this process writes (see
        :mod:`eosdetect.apps.distributed`). Whole-slide images are counted here."""
        from eosdetect.apps.distributed import IN_FLIGHT_PER_THREAD, connect, count_bytes, model_payload, worker_threads
        from eosdetect.slideio import is_slide

        s = self.settings
        client = connect(s.scheduler)
        finished: dict[int, ImageRecord] = {}

        last_tables = [0.0]

        def record(i: int) -> None:
            finished[i] = jobs[i]
            self.records = [finished[k] for k in sorted(finished)]
            if time.time() - last_tables[0] >= TABLES_EVERY_S:
                self._write_tables(started, partial=True)
                last_tables[0] = time.time()
            if progress is not None:
                progress(jobs[i])

        try:
            from distributed import as_completed

            key, files = model_payload(self.model)
            [files_f] = client.scatter([files], broadcast=True)
            settings = {"pixel_size_um": s.pixel_size_um, "thresholds": self.thresholds.to_dict(),
                        "hpf_area_mm2": s.hpf_area_mm2, "threshold": self.flag_threshold, "overlay": s.overlay}
            remote, local = [], []
            for i, rec in enumerate(jobs):
                if rec.status == "skipped":
                    record(i)
                elif is_slide(Path(rec.image), s.slide_min_pixels):
                    local.append(i)
                else:
                    remote.append(i)
            index = {}
            queue = iter(remote)
            ac = as_completed()

            def submit_next() -> bool:
                for i in queue:
                    path = Path(jobs[i].image)
                    try:
                        data = path.read_bytes()
                    except OSError as exc:
                        self._fail(jobs[i], InputError(path, exc.strerror or "cannot read"))
                        self._discard_outputs(jobs[i])
                        record(i)
                        continue
                    fut = client.submit(count_bytes, key, files_f, data, path.name, settings, pure=False)
                    index[fut.key] = i
                    ac.add(fut)
                    return True
                return False

            for _ in range(worker_threads(client) * IN_FLIGHT_PER_THREAD):
                if not submit_next():
                    break
            for fut in ac:
                i = index.pop(fut.key)
                rec = jobs[i]
                path = Path(rec.image)
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died or hit a bug: report, go on
                    res = {"error": f"worker failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"}
                fut.release()
                if "error" in res:
                    self._fail(rec, InputError(path, res["error"]))
                    self._discard_outputs(rec)
                else:
                    self._settle(rec, fingerprint, partial(self._write_remote, rec, res))
                record(i)
                submit_next()
            for i in local:
                rec = jobs[i]
                self._settle(rec, fingerprint, partial(self.count_image, Path(rec.image), rec.name))
                record(i)
        finally:
            client.close()
        self._write_tables(started, partial=False)
        return self.records

    @staticmethod
    def _write_pictures(p: dict[str, Path], *, overlay=None, heatmap=None) -> None:
        """Write the pictures of one image's results; remove those of an earlier run that this one
        does not draw (an overlay of other thresholds must not sit beside the new detections)."""
        for key, picture in (("overlay", overlay), ("heatmap", heatmap)):
            if picture is None:
                p[key].unlink(missing_ok=True)
            elif isinstance(picture, bytes):
                atomic_write_bytes(p[key], picture)
            else:
                write_image(p[key], picture)

    def _settle(self, rec: ImageRecord, fingerprint: str, work: Callable[[], dict]) -> None:
        """``work()`` writes one image's files and returns its counts.csv row; then the image is
        marked done. Any failure is recorded on this image alone, and the run goes on."""
        try:
            rec.row = work()
            self._mark_done(rec, fingerprint)
        except EosdetectError as exc:
            self._fail(rec, exc)
        except MemoryError:
            rec.status, rec.error = "error", f"{rec.image}: out of memory"
            rec.row = {"image": rec.image, "status": "error", "error": "out of memory"}
        except Exception as exc:  # noqa: BLE001 - one image's failure must not lose the others
            reason = _unexpected_reason(exc)
            rec.status, rec.error = "error", f"{rec.image}: {reason}"
            rec.row = {"image": rec.image, "status": "error", "error": reason}
        if rec.status == "error":
            self._discard_outputs(rec)

    def _discard_outputs(self, rec: ImageRecord) -> None:
        """What an earlier run wrote for a failing image no longer stands beside its error."""
        for path in self._paths(rec.name).values():
            path.unlink(missing_ok=True)

    def _mark_done(self, rec: ImageRecord, fingerprint: str) -> None:
        """Written last: the record that lets a re-run skip this image."""
        path = Path(rec.image)
        try:
            st = path.stat()
        except OSError:  # the image went away after it was counted: nothing to skip next time
            return
        p = self._paths(rec.name)
        outputs = [k for k in ("detections", "overlay", "heatmap") if p[k].is_file()]
        write_json(p["state"], {
            "image": str(path), "resolved": str(path.resolve()),  # the path as given, and where it led
            "fingerprint": fingerprint, "mtime": st.st_mtime, "size": st.st_size,
            "row": rec.row, "outputs": outputs,
        })

    @staticmethod
    def _fail(rec: ImageRecord, exc: EosdetectError) -> None:
        path = Path(rec.image)
        rec.status, rec.error = "error", str(exc)
        rec.row = {"image": str(path), "status": "error", "error": _error_reason(exc, path)}

    def _write_tables(self, started: float, *, partial: bool) -> None:
        rows = []
        for r in self.records:
            row = {k: r.row.get(k) for k in self.columns}
            row["status"] = r.row.get("status", r.status)
            rows.append([_csv_value(row[k]) for k in self.columns])
        write_csv(self.out_dir / "counts.csv", self.columns, rows)
        ok = [r for r in self.records if r.row.get("status") == "ok"]
        failed = [r for r in self.records if r.row.get("status") != "ok"]
        counts = [int(r.row["count"]) for r in ok]
        summary = {
            "eosdetect_version": __version__,
            "complete": not partial,
            "model": self.model.summary(),
            "settings": self.settings_dict(),
            "images": len(self.records),
            "images_ok": len(ok),
            "images_skipped_as_done": sum(r.status == "skipped" for r in self.records),
            "images_failed": len(failed),
            "total_count": int(sum(counts)),
            "mean_count": round(float(np.mean(counts)), 3) if counts else None,
            "max_count": max(counts) if counts else None,
            **self._differential_entry(ok),
            "failures": [{"image": r.image, "error": r.row.get("error", r.error)} for r in failed],
            "warnings": [{"image": r.image, "warning": r.row["warning"]} for r in self.records
                         if r.status != "error" and r.row.get("warning")],
            "seconds": round(time.time() - started, 2),
        }
        if any(r.row.get("peak_hpf_count") is not None for r in ok):
            peaks = [(r.row["peak_hpf_count"], r.image) for r in ok if r.row.get("peak_hpf_count") is not None]
            # density over the images whose area is known (a slide with its pixel size among photos without)
            measured = [r for r in ok if r.row.get("area_mm2")]
            area = sum(float(r.row["area_mm2"]) for r in measured)
            if peaks:
                best = max(peaks, key=lambda pk: pk[0])  # the first image of the highest peak
                hpf = self.settings.hpf_area_mm2
                density = sum(int(r.row["count"]) for r in measured) / area if area else None
                summary["clinical"] = {
                    "total_area_mm2": _sig(area),
                    "density_per_mm2": round(density, 2) if density is not None else None,
                    "density_per_hpf": round(density * hpf, 2) if density is not None else None,
                    "images_with_area": len(measured),
                    "peak_hpf_count": best[0],
                    "peak_hpf_image": best[1],
                    "hpf_area_mm2": hpf,
                    "threshold": self.flag_threshold,
                    "flag": None if self.flag_threshold is None else bool(best[0] >= self.flag_threshold),
                }
                small = [r for r in measured if _frame_mm2(r.row) < SMALL_IMAGE_HPF_FRACTION * hpf]
                if small and len(small) == len(measured):
                    summary["clinical"]["note"] = (
                        f"every image is smaller than half a high-power field ({hpf:g} mm2; the largest covers "
                        f"{max(_frame_mm2(r.row) for r in small) / hpf:.2g} of one): the peak is a count per "
                        "image" + ("" if self.flag_threshold is None else
                                   " and the flag judges each image as if it were a whole field")
                        + "; density_per_hpf (the density times the HPF area) is the per-HPF figure, or set "
                        "--hpf-area to your field's area")
        else:
            summary["clinical"] = None
            summary["clinical_note"] = ("densities and per-HPF counts need the pixel size: "
                                        "give --pixel-size (micrometres per pixel)")
        self.summary = summary
        write_json(self.out_dir / "summary.json", summary)

    def _differential_entry(self, ok: list[ImageRecord]) -> dict:
        """summary.json's ``differential`` (the images' ``n_<class>`` summed), for multi-class helpers
        only; sets :attr:`differential`."""
        cfg = self.model.config
        if not cfg.multiclass:
            self.differential = None
            return {}
        total = Differential.empty(cfg)
        for r in ok:
            d = Differential.from_columns(r.row, cfg)
            if d is not None:
                total = total + d
        self.differential = total
        return {"differential": total.to_dict()}


def _frame_mm2(row: dict) -> float:
    """The area a counts.csv row's picture covers, in mm²: its whole frame (a slide's
    ``area_mm2`` is its tissue alone, which can be small on a large slide)."""
    try:
        return int(row["width"]) * int(row["height"]) * float(row["pixel_size_um"]) ** 2 / 1e6
    except (KeyError, TypeError, ValueError):
        return float(row["area_mm2"])


def _error_reason(exc: Exception, path: Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _csv_value(v):
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else v
