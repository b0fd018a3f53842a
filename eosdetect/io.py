"""Reading and writing files: images, CSV, JSON, all writes atomic.

Everything read becomes an RGB ``uint8`` array of shape ``(rows, cols, 3)``
here and nowhere else. OpenCV's BGR order never leaves this module.

Supported inputs: PNG, JPEG, TIFF (8 and 16 bit, planar or interleaved,
first series and full resolution of pyramidal files), BMP, GIF (first
frame), WebP; grayscale, grayscale + alpha, RGB, RGBA, palette. EXIF
orientation is applied. 16-bit data is scaled by its bit depth: values up to
255 are taken as 8-bit, up to 4095 as 12-bit, anything else as 16-bit.
Transparent pixels are composited onto white (the colour of an empty slide).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io as _io
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Sequence

import numpy as np

from eosdetect.errors import InputError

log = logging.getLogger(__name__)

#: File name suffixes taken as images when a folder is searched.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".svs", ".ndpi", ".scn", ".bif")
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif")

#: Largest image (in pixels) read whole into memory; bigger ones need block-wise reading.
MAX_IMAGE_PIXELS = 400_000_000


# --------------------------------------------------------------------------- paths


def find_images(inputs: Sequence[str | os.PathLike], *, recursive: bool = True, keep_missing: bool = False,
                skip: Callable[[Path, Path], bool] | None = None) -> list[Path]:
    """List the image files named by ``inputs`` (files, or folders searched recursively).

    Files given explicitly are kept whatever their suffix (so that a bad file is
    reported rather than silently ignored); folders contribute the files whose
    suffix is in :data:`IMAGE_SUFFIXES`. Hidden files and folders are skipped.
    Links to folders are followed, each real folder searched once (a link back
    up the tree is not followed round and round).

    ``skip(file, folder)``, when given, is asked about each image file found
    in a searched folder (``file`` as found below the folder as given,
    ``folder`` the searched folder resolved) and leaves out those it returns
    True for (an application's own outputs, for instance).

    With ``keep_missing``, a path that does not exist and broken links in
    folders are listed too, for the caller to report with the other failed
    images, as long as something else was found.

    Raises
    ------
    InputError
        If a path does not exist (unless ``keep_missing``), nothing is found, or
        a folder holds no image file.
    """
    found: list[Path] = []
    missing: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            if not keep_missing:
                raise InputError(path, "no such file or folder")
            missing.append(path)
            found.append(path)
            continue
        if path.is_dir():
            searched = path.resolve()
            files = sorted(
                p
                for p in _walk_files(path, recursive)
                if (p.is_file() or (keep_missing and p.is_symlink() and not p.exists()))
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not (skip is not None and skip(p, searched))
            )
            if not files:
                raise InputError(
                    path, f"folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            found.extend(files)
        else:
            found.append(path)
    if missing and len(missing) == len(found):
        raise InputError(missing[0], "no such file or folder")
    # keep order and the paths as given, drop duplicates (the same file named twice)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _walk_files(folder: Path, recursive: bool = True) -> Iterator[Path]:
    """The files in ``folder`` (and below it when ``recursive``), hidden ones and those in hidden
    folders left out, as paths below ``folder``.

    Links to folders are followed, as a user who linked a folder of slides into the one given
    expects: after the folders themselves, so that a folder reached both ways keeps its own path.
    Each real folder is searched once, and a link to a folder above is not followed (``find -L``
    does the same), so that a link loop ends.
    """
    seen = {_folder_id(above) for above in folder.resolve().parents}  # a link up the tree: a loop
    starts = [folder]
    for start in starts:  # the folder, then the links to folders found in it, and so on
        for root, dirs, files in os.walk(start):  # not into links: they join ``starts``
            key = _folder_id(Path(root))
            if key is None or key in seen:  # unreadable, searched already, or a folder above: skip
                dirs[:] = []
                continue
            seen.add(key)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
            starts.extend(Path(root, d) for d in dirs if os.path.islink(os.path.join(root, d)))
            yield from (Path(root, f) for f in files if not f.startswith("."))


def _folder_id(folder: Path) -> tuple[int, int] | None:
    """A folder's identity (device, inode), the same through any link to it; None if it cannot be read."""
    try:
        st = folder.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


# --------------------------------------------------------------------------- pixels


def is_grey(rgb: np.ndarray) -> bool:
    """True when every pixel of an RGB image is grey (its three channels equal)."""
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def to_rgb_uint8(array: np.ndarray, max_value: float | None = None) -> np.ndarray:
    """Convert an image array of any common depth and channel layout to RGB uint8.

    Parameters
    ----------
    array : (M, N) or (M, N, C) ndarray
        ``C`` in 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). Bool, unsigned
        and signed integers, and floats (taken as 0..1 when their maximum is at
        most 1, else as 0..255) are accepted.
    max_value : float, optional
        White, for integer pixels of more than 8 bits (a slide read block by
        block gives every block the same); by default the bit depth (8, 10,
        12, 14 or 16 bits) that the largest value implies.

    Returns
    -------
    rgb : (M, N, 3) ndarray of uint8
        A new array; the input is not modified.

    Examples
    --------
    >>> to_rgb_uint8(np.array([[0, 4095]], dtype=np.uint16))[0, :, 0]
    array([  0, 255], dtype=uint8)
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[2] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)  # planar (C, M, N) -> (M, N, C)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image of shape (M, N) or (M, N, 1..4), got {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image has no pixels (shape {a.shape})")

    if a.dtype == np.uint8 and a.shape[2] in (1, 3):  # the common case: no arithmetic (and no float copy)
        return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else np.array(a, order="C", copy=True)
    f = _to_unit_float(a, max_value)
    channels = f.shape[2]
    if channels in (2, 4):
        alpha = f[:, :, -1:]
        colour = f[:, :, :-1]
        f = colour * alpha + (1.0 - alpha)  # composite over white
    if f.shape[2] == 1:
        f = np.repeat(f, 3, axis=2)
    return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)


def bit_depth_max(top: int, dtype) -> int:
    """White for integer pixels whose largest value is ``top``: the camera's bit depth (8, 10, 12,
    14 or 16 bits, as stored in 16-bit files), else the type's maximum.

    >>> bit_depth_max(1000, np.uint16), bit_depth_max(16000, np.uint16)
    (1023, 16383)
    """
    depths = [(1 << bits) - 1 for bits in (8, 10, 12, 14, 16)]
    return next((d for d in depths if top <= d), int(np.iinfo(dtype).max))


def _to_unit_float(a: np.ndarray, max_value: float | None = None) -> np.ndarray:
    """Scale to float32 in [0, 1] according to dtype and bit depth."""
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if np.issubdtype(a.dtype, np.integer):
        scale = float(max_value) if max_value else bit_depth_max(int(a.max()) if a.size else 0, a.dtype)
        return np.clip(a.astype(np.float32) / scale, 0, 1)
    if np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float32)
        f = np.nan_to_num(f, nan=0.0, posinf=0.0, neginf=0.0)
        return f if f.max(initial=0.0) <= 1.0 else f / 255.0
    raise ValueError(f"unsupported pixel type {a.dtype}")


# --------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8.

    Returns
    -------
    rgb : (M, N, 3) ndarray of uint8

    Raises
    ------
    InputError
        With a message ``path: problem`` for a missing, empty, truncated,
        non-image or too large file.

    Notes
    -----
    The format is told by the file's content, not its name: a JPEG saved as
    ``.tif`` is read as image viewers read it. The size is checked against
    :data:`MAX_IMAGE_PIXELS` from the file's header, before decoding; Pillow's
    own, process-wide ``PIL.Image.MAX_IMAGE_PIXELS`` is neither changed nor
    consulted for that (some of Pillow's format plugins still consult it
    while decoding: GIF frames, WebP, and TIFF files in colour spaces that
    Pillow converts). The decoders' warnings (odd TIFF tags, damaged EXIF
    data) are named after the file when an application routes them to
    :func:`named_warnings`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, not an image file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        with named_warnings(path):
            raw = _read_tiff(path) if is_tiff_file(path) else _read_pillow(path)
            return to_rgb_uint8(raw)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure on a user's file is bad input
        raise InputError(path, _describe_read_error(exc)) from None


#: The first bytes of a TIFF file: classic and BigTIFF, little- and big-endian.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_tiff_file(path: str | os.PathLike) -> bool:
    """Whether the file holds TIFF data (a slide format built on TIFF included), by its first bytes."""
    with open(path, "rb") as fh:
        return fh.read(4) in TIFF_MAGIC


@contextmanager
def named_warnings(path: str | os.PathLike) -> Iterator[None]:
    """Name ``path`` in the decoders' warnings while it is read in this thread: those handed to
    :func:`take_decoder_warning` meanwhile are logged as ``path: warning`` at the end of the block,
    once per file and process, so that a warning about an odd TIFF tag or damaged EXIF data says
    which file has it and is not repeated when the file is opened again.

    The library hands over nothing itself: Pillow's Python warnings and tifffile's log records
    reach Python's warning and logging machinery as usual unless an application routes them here
    (the hooks that can do so change process-wide state; ``eosdetect`` puts them in place for its
    run only). Other threads, and this one outside the block, are not affected. Nested blocks are
    one: the outermost names the file.
    """
    if _caught.messages is not None:
        yield
        return
    _caught.messages = messages = []
    try:
        yield
    finally:
        _caught.messages = None
        _log_once(printable(os.fspath(path)), messages)


def take_decoder_warning(text: str) -> bool:
    """Keep the warning ``text``, given in this thread, for the file this thread is reading
    (inside :func:`named_warnings`), to be logged naming that file; False, and nothing kept, when
    this thread is reading no file (the caller then shows the warning as usual).

    For the hooks of an application that route decoder warnings here; thread-safe.
    """
    messages = _caught.messages
    if messages is None:
        return False
    messages.append(text)
    return True


def _log_once(name: str, messages: list[str]) -> None:
    """Log each warning about file ``name`` as ``name: warning``, in order, unless logged already."""
    for text in dict.fromkeys(messages):
        with _WARNED_LOCK:
            new = (name, text) not in _WARNED
            _WARNED.add((name, text))
        if new:
            log.warning("%s: %s", name, text)


class _Caught(threading.local):
    """The decoder warnings kept in this thread by :func:`named_warnings` (None: no file being read)."""

    messages: list[str] | None = None


_caught = _Caught()
_WARNED: set[tuple[str, str]] = set()  # (file, warning) logged already
_WARNED_LOCK = threading.Lock()


def safe_filename(name: str | None, default: str = "file") -> str:
    """A plain file name (letters, digits, ``._-``; at most 100 characters, suffix kept) for a name
    that came from outside (an upload, a remote file)."""
    base = Path(name or default).name
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_" for ch in base).strip("._")[-100:] or default


def read_image_bytes(data: bytes, filename: str | None = None) -> np.ndarray:
    """Decode an image held in memory (an upload, a file sent to a worker)
    exactly as :func:`read_image` reads a file: the bytes go to a temporary
    folder, removed before returning. Errors name ``filename``."""
    import tempfile

    shown = Path(filename or "image").name
    if not data:
        raise InputError(shown, "empty file (0 bytes)")
    safe = safe_filename(shown, "image")
    with tempfile.TemporaryDirectory(prefix="eosdetect-") as tmp, named_warnings(shown):
        path = Path(tmp) / safe
        path.write_bytes(data)
        try:
            return read_image(path)
        except InputError as exc:
            raise InputError(shown, exc.problem) from None


def _describe_read_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower()
    if "truncated" in low or "premature" in low:
        return f"image file is truncated or damaged ({text})"
    if "cannot identify" in low or "not a tiff" in low or "invalid tiff" in low:
        return "not an image file (or an unsupported format)"
    return f"cannot read image ({text})"


def pillow_open(source: str | os.PathLike | BinaryIO):
    """Open an image with Pillow, as :func:`PIL.Image.open` does but without its decompression-bomb
    check, for a caller that checks the size against its own limit.

    That check compares the size with ``PIL.Image.MAX_IMAGE_PIXELS``, a setting of the whole
    process, which a library must leave as the application has it: this function neither changes
    nor consults it. It identifies the format by the file's first bytes with Pillow's registered
    plugins, as ``Image.open`` does, and reads only the header: pixels are decoded at ``load()``.

    Parameters
    ----------
    source : path or binary file object
        A file object is read from its start and stays open (the caller closes it); a path is
        opened here and closed with the image.

    Returns
    -------
    PIL.ImageFile.ImageFile
        To be used as ``with pillow_open(path) as im: ...``.

    Raises
    ------
    PIL.UnidentifiedImageError
        When no plugin can read it (as ``Image.open``).
    """
    import struct

    from PIL import Image, UnidentifiedImageError

    is_path = isinstance(source, (str, bytes, os.PathLike))
    if is_path:
        with open(source, "rb") as fh:
            prefix = fh.read(16)
    else:
        source.seek(0)
        prefix = source.read(16)
    for load_plugins in (Image.preinit, Image.init):  # the common plugins first, as Image.open
        load_plugins()
        for name in list(Image.ID):
            factory, accept = Image.OPEN[name]
            try:  # a plugin's test, like its reader, may fail on a few bytes of another format (as in Image.open)
                found = not accept or accept(prefix)
                if not found or isinstance(found, str):  # a str: the plugin's reason for not reading it
                    continue
                if not is_path:
                    source.seek(0)
                return factory(source, None if is_path else "")
            except (SyntaxError, IndexError, TypeError, struct.error):  # not this plugin's format after all
                continue
    raise UnidentifiedImageError(f"cannot identify image file {os.fspath(source) if is_path else source!r}")


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import ImageOps

    with pillow_open(path) as im:
        if im.width * im.height > MAX_IMAGE_PIXELS:
            raise InputError(
                path, f"image of {im.width}x{im.height} is too large to read whole"
            )
        im.load()  # decode now: truncated files raise here
        return pillow_array(ImageOps.exif_transpose(im))


def pillow_array(im) -> np.ndarray:
    """A decoded Pillow image as an array for :func:`to_rgb_uint8`: its own values where NumPy holds its
    mode, else converted (RGBA for a palette with transparency, RGB for palettes, CMYK, YCbCr, LAB...)."""
    if im.mode in ("1", "L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I", "F"):
        arr = np.array(im)
    elif im.mode == "P" and "transparency" in im.info:
        arr = np.array(im.convert("RGBA"))
    else:  # palette, CMYK, YCbCr, LAB, HSV ...
        arr = np.array(im.convert("RGB"))
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def colour_axes(axes: str, shape) -> str:
    """TIFF axes with the colour channels named ``S``: a channel axis ``C`` of 3 or 4
    planes (ImageJ and OME stacks store RGB that way) counts as colour when there is no ``S``."""
    sizes = dict(zip(axes, shape))
    if "S" not in axes and sizes.get("C") in (3, 4):
        return axes.replace("C", "S", 1)
    return axes


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(path, "TIFF file holds no image")
        refuse_image_stacks(tif, path)
        series = tif.series[0]
        level = series.levels[0] if series.levels else series
        axes = level.axes
        shape = dict(zip(axes, level.shape))
        n_pixels = shape.get("Y", 0) * shape.get("X", 0)
        if n_pixels > MAX_IMAGE_PIXELS:
            raise InputError(path, f"image of {shape.get('X')}x{shape.get('Y')} is too large to read whole")
        page = tif.pages[0]
        photometric = int(page.photometric)
        if photometric in _PILLOW_PHOTOMETRICS:  # CMYK, CIELab ...: Pillow converts these to RGB
            return _read_pillow(path)
        arr, axes = _first_plane(level, axes)  # only the pages of the first plane are decoded
        arr = tiff_colour_mode(arr, photometric, page.colormap, page.bitspersample)
        if photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None:
            axes = axes + "S"
        elif "S" in axes:
            arr = _drop_extra_samples(arr, axes.index("S"), page.extrasamples)
        orientation = int(page.tags.valueof(274, 1) or 1)
    axes = colour_axes(axes, arr.shape)
    # keep Y, X and samples (S); take the first plane of any other axis (Z, T, pages ...)
    for ax in [a for a in axes if a not in "YXS"]:
        arr = arr.take(0, axis=axes.index(ax))
        axes = axes.replace(ax, "", 1)
    if "S" in axes and axes.index("S") < axes.index("Y"):
        arr = np.moveaxis(arr, axes.index("S"), -1)
    return _orient(arr, orientation)


def tiff_images(tif) -> int:
    """How many images of full size a TIFF file holds: the planes of its first series (pages of a
    stack, a focus series, a time series...; the channels of one field, C, are one image), and any other series of
    the same width and height. A pyramid's levels, masks and smaller pages (a preview, a slide's
    label and macro pictures) are not images to count."""
    first = tif.series[0]
    level = first.levels[0] if first.levels else first
    sizes = dict(zip(colour_axes(level.axes, level.shape), level.shape))
    planes = int(np.prod([n for ax, n in sizes.items() if ax not in "YXSC"], dtype=np.int64))
    frame = (sizes.get("Y"), sizes.get("X"))
    for other in tif.series[1:]:
        lv = other.levels[0] if other.levels else other
        other_sizes = dict(zip(lv.axes, lv.shape))
        if (other_sizes.get("Y"), other_sizes.get("X")) == frame and not (lv.keyframe.subfiletype & 0b101):
            planes += 1  # a page of the same size that is neither a reduced copy (bit 0) nor a mask (bit 2)
    return planes


def refuse_image_stacks(tif, path: Path) -> None:
    """Raise :class:`InputError` for a TIFF file of several full-size images (:func:`tiff_images`):
    counting only the first would lose the others without a word, and counting each would count a
    focus or time series several times over."""
    n = tiff_images(tif)
    if n > 1:
        raise InputError(path, f"TIFF holds {n} images of the same size (pages of a stack); eosdetect counts one "
                               "image per file: save each page as its own file (e.g. tiffsplit, or ImageJ's Image > "
                               "Stacks > Stack to Images) and count those")


def _drop_extra_samples(arr: np.ndarray, axis: int, extrasamples: Sequence[int]) -> np.ndarray:
    """The colour samples and the first alpha of a TIFF's pixels (samples along ``axis``).

    ``extrasamples`` are the TIFF ExtraSamples values of the samples after the colour ones:
    1 (associated alpha) or 2 (unassociated alpha) is transparency; 0 (unspecified) is padding
    (RGBX) or data of no colour, and is dropped rather than taken as transparency.

    >>> _drop_extra_samples(np.zeros((1, 1, 4)), 2, [0]).shape
    (1, 1, 3)
    """
    extra = [int(e) for e in extrasamples or ()]
    colours = arr.shape[axis] - len(extra)
    if not extra or colours < 1:
        return arr
    keep = list(range(colours)) + [colours + i for i, e in enumerate(extra) if e in (1, 2)][:1]
    return arr if len(keep) == arr.shape[axis] else arr.take(keep, axis=axis)


def _first_plane(level, axes: str) -> tuple[np.ndarray, str]:
    """The pixels of a TIFF series (or pyramid level) that :func:`_read_tiff` keeps, and their axes:
    only the pages of its first plane are decoded (the first of every Z, T, page... axis), with all
    the colour pages when colour is stored across pages (a C axis of 3 or 4, see :func:`colour_axes`).
    A series of one page, or a layout not understood, is read whole, as before."""
    page_axes = level.keyframe.axes
    n = len(axes) - len(page_axes)
    if (n <= 0 or len(level.pages) <= 1 or axes[n:] != page_axes
            or int(np.prod(level.shape[:n])) != len(level.pages)):
        return level.asarray(), axes
    pages = np.arange(len(level.pages)).reshape(level.shape[:n])  # the page of each index of the page axes
    colour = colour_axes(axes, level.shape)
    kept = ""
    for i in reversed(range(n)):
        if colour[i] == "S":
            kept = axes[i] + kept
        else:
            pages = pages.take(0, axis=i)
    arr = level.asarray(key=pages.ravel().tolist())
    return arr.reshape(pages.shape + tuple(level.keyframe.shape)), kept + page_axes


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn rows x columns upright by a TIFF/EXIF orientation (1-8), as Pillow's
    ``ImageOps.exif_transpose`` does for JPEG and PNG."""
    turn = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return np.ascontiguousarray(turn(arr)) if turn else arr


