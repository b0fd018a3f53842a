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


#: Input pixels (batch x rows x columns) up to which the U-Net runs on XNNPACK, LiteRT's fast CPU
#: kernels, which keep every intermediate map: for a 1104x1104 slide block 0.38 s but 0.84 GB, against
#: 0.56 s and 0.34 GB for LiteRT's built-in kernels, whose planner reuses memory (maps equal to 1.4e-6).
#: A batch of four 512x512 tiles or a photo runs fast; a larger block runs lean.
FAST_MAX_PIXELS = 4 * 512 * 512


class _Interpreter:
    """One LiteRT interpreter of a ``.tflite`` file, re-planned when the input's shape changes."""

    def __init__(self, path: Path, threads: int, fast: bool):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if fast else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with parked_stderr():
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads,
                                               experimental_op_resolver_type=resolver)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: not a LiteRT model ({str(exc).splitlines()[0]})") from None
        (self.input,) = self.interpreter.get_input_details()
        (self.output,) = self.interpreter.get_output_details()
        self.shape = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        interp = self.interpreter
        if batch.shape != self.shape:
            with parked_stderr():
                interp.resize_tensor_input(self.input["index"], batch.shape, strict=True)
                interp.allocate_tensors()
            self.shape = batch.shape
        interp.set_tensor(self.input["index"], batch)
        interp.invoke()
        return interp.get_tensor(self.output["index"]).copy()


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
    fast_max_pixels : int, optional
        Inputs of more pixels (batch x rows x columns) run on LiteRT's
        built-in kernels, which need less memory than its fast ones
        (:data:`FAST_MAX_PIXELS`); None: always fast.
    """

    def __init__(self, path, threads: int | None = None, fast_max_pixels: int | None = None):
        self.path = Path(path)
        self.threads = threads or cpu_threads()
        self.fast_max_pixels = fast_max_pixels
        self._fast = _Interpreter(self.path, self.threads, fast=True)
        self._lean = None
        self._lock = threading.Lock()

    @property
    def output_width(self) -> int:
        """Size of the output's last axis (classes of a helper)."""
        return int(self._fast.output["shape_signature"][-1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            if self.fast_max_pixels is None or int(np.prod(batch.shape[:3])) <= self.fast_max_pixels:
                return self._fast.run(batch)
            if self._lean is None:
                self._lean = _Interpreter(self.path, self.threads, fast=False)
            return self._lean.run(batch)


def make_predict_fn(path, *, tta: bool = False):
    """The converted U-Net as ``(n, M, N, 3) float32 -> (n, M, N)`` probabilities
    (see :func:`eosdetect.models.unet.make_predict_fn`)."""
    from eosdetect.models.unet import augmented_mean

    network = LiteRTNetwork(path, fast_max_pixels=FAST_MAX_PIXELS)
    return (lambda batch: augmented_mean(network, batch)) if tta else network


def make_classify_fn(path, kind: str = "cnn"):
    """The converted helper as ``(n, S, S, 3) float32 -> (n, k)`` probabilities
    (see :func:`eosdetect.models.helper_cnn.make_classify_fn`)."""
    from eosdetect.models.helper_cnn import classify_in_batches

    network = LiteRTNetwork(path)
    return classify_in_batches(network, network.output_width, kind)
