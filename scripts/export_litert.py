"""Convert the bundled models' Keras weights to LiteRT (needs TensorFlow).

Writes ``unet.tflite``, ``helper.tflite`` and ``litert.json`` into each
bundled model folder (see :mod:`eosdetect.models.export`), then checks each
conversion against Keras on the shipped samples and prints the largest
probability difference. Run after retraining a bundled model::

    python scripts/export_litert.py [NAME ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eosdetect.io import find_images, read_image  # noqa: E402
from eosdetect.models.export import export_model  # noqa: E402
from eosdetect.models.store import BUNDLED_DIR, bundled_names, load_model  # noqa: E402


def largest_difference(name: str, images: list[np.ndarray]) -> tuple[float, float]:
    """Largest |LiteRT - Keras| of the U-Net's map and the helper's class probabilities."""
    lite, keras = load_model(name, runtime="litert"), load_model(name, runtime="keras")
    unet = helper = 0.0
    for image in images:
        a, b = lite.predict_prob(image), keras.predict_prob(image)
        unet = max(unet, float(np.abs(a.prob - b.prob).max()))
        if lite.config.helper_enabled:
            cands = keras.segment(b)[1]
            if len(cands):
                helper = max(helper, float(np.abs(lite.classify(a.helper, cands.xy)
                                                  - keras.classify(b.helper, cands.xy)).max()))
    return unet, helper


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=bundled_names())
    args = parser.parse_args(argv)
    images = [read_image(p) for p in find_images([ROOT / "data" / "samples"])]
    for name in args.names:
        export_model(load_model(name, runtime="keras"))
        unet, helper = largest_difference(name, images)
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.2f} MB" for p in sorted((BUNDLED_DIR / name).glob("*.tflite")))
        print(f"{name}: {sizes}; largest |LiteRT - Keras| on the samples: U-Net {unet:.2e}, helper {helper:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