_PILLOW_PHOTOMETRICS = (5, 8, 9, 10)  # separated (CMYK), CIELab, ICCLab, ITULab


def tiff_colour_mode(arr: np.ndarray, photometric: int, colormap, bits: int) -> np.ndarray:
    """Stored TIFF samples as colours: a palette through its colour map (RGB uint8), grey with 0
    as white inverted; other modes unchanged."""
    import tifffile

    if photometric == tifffile.PHOTOMETRIC.PALETTE and colormap is not None:
        return _apply_colormap(arr, colormap)
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
        return _invert_min_is_white(arr, bits)
    return arr


def _apply_colormap(indices: np.ndarray, colormap: np.ndarray) -> np.ndarray:
    """Palette TIFF: colour indices -> RGB uint8 through the file's colour map (3, 2**bits)."""
    cmap = np.asarray(colormap)
    if cmap.max() > 255:  # TIFF colour maps are 16-bit (v * 256 or v * 257 for 8-bit v)
        cmap = cmap.astype(np.uint32) >> 8
    cmap = cmap.astype(np.uint8)
    return np.moveaxis(cmap[:, np.clip(indices, 0, cmap.shape[1] - 1)], 0, -1)


def _invert_min_is_white(arr: np.ndarray, bits: int) -> np.ndarray:
    """Grey stored with 0 as white (TIFF 'min-is-white'): flip it to 0 as black."""
    if arr.dtype == np.bool_:
        return ~arr
    if np.issubdtype(arr.dtype, np.integer):
        top = (1 << min(int(bits), 8 * arr.dtype.itemsize)) - 1
        return (top - arr.astype(np.int64)).astype(arr.dtype)
    return (1.0 if arr.max(initial=0) <= 1 else arr.max()) - arr


