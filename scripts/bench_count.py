#!/usr/bin/env python
"""Speed of `eosdetect count` against the original EOS-Detection tile loop, in one process.

    python scripts/bench_count.py [-m eosinophil-smear] [--runs 5] [--image PATH]

Baseline: the original EOS-Detection inference: its U-Net (16 filters at the
first level doubling to 256, four poolings, two 3x3 convolutions per level,
elu; random weights, which do not change the time) at full input resolution
over 256x256 tiles, one ``model.predict`` call per tile. eosdetect: the whole
``count`` of the same image with a bundled model (read, rescale, U-Net,
watershed, helper, detections CSV, overlay PNG written), through the same
code as the command. Both are timed on a 1920x1440 and a 640x480 RGB image
(a real BCCD smear resized, or the shipped synthetic sample without the
shared data), median of ``--runs`` runs after one warm-up.

Also printed: seconds per megapixel, peak resident memory of this process,
and the U-Net's achieved GFLOP/s against this machine's fp32 matrix-multiply
GFLOP/s measured here.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from eosdetect.io import read_image, write_image  # noqa: E402
from eosdetect.training import shared_data  # noqa: E402


def original_unet():
    """EOS-Detection's U-Net: 16-32-64-128-256 filters, four poolings, elu, sigmoid output."""
    import keras
    from keras import layers

    inputs = keras.Input((256, 256, 3))
    x, skips = inputs, []
    for f in (16, 32, 64, 128):
        x = layers.Conv2D(f, 3, padding="same", activation="elu", kernel_initializer="he_normal")(x)
        x = layers.Conv2D(f, 3, padding="same", activation="elu", kernel_initializer="he_normal")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(256, 3, padding="same", activation="elu")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="elu")(x)
    for f, skip in zip((128, 64, 32, 16), reversed(skips)):
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skip])
        x = layers.Conv2D(f, 3, padding="same", activation="elu")(x)
        x = layers.Conv2D(f, 3, padding="same", activation="elu")(x)
    outputs = layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def baseline_count(model, image: np.ndarray, tile: int = 256) -> np.ndarray:
    """One model.predict per 256x256 tile at full resolution, as the original code did."""
    h, w = image.shape[:2]
    ph, pw = -(-h // tile) * tile, -(-w // tile) * tile
    padded = np.zeros((ph, pw, 3), np.float32)
    padded[:h, :w] = image / 255.0
    out = np.zeros((ph, pw), np.float32)
    for r in range(0, ph, tile):
        for c in range(0, pw, tile):
            out[r:r + tile, c:c + tile] = model.predict(padded[None, r:r + tile, c:c + tile], verbose=0)[0, ..., 0]
    return out[:h, :w]


def conv_flops(network, rows: int, cols: int) -> float:
    """FLOPs (2 per multiply-add) of the convolutions of a fully convolutional U-Net on a rows x cols input."""
    import keras

    total, factor = 0.0, 1  # factor: how much smaller than the input the current feature maps are
    for layer in network.layers:  # topological order: encoder, bottom, decoder
        if isinstance(layer, keras.layers.MaxPooling2D):
            factor *= 2
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            kh, kw, cout, cin = layer.kernel.shape  # every input pixel is multiplied by the whole kernel
            total += 2.0 * kh * kw * cin * cout * (rows / factor) * (cols / factor)
            factor //= 2
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            total += 2.0 * kh * kw * cin * cout * (rows / factor) * (cols / factor)
    return total


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.linalg.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def median_time(fn, runs: int) -> float:
    fn()  # warm-up (graph tracing, caches)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def source_image(path: str | None) -> np.ndarray:
    if path:
        return read_image(path)
    try:
        return read_image(sorted((shared_data.shared_root() / "bccd" / "images").glob("*.jpg"))[0])
    except (IndexError, OSError, Exception):
        return read_image(HERE.parent / "data" / "samples" / "synthetic_smear_01.jpg")


#: Copies of the image in the folder whose marginal time per image is measured.
FOLDER_SIZE = 12


def folder_marginal(model, image_path: Path, px: float, folder: Path, runs: int) -> float:
    """Marginal seconds per image when ``count`` is given a folder of :data:`FOLDER_SIZE` copies
    of the image: (time of the folder - time of one copy) / (copies - 1), so the run's fixed
    costs are left out and reading, the network and writing of successive images overlap."""
    import shutil

    from eosdetect.apps.batch.run import CountRun, CountSettings

    folder.mkdir()
    copies = [Path(shutil.copy(image_path, folder / f"copy{i:02d}.png")) for i in range(FOLDER_SIZE)]

    def count(paths, out):
        CountRun(model, out, CountSettings(pixel_size_um=px, overwrite=True)).run(paths)

    whole = median_time(partial(count, copies, folder.parent / "folder_out"), runs)
    one = median_time(partial(count, copies[:1], folder.parent / "one_out"), runs)
    return (whole - one) / (FOLDER_SIZE - 1)


def main(argv=None) -> int:
    import cv2

    from eosdetect.apps.batch.local import default_workers
    from eosdetect.apps.batch.run import CountRun, CountSettings
    from eosdetect.models.store import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default="eosinophil-smear")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--image", help="source image (default: the first BCCD smear, else the shipped sample)")
    args = ap.parse_args(argv)

    src = source_image(args.image)
    model = load_model(args.model)
    baseline = original_unet()
    print(f"original U-Net: {baseline.count_params():,} parameters; eosdetect model {model.name} "
          f"(U-Net at {model.config.pixel_size_um} um/px for inputs at {model.config.input_pixel_size_um} um/px)")
    gflops_machine = matmul_gflops()
    print(f"machine: fp32 matmul {gflops_machine:.1f} GFLOP/s (TensorFlow, 2048x2048), {os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory() as tmp:
        for cols, rows in ((1920, 1440), (640, 480)):
            image = cv2.resize(src, (cols, rows), interpolation=cv2.INTER_LINEAR)
            # the input pixel size follows the resize, so the cells are the same physical size
            px = model.config.input_pixel_size_um * src.shape[1] / cols
            path = Path(tmp) / f"bench_{cols}x{rows}.png"
            write_image(path, image)
            run = CountRun(model, Path(tmp) / f"out_{cols}", CountSettings(pixel_size_um=px, overwrite=True))
            t_ours = median_time(partial(run.run, [path]), args.runs)
            t_base = median_time(partial(baseline_count, baseline, image), max(3, args.runs // 2))
            # network share of our time and its achieved GFLOP/s
            scale = model.config.scale_for(px)
            small = cv2.resize(image, (round(cols * scale), round(rows * scale)), interpolation=cv2.INTER_AREA)
            x = small[None].astype(np.float32) / 255.0
            fn = model.predict_fn
            t_net = median_time(partial(fn, x), args.runs)
            flops = conv_flops(model.unet, small.shape[0], small.shape[1]) * (8 if model.config.unet_tta else 1)
            mp = rows * cols / 1e6
            print(f"{cols}x{rows}: baseline {t_base:.3f} s, eosdetect {t_ours:.3f} s -> {t_base / t_ours:.1f}x faster; "
                  f"eosdetect {t_ours / mp:.3f} s/megapixel; U-Net {t_net * 1000:.1f} ms on {small.shape[1]}x"
                  f"{small.shape[0]} = {flops / t_net / 1e9:.1f} GFLOP/s "
                  f"({flops / t_net / 1e9 / gflops_machine * 100:.0f}% of matmul)")
            if cols == 1920:
                marginal = folder_marginal(model, path, px, Path(tmp) / "folder", args.runs)
                print(f"{cols}x{rows} in a folder of {FOLDER_SIZE} (images counted {default_workers()} at a time): "
                      f"{marginal:.3f} s per image marginal -> {t_base / marginal:.1f}x faster; "
                      f"{marginal / mp:.3f} s/megapixel")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
