"""Counting on a Dask cluster: ``eosdetect count IMAGES -o OUT --scheduler tcp://host:8786``.

Why Dask distributed rather than Ray: it is pure Python (a few MB from
PyPI), a cluster is two plain commands an IT department can start
(``dask scheduler`` on one machine, ``dask worker tcp://host:8786`` on the
others), tasks are ordinary Python functions, and a ``LocalCluster`` makes it
testable in-process. Ray brings a large binary runtime with its own object
store and is built for training and serving rather than for a bag of
independent image jobs.

How the work is split: the client (the machine running ``eosdetect count``)
reads each image file and sends its bytes; a worker decodes it, counts it
with the same :func:`eosdetect.apps.runner.analyse_image` as a local run, and
sends back the counts row (with a multi-class helper, its ``n_<class>``
counts too), the detection rows and the overlay PNG. The
client writes every output file, atomically and with the same resume
records, so nothing needs a shared file system. Workers need eosdetect
installed; the model folder itself is sent to them once (a few MB), so a
model trained on the client works too. Whole-slide images are counted on
the client (sending them would move gigabytes).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from eosdetect.errors import EosdetectError

#: Tasks in flight per worker thread: enough to keep workers busy, few enough to bound memory.
IN_FLIGHT_PER_THREAD = 2

_models: dict[str, object] = {}
_models_lock = threading.Lock()


def model_payload(model) -> tuple[str, dict[str, bytes]]:
    """The files of a model folder, and the hash of those that decide its counts (:meth:`Model.digest`)."""
    files = {p.name: p.read_bytes() for p in sorted(Path(model.path).iterdir()) if p.is_file()}
    return model.digest(), files


def _worker_model(key: str, files: dict[str, bytes]):
    """The model on this worker, written to a temporary folder and loaded once per process."""
    from eosdetect.models.store import load_model

    with _models_lock:
        model = _models.get(key)
        if model is None:
            folder = Path(tempfile.mkdtemp(prefix=f"eosdetect-model-{key}-"))
            for name, data in files.items():
                (folder / name).write_bytes(data)
            model = load_model(folder)
            _models[key] = model
    return model


def count_bytes(key: str, files: dict[str, bytes], data: bytes, filename: str, settings: dict) -> dict:
    """One image on a worker: ``{"row", "detections", "overlay_png"}`` or ``{"error"}``."""
    import time

    from eosdetect.io import encode_png, read_image_bytes
    from eosdetect.models.config import Thresholds
    from eosdetect.apps.runner import analyse_image

    t0 = time.perf_counter()
    try:
        model = _worker_model(key, files)
        image = read_image_bytes(data, filename)
        a = analyse_image(
            model, image, source=filename, pixel_size_um=settings["pixel_size_um"],
            thresholds=Thresholds.from_dict(settings["thresholds"]), hpf_area_mm2=settings["hpf_area_mm2"],
            threshold=settings["threshold"], overlay=settings["overlay"],
        )
    except EosdetectError as exc:  # the image's problem, reported like a local run's
        return {"error": getattr(exc, "problem", str(exc))}
    except MemoryError:
        return {"error": "out of memory on the worker"}
    png = encode_png(a.overlay) if a.overlay is not None else None
    return {"row": a.row, "detections": a.detections.rows(), "overlay_png": png,
            "seconds": time.perf_counter() - t0}


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