# --------------------------------------------------------------------------- writing


#: Tells this process's temporary files from those of an earlier process that had the same id.
_RUN_TOKEN = secrets.token_hex(4)
#: Temporary files of :func:`atomic_write_bytes`: ``.<name>.eosdetect-<pid>-<token>-<random>.tmp``.
_TEMP_NAME = re.compile(r"\..*\.eosdetect-(\d+)-([0-9a-f]{8})-[a-z0-9_]{8}\.tmp", re.DOTALL)
#: Folders swept of stale temporary files by this process (see :func:`remove_stale_temp_files`).
_SWEPT: set[str] = set()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A reader never sees a half-written file, and an interrupted run leaves the
    previous version (or nothing) in place. The temporary files that a killed
    run left are removed at the first write into their folder
    (:func:`remove_stale_temp_files`). Several files that must change together
    are written with :class:`StagedFiles`.

    Raises
    ------
    OSError
        Naming ``path`` (not the temporary file) when it cannot be written:
        a read-only folder, a full disk.
    """
    with StagedFiles() as staged:
        staged.add(path, data)
    return Path(path)


class StagedFiles:
    """Files written together: each is written whole to a temporary file beside it
    (:meth:`add`), and only when all are written do they replace the files they are for,
    on leaving the ``with`` block without an error (renames, which need no space).

    A failure while writing (a full disk, a quota, a read-only folder) removes the
    temporary files and leaves every earlier file as it was.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with StagedFiles() as staged:
    ...         _ = staged.add(os.path.join(d, "a.csv"), b"x\\n")
    ...         _ = staged.add(os.path.join(d, "b.csv"), b"y\\n")
    ...     sorted(os.listdir(d))
    ['a.csv', 'b.csv']
    """

    def __init__(self) -> None:
        self._staged: list[tuple[str, Path]] = []  # (temporary file, the file it becomes)

    def __enter__(self) -> StagedFiles:
        return self

    def add(self, path: str | os.PathLike, data: bytes) -> Path:
        """Write ``data`` for ``path`` (to a temporary file, made ``path`` on leaving the block)."""
        path = Path(path)
        self._staged.append((_write_temp_file(path, data), path))
        return path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            for tmp, path in self._staged:
                try:
                    os.replace(tmp, path)
                except OSError as err:
                    raise _naming(err, path) from None
        finally:
            self.discard()  # what is left when a rename failed

    def discard(self) -> None:
        """Remove the temporary files not yet renamed."""
        for tmp, _ in self._staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._staged = []


def _write_temp_file(path: Path, data: bytes) -> str:
    """``data`` written whole and synced to a new temporary file beside ``path``; returns its path.
    Written with :func:`os.write`, whose errors (no space, quota) are raised naming ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.path.abspath(path.parent)
    if folder not in _SWEPT:
        _SWEPT.add(folder)
        remove_stale_temp_files(folder)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:48]}.eosdetect-{os.getpid()}-{_RUN_TOKEN}-",
                                   suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path``, the file the user asked for, rather than a temporary file."""
    return exc if exc.errno is None else OSError(exc.errno, exc.strerror, str(path))


@cache
def _umask() -> int:
    """The process's file-creation mask, learnt once (at the first write) without changing it.

    ``os.umask`` tells it only by setting it, for every thread at once: Linux's
    ``/proc/self/status`` is read instead, else a probe file shows it.
    """
    found = _umask_from_proc()
    return found if found is not None else _umask_from_probe()


def _umask_from_proc() -> int | None:
    """The umask as Linux (4.7 and later) shows it in ``/proc/self/status``; None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            line = next((line for line in fh if line.startswith("Umask:")), None)
        return int(line.split()[1], 8) if line else None
    except (OSError, ValueError, IndexError):
        return None


