"""Output names: which file names each image's results get in the output folder.

An image ``x.png`` gets ``x_detections.csv``, ``x_overlay.png`` (and, for a
slide, ``x_heatmap.png``) and the resume record ``.eosdetect/x.json``;
images that share a stem get their folders or extensions in the name, and
the results of images counted into the folder by an earlier run keep theirs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from eosdetect.apps.layout import RUN_RECORD_DIR

#: Output names are kept to this many bytes (file systems allow 255, with the suffixes and temporary files).
MAX_NAME_BYTES = 160
#: The files of one image's results, by kind (``heatmap``: slides only; ``state``: its resume record).
#: Formats ``count --export`` writes an image's cells in (each a kind of :func:`output_paths`): QuPath
#: GeoJSON (``<name>.geojson``: outlines, classes, scores, the densest high-power field) and napari's
#: Points CSV (``<name>_napari.csv``).
EXPORT_FORMATS = ("geojson", "napari")
OUTPUT_KINDS = ("detections", "overlay", "heatmap", *EXPORT_FORMATS, "state")


def output_paths(out_dir: Path, name: str) -> dict[str, Path]:
    """The files of the image whose output name is ``name``, by kind (:data:`OUTPUT_KINDS`)."""
    return {
        "detections": out_dir / f"{name}_detections.csv",
        "overlay": out_dir / f"{name}_overlay.png",
        "heatmap": out_dir / f"{name}_heatmap.png",
        "geojson": out_dir / f"{name}.geojson",
        "napari": out_dir / f"{name}_napari.csv",
        "state": out_dir / RUN_RECORD_DIR / f"{name}.json",
    }


def output_names(paths: list[Path], taken: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """File-name stems for outputs: the image stem, prefixed by parent folders when two
    images share a stem (``a/x.png``, ``b/x.png`` -> ``a__x``, ``b__x``), with its
    extension when they are in one folder (``x.png``, ``x.jpg`` -> ``x.png``, ``x.jpg``).
    A name that is still shared, or is in ``taken`` (the results of other images), is
    numbered (``x__2``); a very long one is shortened, with a hash of the whole kept.

    >>> output_names([Path("a/x.png"), Path("b/x.png"), Path("b/y.png")])
    ['a__x', 'b__x', 'y']
    >>> output_names([Path("a/x.jpg"), Path("a/x.png"), Path("b/x.jpg")])
    ['a__x.jpg', 'a__x.png', 'b__x']
    """
    folder_stems: dict[tuple[Path, str], int] = {}
    for p in paths:
        key = (p.resolve().parent, p.stem)
        folder_stems[key] = folder_stems.get(key, 0) + 1
    bases = [p.name if folder_stems[(p.resolve().parent, p.stem)] > 1 else p.stem for p in paths]
    stem_folders: dict[str, set[Path]] = {}
    for p in paths:
        stem_folders.setdefault(p.stem, set()).add(p.resolve().parent)
    # a stem in several folders is prefixed for each of its images, whatever their extensions
    # (a/x.jpg, a/x.png, b/x.jpg -> a__x.jpg, a__x.png, b__x), then deeper while names still clash
    clash = [len(stem_folders[p.stem]) > 1 for p in paths]
    names = list(bases)
    depth = 0
    while any(clash) and depth < 32:
        depth += 1
        names = [
            "__".join([*p.parent.parts[-depth:], base]) if c else n
            for p, base, n, c in zip(paths, bases, names, clash)
        ]
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        clash = [counts[n] > 1 for n in names]
    return _numbered([_short_name(n.replace(os.sep, "_").replace(":", "_")) for n in names], taken)


def run_names(images: list[Path], recorded: dict[str, str]) -> list[str]:
    """Output names of ``images``; the results of other images, counted into the folder by
    an earlier run and still there (``recorded``: output name -> image), keep theirs
    (``slideA/x.jpg`` counted before ``slideB/x.jpg``: ``x`` stays slideA's, the new one
    is ``slideB__x``)."""
    here = {p.resolve() for p in images}
    others = {name: Path(image) for name, image in recorded.items()
              if Path(image).resolve() not in here and Path(image).is_file()}
    names = output_names(images)
    clash = set(names) & set(others)
    if clash:  # those get their folder in front, as if the other images were in this run
        combined = output_names([*(p.resolve() for p in images), *others.values()])[: len(images)]
        names = _numbered([c if n in clash else n for n, c in zip(names, combined)], taken=set(others))
    return names


def _numbered(names: list[str], taken) -> list[str]:
    """Names still shared (same file name in identical folder names, or ``t:1`` beside ``t_1``),
    or in ``taken``, get a number."""
    used = set(taken)
    out = []
    for n in names:
        unique, k = n, 1
        while unique in used:
            k += 1
            unique = f"{n}__{k}"
        used.add(unique)
        out.append(unique)
    return out


def _short_name(name: str) -> str:
    raw = os.fsencode(name)
    if len(raw) <= MAX_NAME_BYTES:
        return name
    tag = hashlib.sha1(raw).hexdigest()[:10]
    return raw[: MAX_NAME_BYTES - 12].decode("utf-8", "ignore") + "~" + tag  # no half character kept
