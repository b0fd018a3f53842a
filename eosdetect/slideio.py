"""Whole-slide images and other images too large for memory, read region by region.

:class:`SlideReader` reads a (pyramidal) slide file (TIFF, SVS, NDPI...)
through tifffile's Zarr view, which decodes only the TIFF tiles a region
touches (OpenSlide is used instead, where its Python binding is installed,
for formats tifffile cannot read). :class:`ArraySlide` gives any array with
NumPy slicing (NumPy, zarr, dask) the same interface, so
:meth:`eosdetect.Model.detect_slide` takes either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eosdetect.errors import EosdetectError, InputError
from eosdetect.io import colour_axes, refuse_image_stacks, tiff_colour_mode, to_rgb_uint8

#: Formats that are whole-slide images whatever their size.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".mrxs", ".vms", ".qptiff")
#: An image above this many pixels is counted as a slide (block by block), whatever its format.
SLIDE_MIN_PIXELS = 64_000_000
#: The most memory the decoded pixels of an image that must be decoded whole (PNG, JPEG) may take
#: (:class:`DecodedImage`): with the model and a block at a time, a count stays under about 2.5 GB.
MAX_DECODED_BYTES = 1_000_000_000
THUMB_MAX_SIDE = 2048


def slide_size(path: str | Path) -> tuple[int, int, int] | None:
    """``(rows, cols, levels)`` of a TIFF-like file, or None when tifffile cannot read it."""
    import tifffile

    from eosdetect.io import named_warnings

    try:
        with named_warnings(path), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            levels = series.levels or [series]
            shape = dict(zip(levels[0].axes, levels[0].shape))
            return int(shape.get("Y", 0)), int(shape.get("X", 0)), len(levels)
    except Exception:  # noqa: BLE001 - not a readable TIFF: read_image reports why
        return None


def is_slide(path: str | Path, min_pixels: int = SLIDE_MIN_PIXELS) -> bool:
    """Whether ``path`` should be counted block by block rather than read whole: a whole-slide format,
    or any image of more than ``min_pixels`` pixels, whatever its format (its size from its header),
    so that an image that decodes large is counted in bounded memory."""
    path = Path(path)
    if path.suffix.lower() in SLIDE_SUFFIXES:
        return True
    size = image_size(path)
    return size is not None and size[0] * size[1] > min_pixels


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(rows, cols)`` of an image file from its header (nothing decoded); None when it cannot be told
    (reading it then reports why)."""
    from eosdetect.io import is_tiff_file, named_warnings, pillow_open

    try:
        if is_tiff_file(path):
            size = slide_size(path)
            return None if size is None else size[:2]
        with named_warnings(path), pillow_open(path) as im:  # a header's odd tag is reported naming the file
            return im.height, im.width
    except Exception:  # noqa: BLE001 - not an image: read_image reports why
        return None