def _umask_from_probe() -> int:
    """The umask from the permissions it leaves on a file created, in a temporary folder, with all of them."""
    with tempfile.TemporaryDirectory(prefix="eosdetect-") as folder:
        probe = os.path.join(folder, "umask")
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o777))
        return 0o777 & ~os.stat(probe).st_mode


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove from ``folder`` the temporary files that an eosdetect process killed while writing
    (:func:`atomic_write_bytes`) left behind; return them.

    Only files named as eosdetect names its temporary files are touched, and only those of a
    process that is no longer running: a write in progress, in this process or another, is left
    alone. A folder that cannot be listed is left as it is.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_NAME.fullmatch(entry.name)
        if not m or not entry.is_file(follow_symlinks=False) or _writer_running(int(m[1]), m[2]):
            continue
        try:
            os.unlink(entry.path)
        except OSError as exc:
            log.debug("cannot remove stale temporary file %s: %s", entry.path, exc)
            continue
        removed.append(Path(entry.path))
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", folder, len(removed))
    return removed


def _writer_running(pid: int, token: str) -> bool:
    """Whether the process that made a temporary file (its id and run token) may still be writing it."""
    if pid == os.getpid():
        return token == _RUN_TOKEN  # the same id but another token: an earlier process (a container restart)
    if os.name == "nt" or pid <= 0:  # no harmless liveness test there: keep the file
        return True
    try:
        os.kill(pid, 0)  # signal 0: is there such a process?
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (PermissionError) or unknown: assume running
        return True
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`, :func:`text_bytes`)."""
    return atomic_write_bytes(path, text_bytes(text))


def text_bytes(text: str) -> bytes:
    """``text`` as the UTF-8 bytes eosdetect writes: the odd bytes of a file name that is not UTF-8
    are written ``\\xNN`` (:func:`printable`)."""
    return printable(text).encode("utf-8")


def write_json(path: str | os.PathLike, obj, *, exact_names: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically.

    A file name that is not UTF-8 is written as the tables write it, each odd byte ``\\xNN``
    (:func:`printable`); with ``exact_names`` it is kept as it is (its odd bytes as the JSON
    escapes of Python's surrogate escapes, which :func:`read_json` gives back unchanged: what a
    record that must find the file again needs)."""
    if not exact_names:
        obj = _printable_strings(obj)
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def _printable_strings(obj):
    """``obj`` with every string in it (keys too) :func:`printable`."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {_printable_strings(k): _printable_strings(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_printable_strings(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file; a missing or malformed file raises :class:`InputError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """Format rows as CSV text (floats with up to 6 decimals, trailing zeros dropped)."""
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_fmt(v) for v in row])
    return buf.getvalue()


