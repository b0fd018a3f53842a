"""Shared fixtures: tiny models and synthetic images (fast), real data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = Path(os.environ.get("EOSDETECT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    if not SHARED_DATA.is_dir():
        skip = pytest.mark.skip(reason=f"real data not found at {SHARED_DATA} (set EOSDETECT_SHARED_DATA)")
        for item in items:
            if "realdata" in item.keywords:
                item.add_marker(skip)


def load_script(name: str):
    """A script of scripts/ imported as a module (they are not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def disc_image(shape=(64, 80), centres=((20, 20), (40, 50)), radius=8, fg=(120, 40, 160), bg=(235, 225, 230)):
    """RGB uint8 image with purple discs on a pale background; centres are (row, col)."""
    img = np.empty((*shape, 3), dtype=np.uint8)
    img[:] = bg
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for r, c in centres:
        img[(yy - r) ** 2 + (xx - c) ** 2 <= radius**2] = fg
    return img


def flat_png(path: Path, width: int, height: int, rgb=(235, 225, 230)) -> Path:
    """A PNG of one colour written row by row: a small file that decodes to ``width x height``."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp, row = zlib.compressobj(6), b"\0" + bytes(rgb) * width
    parts = [comp.compress(row) for _ in range(height)] + [comp.flush()]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A model folder with a tiny random-weight U-Net (depth 2, 4 filters)."""
    from eosdetect.models.config import ModelConfig, Thresholds
    from eosdetect.models.store import save_model
    from eosdetect.models.unet import build_unet

    cfg = ModelConfig(name="tiny", class_name="cell", unet_depth=2, unet_base_filters=4, pixel_size_um=1.0,
                      input_pixel_size_um=1.0, tile_size=64, cell_diameter_um=10)
    unet = build_unet(cfg, seed=1)
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_model(path, cfg, Thresholds(prob_threshold=0.5, min_area_um2=4), unet, metrics={"validation": {}}, card="# tiny\n")
    return path
