"""Which runtime runs a model's networks: LiteRT or Keras (TensorFlow).

Counting needs only the forward pass of two small networks, so a model
folder also holds its networks converted to LiteRT (TensorFlow Lite, package
``ai-edge-litert``, a few tens of MB against TensorFlow's hundreds)::

    unet.tflite      the U-Net, converted from weights.weights.h5
    helper.tflite    the helper (two-stage models)
    litert.json      which weights each was converted from (their SHA-256)

They are written by :func:`eosdetect.models.export.export_litert`, which
every training command calls when it saves a model. TensorFlow itself is
needed only to train (``pip install "eosdetect[train]"``).

The runtimes (``runtime=`` of :func:`eosdetect.load_model`):

``"auto"`` (default)
    LiteRT when the folder's conversion is there and is of its present
    weights, else Keras (with a warning when a conversion is out of date);
``"litert"``
    LiteRT only: a missing or out-of-date conversion is a :class:`ModelError`;
``"keras"``
    the Keras networks (needs TensorFlow): the reference the conversion is
    tested against.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path

from eosdetect.errors import ModelError
from eosdetect.io import read_json

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "litert", "keras")
UNET_WEIGHTS = "weights.weights.h5"
HELPER_WEIGHTS = "helper.weights.h5"
UNET_LITERT = "unet.tflite"
HELPER_LITERT = "helper.tflite"
#: Network -> (its Keras weights file, its LiteRT file).
NETWORK_FILES = {"unet": (UNET_WEIGHTS, UNET_LITERT), "helper": (HELPER_WEIGHTS, HELPER_LITERT)}
MANIFEST = "litert.json"
TRAIN_EXTRA = 'pip install "eosdetect[train]"'

#: Whether TensorFlow's and LiteRT's C++ start-up lines reach stderr (the CLI's -v turns them on).
_show_native_output = False


def show_native_output(show: bool) -> None:
    """Let TensorFlow's and LiteRT's own start-up lines through to stderr (``-v``), or not."""
    global _show_native_output
    _show_native_output = bool(show)


@contextlib.contextmanager
def parked_stderr():
    """Run a block with the process's stderr (file descriptor 2) parked in a temporary
    file, printed only if the block fails.

    Native libraries print start-up lines ("Could not find cuda drivers", "Created
    TensorFlow Lite XNNPACK delegate for CPU") straight to the descriptor, before any
    logging setting could hide them.
    """
    if _show_native_output:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as parked:
        os.dup2(parked.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            parked.seek(0)
            sys.stderr.write(parked.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def has_tensorflow() -> bool:
    """Whether TensorFlow is installed (without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None


def has_litert() -> bool:
    """Whether the LiteRT runtime is installed (without importing it)."""
    return importlib.util.find_spec("ai_edge_litert") is not None


def import_tensorflow(purpose: str = "this", *, before_start=None):
    """TensorFlow, imported with its start-up chatter kept off the terminal.

    Parameters
    ----------
    purpose : str
        What needs it, for the error when it is not installed ("training").
    before_start : callable, optional
        Called after the import, before TensorFlow starts its devices (thread
        settings must be made then).

    Raises
    ------
    ModelError
        When TensorFlow is not installed (the message says how to install it).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if _show_native_output else "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if sys.modules.get("tensorflow") is not None:
        return sys.modules["tensorflow"]
    if not has_tensorflow():
        raise ModelError(f"{purpose} needs TensorFlow, which is not installed: {TRAIN_EXTRA}")
    with parked_stderr():
        import tensorflow as tf

        if before_start is not None:
            before_start()
        tf.config.list_logical_devices()  # device discovery prints its own lines: do it now
    return tf


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (a few MB of weights: milliseconds)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def networks_of(config) -> tuple[str, ...]:
    """The networks a model of ``config`` has: ``("unet",)`` or ``("unet", "helper")``."""
    return ("unet", "helper") if config.helper_enabled else ("unet",)


def stale_conversions(path: Path, config) -> list[str]:
    """The networks of the model folder ``path`` whose LiteRT file is missing or was
    converted from other weights than the folder's (empty: the conversion is current)."""
    manifest_path = Path(path) / MANIFEST
    converted = read_json(manifest_path).get("networks", {}) if manifest_path.is_file() else {}
    stale = []
    for network in networks_of(config):
        weights, litert_file = NETWORK_FILES[network]
        entry = converted.get(network, {})
        if (not (Path(path) / litert_file).is_file() or not (Path(path) / weights).is_file()
                or entry.get("weights_sha256") != file_sha256(Path(path) / weights)):
            stale.append(network)
    return stale


def choose_runtime(path: Path, config, runtime: str = "auto") -> str:
    """The runtime (``"litert"`` or ``"keras"``) that runs the model folder ``path``.

    Raises
    ------
    ModelError
        When the runtime asked for cannot run it (not installed, no current
        conversion); the message says what to do.
    """
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "keras":
        return "keras"
    stale = stale_conversions(path, config)
    if not stale and has_litert():
        return "litert"
    export = f"eosdetect export {path}"
    if runtime == "litert" or not has_tensorflow():
        if stale:
            what = " and ".join(NETWORK_FILES[n][1] for n in stale)
            raise ModelError(f"{path}: {what} missing or not converted from this folder's weights; "
                             f"convert them with `{export}` (needs TensorFlow: {TRAIN_EXTRA})")
        raise ModelError(f"{path}: the LiteRT runtime is not installed: pip install ai-edge-litert")
    if stale and (Path(path) / MANIFEST).is_file():
        log.warning("%s: its LiteRT files are older than its weights; running it with TensorFlow "
                    "(slower to start). `%s` converts them again", path, export)
    return "keras"
