import numpy as np
import pytest

from eosdetect.errors import InputError
from eosdetect.io import atomic_write_text, find_images, read_image, to_rgb_uint8, write_csv, write_image


def _save_pil(path, arr, **kw):
    from PIL import Image

    Image.fromarray(arr).save(path, **kw)
    return path


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 17, 3), dtype=np.uint8)


def test_png_jpeg_bmp_roundtrip(tmp_path, rgb):
    p = write_image(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image(p), rgb)
    q = _save_pil(tmp_path / "a.jpg", rgb, quality=95)
    assert read_image(q).shape == (12, 17, 3)
    b = _save_pil(tmp_path / "a.bmp", rgb)
    np.testing.assert_array_equal(read_image(b), rgb)


def test_grayscale_and_rgba(tmp_path):
    gray = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    out = read_image(_save_pil(tmp_path / "g.png", gray))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], gray)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # opaque red-ish
    rgba[1, 1, 3] = 0  # transparent -> white
    out = read_image(_save_pil(tmp_path / "a.png", rgba))
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]


def test_16bit_tiff_and_png(tmp_path):
    import tifffile

    a16 = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a16)
    out = read_image(tmp_path / "a.tif")
    assert out[..., 0].tolist() == [[0, 255], [128, 1]]
    rgb16 = np.stack([a16, a16 // 2, a16 // 4], axis=-1)
    tifffile.imwrite(tmp_path / "rgb.tiff", rgb16, photometric="rgb")
    out = read_image(tmp_path / "rgb.tiff")
    assert out[0, 1].tolist() == [255, 127, 64]
    # 12-bit data stored in 16 bits is scaled by 4095, not 65535
    a12 = np.array([[0, 4095]], dtype=np.uint16)
    _save_pil(tmp_path / "b.png", a12)
    assert read_image(tmp_path / "b.png")[0, :, 0].tolist() == [0, 255]
    # so are 10- and 14-bit camera data (were read at a quarter of their brightness)
    for bits in (10, 14):
        top = (1 << bits) - 1
        tifffile.imwrite(tmp_path / f"c{bits}.tif", np.array([[0, top // 2, top]], dtype=np.uint16))
        assert read_image(tmp_path / f"c{bits}.tif")[0, :, 0].tolist() == [0, 127, 255]
    tifffile.imwrite(tmp_path / "planar.tif", np.stack([a16, a16, a16]), photometric="rgb", planarconfig="separate")
    assert read_image(tmp_path / "planar.tif").shape == (2, 2, 3)


def test_tiff_colour_modes(tmp_path):
    import tifffile
    from PIL import Image

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:16] = (200, 30, 150)
    rgb[16:] = (240, 240, 240)
    Image.fromarray(rgb).quantize(colors=4).save(tmp_path / "palette.tif")  # colour indices + colour map
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    for name in ("palette.tif", "cmyk.tif"):
        assert read_image(tmp_path / name)[[0, 31], 0].tolist() == [[200, 30, 150], [240, 240, 240]], name
    # grey stored with 0 as white, 8- and 16-bit and bilevel: a dark pixel stays dark
    tifffile.imwrite(tmp_path / "w8.tif", np.full((16, 16), 255 - 30, np.uint8), photometric="miniswhite")
    w16 = np.full((16, 16), 65535 - 7710, np.uint16)
    w16[-1] = 0  # a white row: the full 16 bits are used
    tifffile.imwrite(tmp_path / "w16.tif", w16, photometric="miniswhite")
    ink = np.zeros((16, 16), bool)
    ink[4:8] = True  # 1 = black in a min-is-white bilevel file
    Image.fromarray(~ink).save(tmp_path / "w1.tif", compression="group4")  # fax: min-is-white
    assert read_image(tmp_path / "w8.tif")[0, 0].tolist() == [30] * 3
    assert read_image(tmp_path / "w16.tif")[0, 0].tolist() == [30] * 3
    bilevel = read_image(tmp_path / "w1.tif")
    assert bilevel[5, 0].tolist() == [0] * 3 and bilevel[0, 0].tolist() == [255] * 3


def test_channel_stack_tiff_is_read_in_colour(tmp_path):
    """ImageJ/OME stacks keep RGB as a channel axis C (no samples axis S); a 2-channel stack stays grey."""
    import tifffile

    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 50
    tifffile.imwrite(tmp_path / "cyx.tif", np.moveaxis(rgb, -1, 0), imagej=True, metadata={"axes": "CYX"})
    assert read_image(tmp_path / "cyx.tif")[0, 0].tolist() == [200, 0, 50]
    two = np.stack([rgb[..., 0], rgb[..., 2]])
    tifffile.imwrite(tmp_path / "two.tif", two, imagej=True, metadata={"axes": "CYX"})
    assert read_image(tmp_path / "two.tif")[0, 0].tolist() == [200, 200, 200]  # first channel, as grey


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[:, :5] = 255  # white strip on the left
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW for display
    im.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (20, 10, 3)
    assert out[:5].mean() > 200  # the strip is now at the top


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("empty.png", b"", "empty file"),
        ("notes.png", b"this is not an image at all", "not an image"),
        ("data.tif", b"II*\x00garbage", "cannot read|not an image|holds no image"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError, match=match) as exc:
        read_image(p)
    msg = str(exc.value)
    assert msg.startswith(str(p)) and "\n" not in msg


def test_truncated_jpeg(tmp_path, rgb):
    big = np.tile(rgb, (20, 20, 1))
    p = _save_pil(tmp_path / "t.jpg", big, quality=90)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="no such file or folder"):
        find_images([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no image files"):
        find_images([tmp_path / "empty"])


def test_find_images_recursive_sorted_unique(tmp_path, rgb):
    for rel in ["b.png", "a/c.JPG", "a/.hidden/d.png", "a/e.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = find_images([tmp_path, tmp_path / "b.png"])
    assert [p.name for p in found] == ["c.JPG", "b.png"]


def test_find_images_skips_the_output_folder_or_its_pictures(tmp_path):
    """The applications' outputs are left out by the ``skip`` that apps/layout.py makes."""
    from eosdetect.apps.layout import skip_outputs

    for rel in ["imgs/x.png", "imgs/x_overlay.png", "imgs/out/y.png", "imgs/sub/z_overlay.png"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    imgs = tmp_path / "imgs"

    def names(out):
        return sorted(str(p.relative_to(imgs)) for p in find_images([imgs], skip=skip_outputs(out)))

    assert names(imgs / "out") == ["sub/z_overlay.png", "x.png", "x_overlay.png"]  # inside: not searched
    assert names(imgs) == ["out/y.png", "sub/z_overlay.png", "x.png"]  # the same folder: its pictures skipped
    assert names(tmp_path) == ["out/y.png", "sub/z_overlay.png", "x.png", "x_overlay.png"]  # above it
    assert names(None) == ["out/y.png", "sub/z_overlay.png", "x.png", "x_overlay.png"]
    (imgs / "sub" / ".eosdetect").mkdir()  # sub/ holds the results of an earlier run: its overlays are no images
    assert names(imgs / "out") == ["x.png", "x_overlay.png"]
    for f in ("metrics.json", "per_image.csv", "pr_curve.png", "a_errors.png"):  # an evaluate report in sub/
        (imgs / "sub" / f).write_bytes(b"x")
    (imgs / "sub" / ".eosdetect").rmdir()
    assert names(imgs / "out") == ["x.png", "x_overlay.png"]
    # the library alone knows no output layout: every image file, or what the caller's skip leaves
    every = ["out/y.png", "sub/a_errors.png", "sub/pr_curve.png", "sub/z_overlay.png", "x.png", "x_overlay.png"]
    assert sorted(str(p.relative_to(imgs)) for p in find_images([imgs])) == every
    asked = []
    kept = find_images([imgs], skip=lambda p, folder: asked.append((p.parent, folder)) or p.name.startswith("x"))
    assert sorted(str(p.relative_to(imgs)) for p in kept) == every[:4]
    assert (imgs, imgs.resolve()) in asked and {folder for _, folder in asked} == {imgs.resolve()}


def test_to_rgb_uint8_variants():
    assert to_rgb_uint8(np.array([[True, False]])).tolist() == [[[255] * 3, [0] * 3]]
    assert to_rgb_uint8(np.array([[0.0, 1.0]]))[0, 1].tolist() == [255] * 3
    assert to_rgb_uint8(np.array([[0.0, 255.0]]))[0, 1].tolist() == [255] * 3
    la = np.array([[[100, 255], [100, 0]]], dtype=np.uint8)
    assert to_rgb_uint8(la)[0].tolist() == [[100] * 3, [255] * 3]
    with pytest.raises(ValueError, match="expected an image"):
        to_rgb_uint8(np.zeros((2, 2, 5)))
    a = np.array([[1, 2]], dtype=np.uint16)
    to_rgb_uint8(a)
    assert a.tolist() == [[1, 2]]  # input untouched


def test_atomic_writes_leave_no_temp_files(tmp_path):
    write_csv(tmp_path / "t.csv", ["a", "b"], [[1, 0.5], [2, None]])
    assert (tmp_path / "t.csv").read_text() == "a,b\n1,0.5\n2,\n"
    atomic_write_text(tmp_path / "t.csv", "new\n")
    assert (tmp_path / "t.csv").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_applied_as_pillow_applies_exif(tmp_path, orientation):
    from PIL import Image, ImageOps

    a = np.random.default_rng(0).integers(0, 255, (30, 50, 3), np.uint8)
    Image.fromarray(a).save(tmp_path / "o.tif", tiffinfo={274: orientation})
    upright = np.array(ImageOps.exif_transpose(Image.open(tmp_path / "o.tif")))
    assert np.array_equal(read_image(tmp_path / "o.tif"), upright)


def test_image_named_tif_is_read_by_its_content(tmp_path, rgb):
    """A JPEG or PNG saved as .tif opens in image viewers; it is read here too (and a TIFF named .png)."""
    import tifffile

    _save_pil(tmp_path / "photo.tif", rgb, format="JPEG", quality=95)
    _save_pil(tmp_path / "scan.tiff", rgb, format="PNG")
    tifffile.imwrite(tmp_path / "tiff.png", rgb, photometric="rgb")
    assert read_image(tmp_path / "photo.tif").shape == (12, 17, 3)
    np.testing.assert_array_equal(read_image(tmp_path / "scan.tiff"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "tiff.png"), rgb)


def test_tiff_unspecified_extra_sample_is_padding_not_alpha(tmp_path):
    """ExtraSamples 0 (RGBX, grey + X) is dropped; 1 and 2 are alpha, composited onto white."""
    import tifffile

    rgbx = np.zeros((4, 5, 4), np.uint8)
    rgbx[..., 0], rgbx[..., 3] = 200, 0
    tifffile.imwrite(tmp_path / "rgbx.tif", rgbx, photometric="rgb", extrasamples=[0])
    assert read_image(tmp_path / "rgbx.tif")[0, 0].tolist() == [200, 0, 0]
    for alpha in (1, 2):
        tifffile.imwrite(tmp_path / f"a{alpha}.tif", rgbx, photometric="rgb", extrasamples=[alpha])
        assert read_image(tmp_path / f"a{alpha}.tif")[0, 0].tolist() == [255, 255, 255]
    grey_x = np.stack([np.full((4, 5), 60, np.uint8), np.zeros((4, 5), np.uint8)], axis=-1)
    tifffile.imwrite(tmp_path / "greyx.tif", grey_x, photometric="minisblack", planarconfig="contig", extrasamples=[0])
    assert read_image(tmp_path / "greyx.tif")[0, 0].tolist() == [60] * 3
    rgb_x_a = np.concatenate([rgbx[..., :3], np.zeros((4, 5, 1), np.uint8), np.full((4, 5, 1), 255, np.uint8)], -1)
    tifffile.imwrite(tmp_path / "rgbxa.tif", rgb_x_a, photometric="rgb", planarconfig="contig", extrasamples=[0, 2])
    assert read_image(tmp_path / "rgbxa.tif")[0, 0].tolist() == [200, 0, 0]  # padding dropped, opaque alpha kept


def test_find_images_follows_linked_folders_once(tmp_path):
    """A folder of images linked into the searched one is searched; links back up the tree end."""
    for rel in ["imgs/real/a.png", "elsewhere/slides/b.png", "beside.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    imgs = tmp_path / "imgs"
    (imgs / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (imgs / "again").symlink_to(imgs / "real", target_is_directory=True)  # the same folder twice
    (tmp_path / "elsewhere" / "slides" / "up").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (imgs / "real" / "top").symlink_to(tmp_path, target_is_directory=True)  # above the searched folder: a loop
    found = sorted(str(p.relative_to(imgs)) for p in find_images([imgs]))
    assert found == ["linked/slides/b.png", "real/a.png"]  # real/ by its own path, not through again/
    (imgs / "c.png").write_bytes(b"x")
    assert [p.name for p in find_images([imgs], recursive=False)] == ["c.png"]


def test_stale_temp_files_are_removed_at_the_first_write(tmp_path):
    """Temporary files of a killed run go at the first write into their folder; a write in
    progress (a running process's) and the user's own files stay."""
    import os
    import subprocess
    import sys

    from eosdetect import io as eio

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # a process that has ended
    stale = [f".counts.csv.eosdetect-{dead}-0123abcd-k2j4_x9q.tmp",
             f".a_overlay.png.eosdetect-{os.getpid()}-{'0' * 8}-abcdefgh.tmp"]  # our id, an earlier process
    kept = [f".b.csv.eosdetect-{os.getppid()}-0123abcd-abcdefgh.tmp",  # a running process's write
            f".c.csv.eosdetect-{os.getpid()}-{eio._RUN_TOKEN}-abcdefgh.tmp",  # this process's own write
            ".notes.txt.abcdefgh.tmp", "draft.tmp", "mine.eosdetect-1-0123abcd-abcdefgh.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    atomic_write_text(tmp_path / "counts.csv", "n\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["counts.csv"])


def test_write_errors_name_the_output_not_the_temporary_file(tmp_path, monkeypatch):
    import errno
    import tempfile

    (tmp_path / "counts.csv").mkdir()  # a folder in the way: the rename fails
    (tmp_path / "counts.csv" / "x").write_text("x")
    with pytest.raises(OSError) as exc:
        atomic_write_text(tmp_path / "counts.csv", "n\n")
    assert exc.value.filename == str(tmp_path / "counts.csv") and ".tmp" not in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.csv"]  # no temporary file left

    def read_only(prefix, suffix, dir):  # what a read-only folder gives (root may write anywhere)
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}x1y2z3w4{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(PermissionError) as exc:
        write_csv(tmp_path / "out.csv", ["a"], [[1]])
    assert str(exc.value) == f"[Errno 13] Permission denied: '{tmp_path / 'out.csv'}'"


def _warning_files(folder):
    """A JPEG whose EXIF points past its end (a Pillow warning) and a TIFF with a tag of an unknown
    data type (a tifffile log record)."""
    import struct

    import tifffile
    from PIL import Image

    exif = b"II*\x00" + struct.pack("<IHHHIII", 8, 1, 270, 2, 200, 5000, 0)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "exif.jpg", exif=b"Exif\x00\x00" + exif)
    tifffile.imwrite(folder / "tag.tif", np.zeros((8, 8), np.uint8), extratags=[(65000, "s", 0, "hi", False)])
    data = bytearray((folder / "tag.tif").read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry:entry + 2])[0] == 65000:
            data[entry + 2:entry + 4] = struct.pack("<H", 99)
    (folder / "tag.tif").write_bytes(bytes(data))
    return folder / "exif.jpg", folder / "tag.tif"


def _png_header(width, height):
    """The header of a PNG of any size, without its pixels: what a decompression bomb shows first."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_decoder_warnings_are_logged_once_naming_the_file(tmp_path, caplog, recwarn):
    """What the CLI's run does (apps/decoder_warnings.py): a decoder's warning names the file, once."""
    import warnings

    from eosdetect.apps.decoder_warnings import routed_decoder_warnings

    exif_jpg, tag_tif = _warning_files(tmp_path)
    caplog.set_level("WARNING")
    shown = warnings.showwarning
    with routed_decoder_warnings():
        for _ in range(2):  # read twice: reported once
            for path in (exif_jpg, tag_tif):
                assert read_image(path).shape == (8, 8, 3)
    lines = [(r.name, r.getMessage()) for r in caplog.records]
    assert [name for name, _ in lines] == ["eosdetect.io"] * 2, lines  # tifffile's own record is not printed
    assert lines[0][1].startswith(f"{exif_jpg}: Tag data larger than file")
    assert lines[1][1].startswith(f"{tag_tif}: ") and "invalid data type 99" in lines[1][1]
    assert not [w for w in recwarn if "Tag data" in str(w.message)]  # not shown a second time, unnamed
    import logging

    assert warnings.showwarning is shown and logging.getLogger("tifffile").filters == []  # all undone


def test_routed_warnings_of_threads_reading_no_file_are_shown_as_usual(tmp_path, caplog, recwarn):
    """The hooks route by thread: a warning given in another thread while this one reads a file is not
    taken for that file's."""
    import threading
    import warnings

    from eosdetect.apps.decoder_warnings import routed_decoder_warnings
    from eosdetect.io import named_warnings

    caplog.set_level("WARNING")
    reading, warned = threading.Event(), threading.Event()

    def other():
        reading.wait(5)
        warnings.warn("from another thread", UserWarning, stacklevel=1)
        warned.set()

    thread = threading.Thread(target=other)
    with routed_decoder_warnings(), routed_decoder_warnings():  # nested: one set of hooks
        thread.start()
        with named_warnings(tmp_path / "a.png"):
            reading.set()
            assert warned.wait(5)
            warnings.warn("while reading a.png", UserWarning, stacklevel=1)
        thread.join()
    assert [str(w.message) for w in recwarn] == ["from another thread"]
    assert [r.getMessage() for r in caplog.records] == [f"{tmp_path / 'a.png'}: while reading a.png"]


def test_reading_images_leaves_the_process_alone(tmp_path, monkeypatch, caplog, recwarn):
    """No hook, filter or limit of the process is changed by reading (normal, warning-giving and too
    large images) or writing: decoder warnings reach Python's warnings and logging as usual."""
    import logging
    import os
    import warnings

    from PIL import Image

    from eosdetect.io import read_image_bytes

    def untouchable(*args):
        raise AssertionError("os.umask changes the umask of every thread")

    monkeypatch.setattr(os, "umask", untouchable)
    loggers = [logging.getLogger(name) for name in ("", "tifffile", "PIL", "eosdetect")]

    def state():
        return (warnings.showwarning, list(warnings.filters), Image.MAX_IMAGE_PIXELS,
                [(list(lg.filters), list(lg.handlers), lg.level) for lg in loggers])

    before = state()
    caplog.set_level("WARNING")
    exif_jpg, tag_tif = _warning_files(tmp_path)
    _save_pil(tmp_path / "plain.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "huge.png").write_bytes(_png_header(30000, 30000))
    for path in (tmp_path / "plain.png", exif_jpg, tag_tif):
        assert read_image(path).shape[2] == 3
    assert read_image_bytes(exif_jpg.read_bytes(), "upload.jpg").shape == (8, 8, 3)
    with pytest.raises(InputError):
        read_image(tmp_path / "huge.png")
    atomic_write_text(tmp_path / "out.txt", "x")
    assert state() == before
    assert {str(w.message) for w in recwarn} == {"Tag data larger than file. Skipping tag 270"}  # unnamed, as usual
    assert [r.name for r in caplog.records] == ["tifffile"]


def test_size_is_checked_against_our_limit_not_pillows(tmp_path, monkeypatch, recwarn):
    """Large images up to io.MAX_IMAGE_PIXELS are read whatever Pillow's own (process-wide) limit, which
    is left as it is; a decompression bomb over ours is refused from its header, in one line."""
    from PIL import Image

    import eosdetect.io as eio

    big = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for suffix in ("png", "jpg", "bmp", "gif"):
        _save_pil(tmp_path / f"big.{suffix}", big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 2400 pixels: over twice Pillow's limit
    assert np.array_equal(read_image(tmp_path / "big.png"), big)
    for suffix in ("jpg", "bmp", "gif"):
        assert read_image(tmp_path / f"big.{suffix}").shape == (40, 60, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000 and not [w for w in recwarn if "decompression bomb" in str(w.message)]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # Pillow's default: a bomb is ours to refuse
    (tmp_path / "huge.png").write_bytes(_png_header(30000, 30000))
    with pytest.raises(InputError) as exc:
        read_image(tmp_path / "huge.png")
    assert str(exc.value) == f"{tmp_path / 'huge.png'}: image of 30000x30000 is too large to read whole"
    monkeypatch.setattr(eio, "MAX_IMAGE_PIXELS", 2000)
    with pytest.raises(InputError, match=r"big\.jpg: image of 60x40 is too large to read whole$"):
        read_image(tmp_path / "big.jpg")


def test_files_are_written_with_the_umask_which_is_never_changed(tmp_path):
    """Written files get the permissions the umask allows; the umask is read (``/proc`` on Linux, a
    probe file elsewhere), never set, neither at import nor at a write."""
    import subprocess
    import sys
    from pathlib import Path

    from eosdetect.io import _umask_from_probe, _umask_from_proc

    assert _umask_from_proc() in (None, _umask_from_probe())
    code = (
        "import os, stat\n"
        "os.umask(0o027)\n"
        "def untouchable(*a): raise AssertionError('os.umask called')\n"
        "os.umask = untouchable\n"
        "from eosdetect.io import write_csv\n"
        f"p = write_csv({str(tmp_path / 'a.csv')!r}, ['n'], [[1]])\n"
        "print(oct(stat.S_IMODE(p.stat().st_mode)))\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0 and out.stdout.split() == ["0o640"], out.stderr


@pytest.mark.parametrize("data", [b"", b"0", b"BM", b"\x89PNG", b"II*\x00"])
def test_a_few_bytes_of_nothing_are_not_an_image(data):
    """Found by the schema test: a one-byte upload made a plugin's format test fail inside
    ``pillow_open``; like ``Image.open`` it must only say that no plugin reads it."""
    import io as _io

    from PIL import UnidentifiedImageError

    from eosdetect.io import pillow_open

    with pytest.raises(UnidentifiedImageError):
        pillow_open(_io.BytesIO(data))


def test_a_tiff_of_several_images_is_refused_not_cut_to_its_first(tmp_path):
    """Issue 20, case 3: a 3-page TIFF (eosinophils on pages 2 and 3) was read as its first page alone,
    without a word. Stacks of same-size pages, however written, are refused in one line; a pyramid's
    levels, a smaller preview page and the channels of one field are not pages to count."""
    import tifffile
    from PIL import Image

    pages = np.random.default_rng(0).integers(0, 255, (3, 60, 80, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "one_series.tif", pages)
    with tifffile.TiffWriter(tmp_path / "separate.tif") as w:
        for page in pages:
            w.write(page, contiguous=False)
    ims = [Image.fromarray(p) for p in pages]
    ims[0].save(tmp_path / "pillow.tif", save_all=True, append_images=ims[1:])
    tifffile.imwrite(tmp_path / "focus.tif", pages[..., 0], imagej=True, metadata={"axes": "ZYX"})
    for name in ("one_series", "separate", "pillow", "focus"):
        with pytest.raises(InputError, match=r"TIFF holds 3 images of the same size .* save each page as its own"):
            read_image(tmp_path / f"{name}.tif")
    with tifffile.TiffWriter(tmp_path / "preview.tif") as w:  # a photo and its thumbnail page
        w.write(pages[0])
        w.write(pages[0][::4, ::4])
    with tifffile.TiffWriter(tmp_path / "pyramid.tif") as w:
        w.write(pages[0], subifds=1)
        w.write(pages[0][::2, ::2], subfiletype=1)
    for name in ("preview", "pyramid"):
        assert np.array_equal(read_image(tmp_path / f"{name}.tif"), pages[0])


def test_a_slide_sized_stack_is_refused_too(tmp_path):
    """The block-by-block reader refuses a stack of pages as read_image does."""
    import tifffile

    from eosdetect.slideio import SlideReader

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((2, 64, 64, 3), np.uint8), tile=(32, 32))
    with pytest.raises(InputError, match="TIFF holds 2 images"):
        SlideReader(tmp_path / "stack.tif")