class RegionSource:
    """What block-by-block counting reads: ``shapes`` (rows, columns per
    level, level 0 = full resolution), ``mpp`` (micrometres per pixel or
    None), ``path`` (a name for messages), :meth:`read` and :meth:`thumbnail`.
    Subclasses implement ``_read`` for regions already clipped to the level."""

    path: Path
    mpp: float | None
    shapes: list[tuple[int, int]]

    # ------------------------------------------------------------------ reads
    @property
    def shape(self) -> tuple[int, int]:
        """Rows and columns at full resolution."""
        return self.shapes[0]

    def read(self, r0: int, r1: int, c0: int, c1: int, level: int = 0) -> np.ndarray:
        """RGB uint8 pixels ``[r0:r1, c0:c1]`` of a level (clipped to the slide)."""
        rows, cols = self.shapes[level]
        r0, c0 = max(0, int(r0)), max(0, int(c0))
        r1, c1 = min(rows, int(r1)), min(cols, int(c1))
        try:
            return self._read(r0, r1, c0, c1, level)
        except (EosdetectError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged tile: this slide fails, the run goes on
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(self.path, f"damaged slide: cannot decode rows {r0}-{r1}, columns {c0}-{c1}"
                             f" (level {level}): {text}") from None

    def thumbnail(self, max_side: int = THUMB_MAX_SIDE, *, whole_limit: float = 160e6) -> tuple[np.ndarray, float]:
        """A small picture of the whole slide, and level-0 pixels per thumbnail pixel.

        Taken from the smallest pyramid level still ``max_side`` across; a level
        over ``whole_limit`` pixels (a flat TIFF has no smaller one) is read in
        strips of bounded size and shrunk strip by strip."""
        import cv2

        order = sorted(range(len(self.shapes)), key=lambda i: max(self.shapes[i]))
        level = next((i for i in order if max(self.shapes[i]) >= max_side), order[-1])
        rows, cols = self.shapes[level]
        f = min(1.0, max_side / max(rows, cols))
        size = (max(1, round(cols * f)), max(1, round(rows * f)))
        if rows * cols > whole_limit:
            img = self._strip_thumbnail(level, size)
        else:
            img = self.read(0, rows, 0, cols, level)
            if f < 1:
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        return img, self.shape[1] / img.shape[1]

    def _strip_thumbnail(self, level: int, size: tuple[int, int], strip_pixels: float = 8e6) -> np.ndarray:
        """Shrink a level to ``size`` (width, height) reading about ``strip_pixels`` at a time."""
        import cv2

        rows, cols = self.shapes[level]
        out_w, out_h = size
        # whole output rows per strip, so that strips join without seams
        out_rows_per_strip = max(1, int(strip_pixels / cols * out_h / rows))
        parts = []
        for o0 in range(0, out_h, out_rows_per_strip):
            o1 = min(out_h, o0 + out_rows_per_strip)
            r0, r1 = int(o0 * rows / out_h), int(round(o1 * rows / out_h))
            strip = self.read(r0, r1, 0, cols, level)
            parts.append(cv2.resize(strip, (out_w, o1 - o0), interpolation=cv2.INTER_AREA))
        return np.concatenate(parts, axis=0)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SlideReader(RegionSource):
    """Region reads from a (pyramidal) slide, level 0 = full resolution."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.mpp: float | None = None
        self._openslide = None
        try:
            self._open_tifffile()
        except _Refused as refused:  # read, and not a file to count as one image
            self._tif.close()
            raise refused.error from None
        except Exception as exc:  # noqa: BLE001
            if not self._open_openslide():
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                hint = "" if self.path.suffix.lower() in (".tif", ".tiff", ".svs") else \
                    " (for this format install OpenSlide and openslide-python)"
                raise InputError(self.path, f"cannot read as a slide: {text}{hint}") from None

    # ------------------------------------------------------------------ backends
    def _open_tifffile(self) -> None:
        import tifffile
        import zarr

        from eosdetect.io import named_warnings

        with named_warnings(self.path):  # an odd tag is reported naming the slide, once
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
        try:
            refuse_image_stacks(self._tif, self.path)
        except InputError as exc:
            raise _Refused(exc) from None
        levels = series.levels or [series]
        self._axes = colour_axes(levels[0].axes, levels[0].shape)
        if "Y" not in self._axes or "X" not in self._axes:
            raise ValueError(f"no image plane in axes {self._axes}")
        group = zarr.open(series.aszarr(), mode="r")
        if hasattr(group, "shape"):
            self._arrays = [group]
        else:
            self._arrays = [group[str(i)] for i in range(len(levels))]
        self.shapes = []
        for a in self._arrays:
            d = dict(zip(self._axes, a.shape))
            self.shapes.append((int(d["Y"]), int(d["X"])))
        self.mpp = _tiff_mpp(self._tif)
        page = self._tif.pages[0]
        self._photometric, self._colormap, self._bits = int(page.photometric), page.colormap, int(page.bitspersample)
        self._white = self._white_value(page)

    def _white_value(self, page) -> int | None:
        """One white for every block of a slide of more than 8 bits (a guess per block would make a
        block of dark tissue brighter than the same tissue beside glass): the bit depth implied by
        the largest value of the smallest pyramid level, or by the file's tags."""
        import tifffile

        from eosdetect.io import bit_depth_max

        dtype = np.dtype(self._arrays[0].dtype)
        if not np.issubdtype(dtype, np.integer) or dtype.itemsize == 1 or self._colormap is not None:
            return None
        if self._photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            return (1 << self._bits) - 1
        smallest = min(range(len(self.shapes)), key=lambda i: self.shapes[i][0] * self.shapes[i][1])
        if self.shapes[smallest][0] * self.shapes[smallest][1] <= 16e6:
            top = int(np.asarray(self._arrays[smallest]).max())
        else:
            tag = page.tags.get("SMaxSampleValue")
            top = int(np.max(tag.value)) if tag is not None else (1 << self._bits) - 1
        return bit_depth_max(top, dtype)

    def _open_openslide(self) -> bool:
        try:
            import openslide
        except ImportError:
            return False
        try:
            self._openslide = openslide.OpenSlide(str(self.path))
        except Exception:  # noqa: BLE001
            return False
        self.shapes = [(int(h), int(w)) for w, h in self._openslide.level_dimensions]
        mpp = self._openslide.properties.get("openslide.mpp-x")
        self.mpp = float(mpp) if mpp else None
        return True

    def _read(self, r0: int, r1: int, c0: int, c1: int, level: int) -> np.ndarray:
        if self._openslide is not None:
            f = self._openslide.level_downsamples[level]
            im = self._openslide.read_region((int(c0 * f), int(r0 * f)), level, (c1 - c0, r1 - r0))
            return to_rgb_uint8(np.asarray(im))
        index = []
        for ax in self._axes:
            index.append(slice(r0, r1) if ax == "Y" else slice(c0, c1) if ax == "X" else
                         slice(None) if ax == "S" else 0)
        arr = np.asarray(self._arrays[level][tuple(index)])
        kept = [ax for ax in self._axes if ax in "YXS"]
        if "S" in kept and kept.index("S") < kept.index("Y"):
            arr = np.moveaxis(arr, kept.index("S"), -1)
        return to_rgb_uint8(tiff_colour_mode(arr, self._photometric, self._colormap, self._bits), self._white)

    def close(self) -> None:
        if self._openslide is not None:
            self._openslide.close()
        else:
            self._tif.close()


class _Refused(Exception):
    """A slide file read, but refused (:func:`eosdetect.io.refuse_image_stacks`): not one to try OpenSlide on."""

    def __init__(self, error: InputError):
        super().__init__(str(error))
        self.error = error


def _tiff_mpp(tif) -> float | None:
    """Micrometres per pixel from an SVS description ("MPP = 0.25") or the
    resolution tags (only when their unit is centimetre or inch)."""
    import re

    page = tif.pages[0]
    desc = page.description or ""
    m = re.search(r"MPP\s*=\s*([0-9.]+)", desc)
    if m:
        return float(m.group(1))
    try:
        unit = int(page.tags["ResolutionUnit"].value)
        num, den = page.tags["XResolution"].value
    except (KeyError, TypeError, ValueError):
        return None
    if not num or not den or unit not in (2, 3):
        return None
    per_unit = num / den  # pixels per inch or per centimetre
    mpp = (25400.0 if unit == 2 else 10000.0) / per_unit
    return mpp if 0.01 <= mpp <= 50 else None  # 72 dpi and such defaults are no pixel size



class ArraySlide(RegionSource):
    """An array with NumPy slicing (NumPy, zarr, dask) read region by region like a slide.

    Parameters
    ----------
    array : (M, N, 3) or (M, N) array_like
        RGB or grey pixels, any integer or float dtype (converted as
        :func:`eosdetect.io.to_rgb_uint8` converts images); only the regions
        read are loaded.
    mpp : float, optional
        Micrometres per pixel.
    name : str
        What messages call it.

    >>> s = ArraySlide(np.zeros((40, 60, 3), np.uint8), mpp=0.25)
    >>> s.shape, s.read(-5, 10, 50, 99).shape
    ((40, 60), (10, 10, 3))
    """

    def __init__(self, array, mpp: float | None = None, name: str = "array"):
        shape = tuple(getattr(array, "shape", ()))
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
            raise ValueError(f"{name}: expected an (M, N) or (M, N, 3) array, got shape {shape}")
        self.array = array
        self.path = Path(name)
        self.mpp = float(mpp) if mpp else None
        self.shapes = [(int(shape[0]), int(shape[1]))]
        self._white = None
        if np.issubdtype(np.dtype(array.dtype), np.integer) and np.dtype(array.dtype).itemsize > 1:
            self._white = np.iinfo(np.dtype(array.dtype)).max  # one white for every block

    def _read(self, r0: int, r1: int, c0: int, c1: int, level: int) -> np.ndarray:
        region = np.asarray(self.array[r0:r1, c0:c1])
        if region.dtype == np.uint8 and region.ndim == 3 and region.shape[2] == 3:
            return np.ascontiguousarray(region)
        return to_rgb_uint8(region, self._white)


class DecodedImage(RegionSource):
    """An image file of a format that cannot be read region by region (PNG, JPEG...), decoded once
    and then read block by block like a slide: Pillow's decoded image is the only full-size copy
    held (4 bytes a pixel for colour, 1 for grey or palette), never the full-size arrays of
    :func:`eosdetect.io.read_image`'s whole-image path. Each block is converted to RGB as
    ``read_image`` converts a whole image.

    Raises
    ------
    InputError
        When its decoded pixels would take more than :data:`MAX_DECODED_BYTES` (a tiled TIFF of
        it is read block by block instead), or it cannot be decoded.
    """

    def __init__(self, path: str | Path):
        from PIL import ImageOps

        from eosdetect.io import named_warnings, pillow_open

        self.path = Path(path)
        self.mpp = None
        self._white = None
        try:
            with named_warnings(self.path):
                im = pillow_open(self.path)
                need = decoded_bytes(im.width, im.height, im.mode)
                if need > MAX_DECODED_BYTES:
                    im.close()
                    raise InputError(self.path, too_large_to_decode(im.width, im.height, need))
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # upright, as read_image turns it (no copy)
                self._image = im
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged file
            raise InputError(self.path, f"cannot decode image: {exc}") from None
        self.shapes = [(self._image.height, self._image.width)]
        if self._image.mode.startswith("I;16"):
            self._white = 65535  # one white for every block

    def thumbnail(self, max_side: int = THUMB_MAX_SIDE, *, whole_limit: float = 0) -> tuple[np.ndarray, float]:
        """As :meth:`RegionSource.thumbnail`, in strips whatever the size: a second full-size copy
        of the pixels, as RGB, is what this class avoids."""
        return super().thumbnail(max_side, whole_limit=whole_limit)

    def _read(self, r0: int, r1: int, c0: int, c1: int, level: int) -> np.ndarray:
        from eosdetect.io import pillow_array

        return to_rgb_uint8(pillow_array(self._image.crop((c0, r0, c1, r1))), self._white)

    def close(self) -> None:
        self._image.close()


#: Bytes a pixel that Pillow keeps for an image of each mode (others: 4).
_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2}