def printable(text: str) -> str:
    """``text`` as valid Unicode, so that it can be printed or written as UTF-8: each byte of a file
    name that is not UTF-8 (held by Python as a surrogate escape) is written ``\\xNN``, so that the
    name can still be told from others and mapped back to its file (:data:`ESCAPE_ODD_BYTES`).

    >>> printable(os.fsdecode(b"caf\\xe9.jpg"))
    'caf\\\\xe9.jpg'
    """
    return text.encode("utf-8", ESCAPE_ODD_BYTES).decode("utf-8")


def _escape_odd_bytes(exc: UnicodeError):
    """The codec error handler :data:`ESCAPE_ODD_BYTES`: a surrogate escape (a byte of a file name that
    is not UTF-8) becomes ``\\xNN`` of its byte; any other character the codec cannot write, its
    ``backslashreplace`` form."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = []
    for ch in exc.object[exc.start:exc.end]:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(ch.encode("ascii", "backslashreplace").decode("ascii"))
    return "".join(out), exc.end


#: A codec error handler (``text.encode("utf-8", ESCAPE_ODD_BYTES)``, ``stream.reconfigure(errors=...)``):
#: the bytes of a file name that is not UTF-8 are written ``\\xNN``, in files and messages alike.
ESCAPE_ODD_BYTES = "eosdetect.escape_odd_bytes"
codecs.register_error(ESCAPE_ODD_BYTES, _escape_odd_bytes)


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Write a CSV file atomically."""
    return atomic_write_text(path, csv_text(header, rows))


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV file with a header row into a list of dicts."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a readable CSV file ({exc})") from None


