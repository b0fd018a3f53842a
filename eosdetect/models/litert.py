"""The networks run by LiteRT (TensorFlow Lite) from a model folder's ``.tflite`` files.

The functions here are what :mod:`eosdetect.models.unet` and
:mod:`eosdetect.models.helper_cnn` make of the Keras networks, with the same
signatures, so :class:`~eosdetect.models.model.Model` can use either; the
conversion (:mod:`eosdetect.models.export`) keeps them equal to within
float rounding (tested).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from eosdetect.errors import ModelError
from eosdetect.models.runtime import parked_stderr


def cpu_threads() -> int:
    """The CPU cores this process may use (what TensorFlow would use too)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class LiteRTNetwork:
    """One converted network: ``network(batch) -> output`` on NumPy float32 arrays.

    The input may change shape between calls (the U-Net takes any image
    size, the helper any number of crops); the interpreter is re-planned
    only when it does. Calls from several threads take turns (an
    interpreter is not thread-safe; each call uses every core).

    Parameters
    ----------
    path : path-like
        The ``.tflite`` file.
    threads : int, optional
        CPU threads per call; default :func:`cpu_threads`.
    """

    def __init__(self, path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        try:
            with parked_stderr():
                self._interpreter = Interpreter(model_path=str(self.path), num_threads=threads or cpu_threads())
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: not a LiteRT model ({str(exc).splitlines()[0]})") from None
        (self._input,) = self._interpreter.get_input_details()
        (self._output,) = self._interpreter.get_output_details()
        self._shape = None
        self._lock = threading.Lock()

    @property
    def output_width(self) -> int:
        """Size of the output's last axis (classes of a helper)."""
        return int(self._output["shape_signature"][-1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            interp = self._interpreter
            if batch.shape != self._shape:
                with parked_stderr():
                    interp.resize_tensor_input(self._input["index"], batch.shape, strict=True)
                    interp.allocate_tensors()
                self._shape = batch.shape
            interp.set_tensor(self._input["index"], batch)
            interp.invoke()
            return interp.get_tensor(self._output["index"]).copy()


def make_predict_fn(path, *, tta: bool = False):
    """The converted U-Net as ``(n, M, N, 3) float32 -> (n, M, N)`` probabilities
    (see :func:`eosdetect.models.unet.make_predict_fn`)."""
    from eosdetect.models.unet import augmented_mean

    network = LiteRTNetwork(path)
    return (lambda batch: augmented_mean(network, batch)) if tta else network


def make_classify_fn(path, kind: str = "cnn"):
    """The converted helper as ``(n, S, S, 3) float32 -> (n, k)`` probabilities
    (see :func:`eosdetect.models.helper_cnn.make_classify_fn`)."""
    from eosdetect.models.helper_cnn import classify_in_batches

    network = LiteRTNetwork(path)
    return classify_in_batches(network, network.output_width, kind)
