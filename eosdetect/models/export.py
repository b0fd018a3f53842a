"""Convert a model folder's Keras networks to LiteRT (needs TensorFlow).

:func:`export_litert` writes ``unet.tflite`` (and ``helper.tflite``) beside
the weights, and ``litert.json`` with the SHA-256 of the weights each was
converted from, so a later change of weights is noticed
(:func:`eosdetect.models.runtime.stale_conversions`). Conversion goes the
way TensorFlow documents for Keras 3: a SavedModel of the inference call
(``keras.export.ExportArchive``), then ``tf.lite.TFLiteConverter``, with
float32 weights and LiteRT's built-in operators only (no TensorFlow ops
inside, no quantisation: results equal Keras's to float rounding).

The U-Net keeps its shape-polymorphic input ``(None, None, None, 3)``, the
helper ``(None, S, S, 3)`` (or ``(None, 11)`` for a colour helper).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from eosdetect.io import atomic_write_bytes, write_json
from eosdetect.models.runtime import (
    MANIFEST,
    NETWORK_FILES,
    file_sha256,
    import_tensorflow,
    networks_of,
    parked_stderr,
)


def convert(network, input_shape: tuple, *, squeeze_last: bool = False) -> bytes:
    """A Keras network's inference call as a LiteRT flatbuffer.

    Parameters
    ----------
    network : keras.Model
    input_shape : tuple
        The input's shape, ``None`` for a free axis.
    squeeze_last : bool
        Drop the output's last axis (the U-Net's single channel).
    """
    tf = import_tensorflow("converting a model to LiteRT")
    import keras

    def call(x):
        y = network(x, training=False)
        return y[..., 0] if squeeze_last else y

    with tempfile.TemporaryDirectory(prefix="eosdetect-export-") as saved_model, parked_stderr():
        archive = keras.export.ExportArchive()
        archive.track(network)
        archive.add_endpoint("serve", call, input_signature=[tf.TensorSpec(input_shape, tf.float32)])
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


def export_litert(path, config, unet, helper=None) -> Path:
    """Write the LiteRT files of the model folder ``path`` from its Keras networks.

    Parameters
    ----------
    path : path-like
        The model folder; its weights files must be those of ``unet`` and
        ``helper`` (their SHA-256 is recorded).
    config : ModelConfig
    unet, helper : keras.Model
        The networks (``helper`` for a two-stage model).

    Returns
    -------
    pathlib.Path
        The manifest, ``litert.json``.
    """
    path = Path(path)
    if config.helper_enabled and helper is None:
        raise ValueError(f"{config.name} is a two-stage model: its helper network is needed too")
    tf = import_tensorflow("converting a model to LiteRT")
    networks = {}
    for name in networks_of(config):
        weights, litert_file = NETWORK_FILES[name]
        network = unet if name == "unet" else helper
        shape = (None, None, None, 3) if name == "unet" else tuple(network.inputs[0].shape)
        atomic_write_bytes(path / litert_file, convert(network, shape, squeeze_last=name == "unet"))
        networks[name] = {"file": litert_file, "weights": weights, "weights_sha256": file_sha256(path / weights)}
    return write_json(path / MANIFEST, {"format": 1, "tensorflow": tf.__version__, "networks": networks})


def export_model(model) -> Path:
    """Convert a loaded model folder (:class:`~eosdetect.models.model.Model`) to LiteRT;
    its Keras networks are read from the folder."""
    if not model.path.is_dir():
        raise ValueError("a model only in memory has no folder to convert: save it with save_model")
    return export_litert(model.path, model.config, model.unet, model.helper)