def _fmt(value):
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return ""
        text = f"{float(value):.6f}".rstrip("0").rstrip(".")
        return "0" if text in ("", "-0") else text
    if isinstance(value, np.integer):
        return int(value)
    if value is None:
        return ""
    return value


def _png_params() -> list[int]:
    """Fast PNG settings: zlib level 1 with run-length matching and the "up" row filter.
    On a 1920x1440 smear overlay: 0.083 s and 1.9 MB, against 0.096 s and 2.2 MB with the
    "sub" filter, 0.11 s and 1.7 MB with "paeth", 0.30 s and 1.9 MB for OpenCV's default
    adaptive filter at level 3, 0.14 s for imagecodecs' libpng and 0.20 s for its libspng
    at level 1; even level 0 (no compression, 10 MB) takes 0.11 s."""
    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    return params


_PNG_PARAMS: list[int] = []


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as PNG bytes."""
    import cv2

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (M, N, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if not _PNG_PARAMS:
        _PNG_PARAMS.extend(_png_params())
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _PNG_PARAMS)
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image atomically (format from the suffix; PNG or JPEG)."""
    return atomic_write_bytes(path, image_bytes(path, rgb))


def image_bytes(path: str | os.PathLike, rgb: np.ndarray) -> bytes:
    """An RGB uint8 image encoded in the format of ``path``'s suffix (PNG or JPEG)."""
    import cv2

    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return encode_png(rgb)
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: cannot encode image as {suffix}")
    return buf.tobytes()


def folder_digest(folder: Path, skip: tuple[str, ...] = ()) -> str:
    """A short hash of the names and bytes of the files in ``folder`` (but ``skip``)."""
    digest = hashlib.sha1()
    for p in sorted(Path(folder).iterdir()):
        if p.is_file() and p.name not in skip:
            digest.update(os.fsencode(p.name) + b"\0")
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]
