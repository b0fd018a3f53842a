"""eosdetect: find and count eosinophils (or any cell type) in stained slide images.

A model is loaded by name (a bundled one) or from a model folder, and run on
an RGB image (NumPy array) or, block by block, on a slide or any array too
large for memory (NumPy, zarr, dask)::

    import eosdetect as ed

    model = ed.load_model("eosinophil-smear")         # or a model folder
    image = ed.read_image("smear.jpg")                 # (M, N, 3) uint8 RGB
    result = model.detect(image, pixel_size_um=0.08)   # cells, candidates, classes
    result.count, result.detections.xy                 # x, y in pixels of the image
    analysis = ed.analyse(model, image, pixel_size_um=0.08)  # + density, HPF peak, warnings
    picture = analysis.overlay()                       # what `eosdetect count` draws
    prob = model.predict_prob(image)                   # the U-Net's probability map
    slide = model.detect_slide("slide.svs")            # or a zarr/dask/NumPy array

Thresholds can be changed per call (``model.detect(image, helper_threshold=0.5)``).

Pipeline: image -> tiles -> U-Net probability map -> stitched map -> watershed
-> cell candidates -> helper classifier -> counted cells -> counts, overlays.

The package is layered; each layer imports only those before it:

``eosdetect.core``
    pure NumPy: tiling, post-processing, metrics, clinical figures,
    classical candidates, geometry, colour;
``eosdetect.io``, ``eosdetect.annotations``, ``eosdetect.slideio``
    images, label files, slides;
``eosdetect.models``
    model folders and the pipeline (:class:`Model`);
``eosdetect.analysis``
    typed analyses of images and slides, overlays, heatmaps;
``eosdetect.training``
    training data, training, evaluation, the bundled models' recipes;
``eosdetect.apps``
    the command line, the batch runner, the web service.

Importing ``eosdetect`` is light: TensorFlow is loaded only when a network
first runs, and the names below are imported on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_API = {
    "load_model": "eosdetect.models.store",
    "bundled_names": "eosdetect.models.store",
    "Model": "eosdetect.models.model",
    "Result": "eosdetect.models.model",
    "ProbabilityMap": "eosdetect.models.model",
    "ModelConfig": "eosdetect.models.config",
    "Thresholds": "eosdetect.models.config",
    "SlideCount": "eosdetect.models.slides",
    "Detections": "eosdetect.core.postprocess",
    "Differential": "eosdetect.core.differential",
    "HpfSummary": "eosdetect.core.clinical",
    "hpf_summary": "eosdetect.core.clinical",
    "match_points": "eosdetect.core.metrics",
    "read_image": "eosdetect.io",
    "SlideReader": "eosdetect.slideio",
    "ArraySlide": "eosdetect.slideio",
    "analyse": "eosdetect.analysis.image",
    "ImageAnalysis": "eosdetect.analysis.image",
    "EvalItem": "eosdetect.training.evaluation",
    "evaluate_model": "eosdetect.training.evaluation",
    "fit_thresholds": "eosdetect.training.evaluation",
    "EosdetectError": "eosdetect.errors",
    "InputError": "eosdetect.errors",
    "ModelError": "eosdetect.errors",
    "ConfigError": "eosdetect.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'eosdetect' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
