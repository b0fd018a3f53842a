#!/usr/bin/env python
"""Generate the synthetic sample images shipped in data/samples/.

    python scripts/make_samples.py            # rewrites data/samples/*.jpg

The project may not redistribute the real training images, so the README's
first command runs on these: SYNTHETIC drawings of a Wright/Giemsa blood smear
at the bundled model's assumed input pixel size (~0.06 um/px, 640x480), with
red cells, platelets, neutrophils (pale cytoplasm, 3-5 purple lobes) and
eosinophils (orange-red granular cytoplasm, two lobes). They show that the
tool runs end to end and what its outputs look like; they are not evidence of
accuracy (that is measured on real images, see the models' metrics.json).
The true eosinophil centres are written to data/samples/truth.csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.io import write_csv, write_image  # noqa: E402

BACKGROUND = np.array([220, 226, 220], float)
RBC = np.array([214, 160, 150], float)
RBC_CENTRE = np.array([226, 196, 186], float)
NUCLEUS = np.array([110, 95, 195], float)
# pale lilac, as in BCCD's photos (against their background: red -12, green -30, blue +8, from k-means
# of the pixels around 40 labelled neutrophils); a pinker one looks like an eosinophil to the helper
NEUTRO_CYTO = np.array([208, 196, 228], float)
EOS_CYTO = np.array([220, 150, 160], float)
EOS_GRANULE = np.array([200, 80, 110], float)
PLATELET = np.array([150, 120, 190], float)


def _blend(img, mask, colour, alpha=1.0):
    m = np.clip(mask, 0, 1)[..., None] * alpha
    img[:] = img * (1 - m) + colour * m


def _disc(shape, cy, cx, ry, rx, soft=1.5, angle=0.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return np.clip((1 - r) * min(rx, ry) / soft, 0, 1)


def _lobes(shape, cy, cx, n, radius, rng):
    mask = np.zeros(shape)
    start = rng.uniform(0, 2 * np.pi)
    for k in range(n):
        a = start + k * 2 * np.pi / n * rng.uniform(0.8, 1.0)
        ly, lx = cy + np.sin(a) * radius * 0.45, cx + np.cos(a) * radius * 0.45
        mask = np.maximum(mask, _disc(shape, ly, lx, radius * 0.38, radius * 0.5, angle=a))
    return mask


def smear(seed: int, n_eos: int, n_neutro: int, shape=(480, 640)):
    rng = np.random.default_rng(seed)
    img = np.empty((*shape, 3))
    img[:] = BACKGROUND
    occupied: list[tuple[float, float, float]] = []

    def place(r):
        for _ in range(200):
            cy, cx = rng.uniform(r * 0.6, shape[0] - r * 0.6), rng.uniform(r * 0.6, shape[1] - r * 0.6)
            if all((cy - y) ** 2 + (cx - x) ** 2 > (r + q) ** 2 * 0.8 for y, x, q in occupied):
                occupied.append((cy, cx, r))
                return cy, cx
        return None

    truth, white = [], []
    for kind in ["eos"] * n_eos + ["neutro"] * n_neutro:
        r = rng.uniform(85, 105)
        pos = place(r)
        if pos:
            white.append((kind, *pos, r))
    for _ in range(40):
        r = rng.uniform(45, 55)
        pos = place(r)
        if pos is None:
            continue
        cy, cx = pos
        _blend(img, _disc(shape, cy, cx, r * rng.uniform(0.9, 1.0), r, angle=rng.uniform(0, np.pi)), RBC)
        _blend(img, _disc(shape, cy, cx, r * 0.45, r * 0.45, soft=8), RBC_CENTRE, 0.8)
    for _ in range(3):
        pos = place(8)
        if pos:
            _blend(img, _disc(shape, *pos, 6, 8, angle=rng.uniform(0, np.pi)), PLATELET)
    for kind, cy, cx, r in white:
        if kind == "eos":
            _blend(img, _disc(shape, cy, cx, r, r * rng.uniform(0.9, 1.05)), EOS_CYTO)
            granules = np.zeros(shape)
            for _ in range(520):
                a, d = rng.uniform(0, 2 * np.pi), r * np.sqrt(rng.uniform(0.05, 0.9))
                gy, gx = cy + d * np.sin(a), cx + d * np.cos(a)
                y0, x0 = int(gy), int(gx)
                if 3 <= y0 < shape[0] - 3 and 3 <= x0 < shape[1] - 3:
                    granules[y0 - 3 : y0 + 4, x0 - 3 : x0 + 4] = np.maximum(
                        granules[y0 - 3 : y0 + 4, x0 - 3 : x0 + 4], _disc((7, 7), 3, 3, 3.2, 3.2, soft=1.0)
                    )
            _blend(img, granules, EOS_GRANULE, 0.9)
            _blend(img, _lobes(shape, cy, cx, 2, r * 0.8, rng), NUCLEUS)
            truth.append((cx, cy))
        else:
            _blend(img, _disc(shape, cy, cx, r, r * rng.uniform(0.9, 1.05)), NEUTRO_CYTO)
            _blend(img, _lobes(shape, cy, cx, int(rng.integers(3, 6)), r * 0.75, rng), NUCLEUS)
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(img, sigma=(2.0, 2.0, 0))  # optics: nothing in a real photo is this sharp
    img += rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE.parent / "data" / "samples"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    rows = []
    for i, (n_eos, n_neutro) in enumerate([(1, 1), (2, 0), (0, 2)], start=1):
        img, truth = smear(seed=i, n_eos=n_eos, n_neutro=n_neutro)
        name = f"synthetic_smear_{i:02d}.jpg"
        write_image(out / name, img)
        rows += [(name, round(x, 1), round(y, 1)) for x, y in truth]
    write_csv(out / "truth.csv", ["image", "x", "y"], rows)
    print(f"wrote {len(rows)} eosinophils in 3 images to {out}")


if __name__ == "__main__":
    main()
