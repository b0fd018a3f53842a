"""Resuming a count: the per-image records that mark an image done.

A record ``OUT_DIR/.eosdetect/<name>.json`` is written last, once an image's
files are written. It keeps the image's path, its size and time, the
fingerprint of the settings and model files it was counted with, which
outputs were written, and its ``counts.csv`` row. A re-run with the same
settings skips an image whose record still matches it and whose outputs are
all there; an image whose output name changed (another image of its stem
joined the run, or left it) takes its files with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from eosdetect.apps.batch.naming import EXPORT_FORMATS, output_paths
from eosdetect.apps.batch.tables import CountRow
from eosdetect.apps.layout import RUN_RECORD_DIR
from eosdetect.errors import InputError
from eosdetect.io import read_json, write_json

#: The outputs a record lists, when they were written.
RECORDED_OUTPUTS = ("detections", "overlay", "heatmap", *EXPORT_FORMATS)


def settings_fingerprint(settings: dict, model_files: str | None) -> str:
    """A short hash of a run's settings (``summary.json``'s, less the model's folder) and its
    model files (:meth:`eosdetect.Model.digest`: other weights, other results)."""
    d = dict(settings)
    d.pop("model_path", None)
    d["model_files"] = model_files
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def recorded_images(out_dir: Path) -> dict[str, str]:
    """Output name -> image (the path it resolved to), from the records in ``out_dir``."""
    recorded: dict[str, str] = {}
    for state in sorted((out_dir / RUN_RECORD_DIR).glob("*.json")):
        try:
            record = read_json(state)
            recorded[state.stem] = str(record.get("resolved") or record["image"])
        except (InputError, KeyError, TypeError, AttributeError):
            continue
    return recorded


def follow_renames(out_dir: Path, images: list[Path], names: list[str], recorded: dict[str, str]) -> None:
    """Files of an image counted before under another output name (its stem became shared when an
    image of the same stem joined the run, or stopped being shared) take its new name, so that
    nothing stale is left behind under the old one and the re-run can still skip the image."""
    wanted = {p.resolve(): n for p, n in zip(images, names)}
    moves = [(old, wanted[Path(image).resolve()]) for old, image in recorded.items()
             if wanted.get(Path(image).resolve(), old) != old]
    if not moves:
        return
    # two passes, through a side folder: a new name may be another moving image's old one
    side = out_dir / RUN_RECORD_DIR / "renaming"
    side.mkdir(exist_ok=True)
    for i, (old, _) in enumerate(moves):
        for key, path in output_paths(out_dir, old).items():
            if path.is_file():
                os.replace(path, side / f"{i}.{key}")
    for i, (_, new) in enumerate(moves):
        after = output_paths(out_dir, new)
        for key in (*RECORDED_OUTPUTS, "state"):  # the record last
            if (side / f"{i}.{key}").is_file():
                os.replace(side / f"{i}.{key}", after[key])
            else:  # what another image left under this name is not this image's
                after[key].unlink(missing_ok=True)
    shutil.rmtree(side, ignore_errors=True)


def done_row(out_dir: Path, image: Path, name: str, fingerprint: str, *, overlay: bool,
             exports: tuple[str, ...] = ()) -> CountRow | None:
    """The row of ``image`` when an earlier run counted it with these settings and its outputs
    are all still there (``overlay``: this run draws overlays; ``exports``: the formats it writes
    the cells in, see :data:`~eosdetect.apps.batch.tables.EXPORT_FORMATS`); None when it must be
    counted."""
    p = output_paths(out_dir, name)
    if not p["state"].is_file() or not p["detections"].is_file():
        return None
    if overlay and not p["overlay"].is_file():
        return None
    try:
        state = read_json(p["state"])
    except InputError:
        return None
    if overlay and "overlay" not in state.get("outputs", ["overlay"]):
        return None  # counted without an overlay: the one there is older than these results
    if not set(exports) <= set(state.get("outputs", [])):
        return None  # counted without an export this run makes
    if (state.get("fingerprint") != fingerprint
            or Path(str(state.get("resolved") or state.get("image"))).resolve() != image.resolve()):
        return None
    if not all(p[k].is_file() for k in state.get("outputs", []) if k in p):
        return None  # an output was deleted since
    try:
        st = image.stat()
    except OSError:
        return None
    if state.get("mtime") != st.st_mtime or state.get("size") != st.st_size:
        return None
    row = state.get("row")
    return CountRow.from_dict(row) if isinstance(row, dict) else None


def mark_done(out_dir: Path, name: str, image: Path, fingerprint: str, row: CountRow) -> None:
    """Write the record that lets a re-run skip ``image`` (written last, after its files)."""
    try:
        st = image.stat()
    except OSError:  # the image went away after it was counted: nothing to skip next time
        return
    p = output_paths(out_dir, name)
    outputs = [k for k in RECORDED_OUTPUTS if p[k].is_file()]
    write_json(p["state"], {
        "image": str(image), "resolved": str(image.resolve()),  # the path as given, and where it led
        "fingerprint": fingerprint, "mtime": st.st_mtime, "size": st.st_size,
        "row": row.to_dict(), "outputs": outputs,
    }, exact_names=True)  # the image's own name, to find it again


def withdraw(out_dir: Path, name: str) -> None:
    """Remove an image's record, before its files are replaced by new ones: until it is marked
    done again, a re-run counts it again (it never takes the new files for the recorded ones)."""
    output_paths(out_dir, name)["state"].unlink(missing_ok=True)


def discard(out_dir: Path, name: str) -> None:
    """Remove an image's outputs and record (what an earlier run wrote for an image that
    fails now no longer stands beside its error)."""
    for path in output_paths(out_dir, name).values():
        path.unlink(missing_ok=True)
