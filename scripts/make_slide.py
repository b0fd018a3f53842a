#!/usr/bin/env python
"""Make a large pyramidal TIFF "slide" by tiling real shared images, for
measuring whole-slide counting (memory, speed, blocks skipped).

    python scripts/make_slide.py -o build/slide_50k.tif --size 50000            # BCCD smears
    python scripts/make_slide.py -o build/slide_10k.tif --size 10000 --tissue 0.4

The slide is a grid of BCCD photos (640x480, each randomly flipped) inside
random blob-shaped "tissue" regions covering about ``--tissue`` of the area;
the rest is bare glass (near-white). It is written tile by tile (512x512,
JPEG), never held whole in memory, with sub-resolution levels down to 1/32
and the pixel size in the resolution tags. The truth is not known cell by
cell (BCCD labels only some cells); what this measures is memory and time,
and that tissue-free blocks are skipped. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from eosdetect.io import read_image  # noqa: E402
from eosdetect.training.shared_data import shared_root  # noqa: E402

TILE = 512
GLASS = (243, 242, 245)


def main(argv=None) -> int:
    import cv2
    import tifffile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--size", type=int, default=50000, help="side in pixels (square slide)")
    ap.add_argument("--tissue", type=float, default=0.5, help="fraction of the area covered by smear")
    ap.add_argument("--images", type=int, default=64, help="how many BCCD photos to tile")
    ap.add_argument("--pixel-size", type=float, default=0.06, help="um/px written into the file")
    ap.add_argument("--levels", type=int, default=5, help="sub-resolution levels (halving each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    src_dir = shared_root() / "bccd" / "images"
    names = sorted(src_dir.glob("*.jpg"))[: args.images]
    if not names:
        ap.error(f"no BCCD images in {src_dir}")
    base = [read_image(p) for p in names]
    ch, cw = base[0].shape[:2]
    levels = [base]
    for k in range(1, args.levels + 1):
        f = 2**k
        if ch % f or cw % f:
            ap.error(f"{cw}x{ch} photos cannot be halved {k} times exactly")
        levels.append([cv2.resize(im, (cw // f, ch // f), interpolation=cv2.INTER_AREA) for im in base])

    H = W = int(args.size)
    gr, gc = -(-H // ch), -(-W // cw)
    choice = rng.integers(0, len(base), size=(gr, gc))
    flips = rng.integers(0, 4, size=(gr, gc))
    # tissue: union of random discs on the photo grid, grown until the wanted fraction
    yy, xx = np.mgrid[:gr, :gc]
    tissue = np.zeros((gr, gc), bool)
    while tissue.mean() < args.tissue:
        cy, cx = rng.uniform(0, gr), rng.uniform(0, gc)
        rad = rng.uniform(0.08, 0.25) * min(gr, gc)
        tissue |= ((yy - cy) / rad) ** 2 + ((xx - cx) / (rad * rng.uniform(0.6, 1.6))) ** 2 <= 1

    def photo(i, j, k):
        im = levels[k][choice[i, j]]
        fl = flips[i, j]
        if fl & 1:
            im = im[::-1]
        if fl & 2:
            im = im[:, ::-1]
        return im

    def tiles(k):
        f = 2**k
        h, w, th, tw = -(-H // f), -(-W // f), ch // f, cw // f
        for r0 in range(0, h, TILE):
            for c0 in range(0, w, TILE):
                out = np.empty((TILE, TILE, 3), np.uint8)
                out[:] = GLASS
                r1, c1 = min(h, r0 + TILE), min(w, c0 + TILE)
                for i in range(r0 // th, (r1 - 1) // th + 1):
                    for j in range(c0 // tw, (c1 - 1) // tw + 1):
                        if not tissue[i, j]:
                            continue
                        pr0, pc0 = max(r0, i * th), max(c0, j * tw)
                        pr1, pc1 = min(r1, (i + 1) * th), min(c1, (j + 1) * tw)
                        im = photo(i, j, k)
                        out[pr0 - r0 : pr1 - r0, pc0 - c0 : pc1 - c0] = im[pr0 - i * th : pr1 - i * th,
                                                                           pc0 - j * tw : pc1 - j * tw]
                yield out

    t0 = time.time()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = 1e4 / args.pixel_size  # pixels per centimetre
    opts = dict(tile=(TILE, TILE), compression="jpeg", compressionargs={"level": 90}, photometric="rgb")
    with tifffile.TiffWriter(out, bigtiff=True) as tif:
        tif.write(tiles(0), shape=(H, W, 3), dtype=np.uint8, subifds=args.levels,
                  resolution=(res, res), resolutionunit="CENTIMETER", **opts)
        for k in range(1, args.levels + 1):
            f = 2**k
            tif.write(tiles(k), shape=(-(-H // f), -(-W // f), 3), dtype=np.uint8, subfiletype=1,
                      resolution=(res / f, res / f), resolutionunit="CENTIMETER", **opts)
    print(f"{out}: {W}x{H} px, {args.levels} sub-levels, tissue {tissue.mean():.2f} of the area, "
          f"{out.stat().st_size / 1e6:.0f} MB, {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
