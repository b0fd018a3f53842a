"""Counting on a Dask cluster: ``eosdetect count IMAGES -o OUT --scheduler tcp://host:8786``.

Why Dask distributed rather than Ray: it is pure Python (a few MB from
PyPI), a cluster is two plain commands an IT department can start
(``dask scheduler`` on one machine, ``dask worker tcp://host:8786`` on the
others), tasks are ordinary Python functions, and a ``LocalCluster`` makes it
testable in-process. Ray brings a large binary runtime with its own object
store and is built for training and serving rather than for a bag of
independent image jobs.

How the work is split: the client (the machine running ``eosdetect count``)
reads each image file and sends its bytes; a worker decodes it, analyses it
with the same :func:`eosdetect.analysis.image.analyse` as a local run, and
sends back a :class:`WorkerResult`: the typed counts row (with a multi-class
helper, its class counts too), the detection rows and the overlay PNG. The
client writes every output file, atomically and with the same resume
records, so nothing needs a shared file system. Workers need eosdetect
installed; the model folder itself is sent to them once (a few MB), so a
model trained on the client works too. Whole-slide images are counted on
the client (sending them would move gigabytes).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eosdetect.analysis.image import analyse
from eosdetect.apps.batch.tables import CountRow, exports_of, image_row
from eosdetect.errors import EosdetectError
from eosdetect.io import encode_png, read_image_bytes
from eosdetect.models.config import Thresholds

#: Tasks in flight per worker thread: enough to keep workers busy, few enough to bound memory.
IN_FLIGHT_PER_THREAD = 2

_models: dict[str, object] = {}
#: The model folders written on this worker, removed when the worker process ends.
_folders: dict[str, tempfile.TemporaryDirectory] = {}
_models_lock = threading.Lock()


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker analyses each image (the run's settings)."""

    pixel_size_um: float | None
    thresholds: Thresholds
    hpf_area_mm2: float
    flag_threshold: float | None
    overlay: bool
    exports: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkerResult:
    """What a worker sends back for one image: its row (the image named by its file name), its
    detection rows and overlay PNG, or ``error``, the image's problem (without its path)."""

    row: CountRow | None = None
    detections: list = field(default_factory=list)
    overlay_png: bytes | None = None
    exports: dict = field(default_factory=dict)
    error: str = ""


def model_payload(model) -> tuple[str, dict[str, bytes]]:
    """The files of a model folder, and the hash of those that decide its counts (:meth:`Model.digest`)."""
    files = {p.name: p.read_bytes() for p in sorted(Path(model.path).iterdir()) if p.is_file()}
    return model.digest(), files


def _worker_model(key: str, files: dict[str, bytes]):
    """The model on this worker, written to a temporary folder and loaded once per process
    (the folder lives as long as the process: the networks' weights are read on first use)."""
    from eosdetect.models.store import load_model

    with _models_lock:
        model = _models.get(key)
        if model is None:
            _folders[key] = tempfile.TemporaryDirectory(prefix=f"eosdetect-model-{key}-")
            folder = Path(_folders[key].name)
            for name, data in files.items():
                (folder / name).write_bytes(data)
            model = load_model(folder)
            _models[key] = model
    return model


def count_bytes(key: str, files: dict[str, bytes], data: bytes, filename: str,
                settings: WorkerSettings) -> WorkerResult:
    """One image on a worker."""
    t0 = time.perf_counter()
    try:
        model = _worker_model(key, files)
        image = read_image_bytes(data, filename)
        a = analyse(model, image, source=filename, pixel_size_um=settings.pixel_size_um,
                    thresholds=settings.thresholds, hpf_area_mm2=settings.hpf_area_mm2,
                    flag_threshold=settings.flag_threshold)
        png = encode_png(a.overlay()) if settings.overlay else None
        exports = exports_of(a, filename, settings.exports)
    except EosdetectError as exc:  # the image's problem, reported like a local run's
        return WorkerResult(error=getattr(exc, "problem", str(exc)))
    except MemoryError:
        return WorkerResult(error="out of memory on the worker")
    return WorkerResult(row=image_row(filename, a, seconds=time.perf_counter() - t0),
                        detections=a.detections.rows(), overlay_png=png, exports=exports)


def connect(address: str):
    """A Dask client for ``address`` (``tcp://host:8786``), with one-line errors."""
    try:
        from distributed import Client
    except ImportError:
        raise EosdetectError("counting on a cluster needs Dask: pip install 'eosdetect[distributed]'") from None
    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EosdetectError(f"cannot reach the Dask scheduler at {address}: {text}") from None


def worker_threads(client) -> int:
    """Worker threads in the cluster (at least 1)."""
    info = client.scheduler_info()
    return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))


class Cluster:
    """A Dask cluster counting images with one model: connected and the model sent on
    creation, closed on leaving a ``with`` block."""

    def __init__(self, address: str, model):
        self.client = connect(address)
        try:
            self.key, files = model_payload(model)
            [self.files] = self.client.scatter([files], broadcast=True)
        except BaseException:
            self.client.close()
            raise

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()

    def count(self, images: list[tuple[object, Path]], settings: WorkerSettings,
              done: Callable[[object, WorkerResult], None]) -> None:
        """Count ``images`` (``(key, path)`` pairs) on the workers, a few in flight per worker thread;
        ``done(key, result)`` is called here as each finishes (in any order), a file that cannot be
        read or a worker that failed giving a result with its ``error``."""
        from distributed import as_completed

        queue = iter(images)
        keys: dict[str, object] = {}
        ac = as_completed()

        def submit_next() -> bool:
            for key, path in queue:
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    done(key, WorkerResult(error=exc.strerror or "cannot read"))
                    continue
                fut = self.client.submit(count_bytes, self.key, self.files, data, path.name, settings, pure=False)
                keys[fut.key] = key
                ac.add(fut)
                return True
            return False

        for _ in range(worker_threads(self.client) * IN_FLIGHT_PER_THREAD):
            if not submit_next():
                break
        for fut in ac:
            key = keys.pop(fut.key)
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died or hit a bug: report, go on
                res = WorkerResult(error=f"worker failed ({type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0] if str(exc) else ''})")
            fut.release()
            done(key, res)
            submit_next()