def decoded_bytes(width: int, height: int, mode: str | None) -> int:
    """The memory an image that must be decoded whole (:class:`DecodedImage`) takes decoded, for its
    Pillow ``mode`` (None: unknown, taken as colour); over :data:`MAX_DECODED_BYTES` it is refused.

    >>> decoded_bytes(19999, 19999, "RGB") > MAX_DECODED_BYTES
    True
    """
    return width * height * _PILLOW_BYTES.get(mode or "RGB", 4)


def too_large_to_decode(width: int, height: int, need: float) -> str:
    """Why an image that must be decoded whole is refused, and what to do instead."""
    return (f"image of {width}x{height} takes {need / 1e9:.1f} GB decoded, over the limit of "
            f"{MAX_DECODED_BYTES / 1e9:.1f} GB for a file that must be decoded whole (not a TIFF): save it as "
            "a tiled TIFF (e.g. vips tiffsave in.png out.tif --tile --pyramid), which is read block by block")


def open_slide(source, *, mpp: float | None = None) -> RegionSource:
    """A :class:`RegionSource` for a slide file path, an open source, or an array.

    An open source is returned as it is (the caller closes it)."""
    if isinstance(source, RegionSource):
        return source
    if isinstance(source, (str, Path)):
        from eosdetect.io import is_tiff_file

        if Path(source).suffix.lower() in SLIDE_SUFFIXES or is_tiff_file(source):
            return SlideReader(source)
        return DecodedImage(source)
    if hasattr(source, "shape") and hasattr(source, "__getitem__"):
        return ArraySlide(source, mpp=mpp)
    raise TypeError(f"expected a slide path, a SlideReader or an array, got {type(source).__name__}")
