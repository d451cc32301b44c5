"""factcap.images: safe decoding of real photos and of the odd-images corpus (no models)."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, features

from factcap.errors import ImageError
from factcap.examples import example_paths
from factcap.images import ERROR_KINDS, DecodedImage, DecodeLimits, decode

ODD = Path(__file__).resolve().parent / "data" / "odd-images"
WATCHDOG_S = 120.0  # catches a hang, far above any decode on a loaded machine: not a speed test

JP2_BROKEN = "CorruptImage" if features.check("jpg_2000") else "UnsupportedFormat"


def _ok(fmt: str, size: tuple[int, int], frames: int = 1) -> tuple:
    return ("ok", fmt, size, frames)


def _ok_if(feature: str, fmt: str, size: tuple[int, int], frames: int = 1) -> tuple | str:
    # Pillow builds without this codec still open the header but cannot decode the data.
    return _ok(fmt, size, frames) if features.check(feature) else "UnsupportedFormat"


# What decode() does with each corpus file: ("ok", format, (width, height), frames) or the
# ImageError kind. Pinned by running it, then checked against what each file is meant to be.
EXPECTED: dict[str, tuple | str] = {
    "00r1_graya_la.jp2": JP2_BROKEN,  # broken JPEG 2000 code stream
    "01r_00.pcx": "CorruptImage",  # PCX whose RLE data overruns the file
    "16bit.cropped.tif": _ok("TIFF", (64, 64)),
    "1_trns.png": _ok("PNG", (64, 64)),
    "anim_frame1.webp": _ok_if("webp", "WEBP", (82, 82)),
    "apng_dispose_op_previous.png": _ok("PNG", (128, 64), frames=4),
    "argb-32bpp_MipMaps-1.dds": _ok("DDS", (256, 256)),
    "avif_hopper.avif": _ok_if("avif", "AVIF", (128, 128)),
    "blp_blp2_raw.blp": _ok("BLP", (512, 128)),
    "bmp_g_pal8.bmp": _ok("BMP", (127, 64)),
    "bmp_q_rgba32.bmp": _ok("BMP", (127, 64)),
    "broken.png": "CorruptImage",  # PNG signature, garbage header
    "broken_data_stream.png": "CorruptImage",  # valid header, corrupt zlib stream
    "chi.gif": _ok("GIF", (320, 240), frames=31),
    "crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif": "CorruptImage",  # fuzzer case
    "crash-465703f71a0f0094873a3e0e82c9f798161171b8.sgi": "CorruptImage",  # fuzzer case
    "cross_scan_line_truncated.tga": "CorruptImage",  # truncated RLE
    "decompression_bomb.gif": "DecompressionBomb",  # header claims 4.3 gigapixels
    "exif_typeerror.jpg": _ok("JPEG", (800, 531)),
    "flower.jpg": _ok("JPEG", (480, 360)),
    "hopper.ico": _ok("ICO", (16, 16)),
    "hopper.psd": _ok("PSD", (128, 128), frames=2),
    "hopper_bad_exif.jpg": _ok("JPEG", (500, 500)),
    "hopper_orientation_3.webp": _ok_if("webp", "WEBP", (128, 128)),
    "hopper_orientation_6.jpg": _ok("JPEG", (128, 128)),
}


def decode_watched(source, limits: DecodeLimits | None = None) -> DecodedImage:
    """decode() in a worker thread; a call that outlives WATCHDOG_S fails the test."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = decode(source, limits)
        except BaseException as e:  # re-raised in the test's thread
            outcome["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(WATCHDOG_S)
    if worker.is_alive():
        pytest.fail(f"decode({source!r}) still running after {WATCHDOG_S} s: it hangs")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _png_bytes(im: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **params)
    return buf.getvalue()


def _jpeg_bytes(im: Image.Image, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR chunk claiming width x height RGB, and IEND: no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.int16)


# --------------------------------------------------------------------- the odd-images corpus


def test_corpus_matches_expectations():
    assert sorted(p.name for p in ODD.iterdir()) == sorted(EXPECTED)
    assert len(EXPECTED) == 25


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_odd_image(name: str):
    path = ODD / name
    expected = EXPECTED[name]
    if isinstance(expected, str):
        with pytest.raises(ImageError) as info:
            decode_watched(path)
        err = info.value
        assert err.kind == expected, f"{name}: {err.kind}: {err}"
        assert err.kind in ERROR_KINDS
        assert name in str(err), "the message names the file"
        assert len(str(err)) > len(str(path)) + 10, "the message says what is wrong"
        return
    _, fmt, size, frames = expected
    d = decode_watched(path)
    assert isinstance(d, DecodedImage)
    assert d.image.mode == "RGB"
    assert d.image.size == (d.width, d.height) == size
    assert (d.format, d.frames, d.source) == (fmt, frames, str(path))
    assert _pixels(d.image).std() > 1.0, "decoded to a blank picture"


def test_decompression_bomb_gif_message_names_the_limit():
    with pytest.raises(ImageError, match=r"limits\.max_pixels in the config") as info:
        decode_watched(ODD / "decompression_bomb.gif")
    assert info.value.kind == "DecompressionBomb"


def test_truncated_stream_is_reported_as_truncated():
    with pytest.raises(ImageError, match="truncated") as info:
        decode_watched(ODD / "cross_scan_line_truncated.tga")
    assert info.value.kind == "CorruptImage"


# --------------------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("hopper_orientation_6.jpg", Image.Transpose.ROTATE_270),
        ("hopper_orientation_3.webp", Image.Transpose.ROTATE_180),
    ],
)
def test_exif_orientation_matches_pillow_reference(name: str, method):
    with Image.open(ODD / name) as raw_file:
        raw = raw_file.convert("RGB")
        reference = ImageOps.exif_transpose(raw_file).convert("RGB")
    d = decode_watched(ODD / name)
    assert not np.array_equal(_pixels(d.image), _pixels(raw)), "the file is stored rotated"
    np.testing.assert_array_equal(_pixels(d.image), _pixels(reference))
    np.testing.assert_array_equal(_pixels(d.image), _pixels(raw.transpose(method)))
    assert d.notes == ()


def test_exif_orientation_6_swaps_width_and_height():
    photo = decode(example_paths()[2]).image  # chelsea.jpg, 451 x 300, landscape
    stored = photo.copy()
    stored.paste((255, 0, 0), (0, 0, 40, 40))  # red mark at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    d = decode_watched(_jpeg_bytes(stored, exif.tobytes()))
    assert stored.size == (451, 300)
    assert (d.width, d.height) == (300, 451)
    top_right = np.asarray(d.image)[5:30, -30:-5].mean(axis=(0, 1))
    assert top_right[0] > 200 and top_right[1] < 60 and top_right[2] < 60


def test_broken_exif_block_decodes_unrotated_with_a_note():
    photo = decode(example_paths()[2]).image
    broken = b"Exif\x00\x00XX*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00"
    d = decode_watched(_jpeg_bytes(photo, broken))
    assert (d.width, d.height) == photo.size
    assert len(d.notes) == 1 and "EXIF" in d.notes[0]


def test_invalid_orientation_value_is_ignored_with_a_note():
    exif = Image.Exif()
    exif[0x0112] = 9
    d = decode_watched(_jpeg_bytes(Image.new("RGB", (40, 20), "gray"), exif.tobytes()))
    assert d.image.size == (40, 20)
    assert any("orientation 9" in note for note in d.notes)


# ------------------------------------------------------------------------- mode normalisation


def test_alpha_is_composited_onto_white():
    im = Image.new("RGBA", (30, 10))
    im.paste((255, 0, 0, 0), (0, 0, 10, 10))  # fully transparent red
    im.paste((0, 0, 255, 255), (10, 0, 20, 10))  # opaque blue
    im.paste((0, 0, 0, 128), (20, 0, 30, 10))  # half-transparent black
    d = decode_watched(_png_bytes(im))
    assert d.image.getpixel((5, 5)) == (255, 255, 255)
    assert d.image.getpixel((15, 5)) == (0, 0, 255)
    assert all(abs(c - 127) <= 2 for c in d.image.getpixel((25, 5)))


def test_la_is_composited_onto_white():
    im = Image.new("LA", (20, 10), (0, 0))
    im.paste((0, 255), (10, 0, 20, 10))
    d = decode_watched(_png_bytes(im))
    assert d.image.getpixel((5, 5)) == (255, 255, 255)
    assert d.image.getpixel((15, 5)) == (0, 0, 0)


def test_palette_transparency_is_composited_onto_white():
    im = Image.new("P", (20, 10), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (10, 0, 20, 10))
    d = decode_watched(_png_bytes(im, transparency=0))  # index 0 (red) is transparent
    assert d.image.getpixel((5, 5)) == (255, 255, 255)
    assert d.image.getpixel((15, 5)) == (0, 0, 255)


def test_16bit_gradient_keeps_its_contrast():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    src = Image.fromarray(ramp)
    assert src.mode == "I;16"
    d = decode_watched(_png_bytes(src))
    row = np.asarray(d.image)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0) and len(np.unique(row)) > 200
    np.testing.assert_allclose(row, ramp[0] / 257, atol=1)


def test_12bit_data_in_16bit_container_is_not_black():
    ramp = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (4, 1))
    d = decode_watched(_png_bytes(Image.fromarray(ramp)))
    row = np.asarray(d.image)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and len(np.unique(row)) == 64


def test_16bit_tiff_from_corpus_is_not_clipped():
    with Image.open(ODD / "16bit.cropped.tif") as raw:
        assert raw.mode == "I;16"
        values = np.asarray(raw).astype(float)
        naive = np.asarray(raw.convert("L"))
    assert naive.min() == 255, "Pillow's own conversion clips this file to white"
    out = np.asarray(decode_watched(ODD / "16bit.cropped.tif").image)[..., 0].astype(float)
    assert out.min() > 0 and out.max() < 255
    # Linear: same picture, contrast scaled by 255 / 1023 (the data is 10-bit).
    np.testing.assert_allclose(out, values * 255 / 1023, atol=0.51)


def test_float_and_signed_images_are_scaled():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(decode(unit).image)[0, :, 0].tolist() == [0, 128, 255]
    signed = Image.fromarray(np.array([[-100, 0, 100]], dtype=np.int32))
    low, mid, high = np.asarray(decode(signed).image)[0, :, 0].tolist()
    assert (low, high) == (0, 255) and mid in (127, 128)


@pytest.mark.parametrize(
    "mode",
    ["1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I;16", "I;16B", "I", "F"]
    + ["RGBA", "RGBa", "LA", "La", "PA"],
)
def test_every_mode_becomes_rgb(mode: str):
    d = decode(Image.new(mode, (7, 3)))
    assert d.image.mode == "RGB" and d.image.size == (7, 3)


def test_first_frame_of_an_animation():
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue", "green")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    d = decode_watched(buf.getvalue())
    assert (d.format, d.frames) == ("GIF", 3)
    assert d.image.getpixel((8, 8)) == (255, 0, 0)


# ------------------------------------------------------------------------------------ inputs


def test_bytes_and_path_inputs_agree():
    path = example_paths()[0]
    from_path = decode_watched(path)
    from_bytes = decode_watched(path.read_bytes())
    from_bytearray = decode_watched(bytearray(path.read_bytes()))
    assert from_bytes.source == "<bytes>" and from_path.source == str(path)
    assert from_bytes.format == "JPEG"
    np.testing.assert_array_equal(_pixels(from_path.image), _pixels(from_bytes.image))
    np.testing.assert_array_equal(_pixels(from_bytes.image), _pixels(from_bytearray.image))


def test_pil_input_is_copied_not_returned():
    src = Image.new("RGB", (12, 8), (10, 20, 30))
    d = decode(src)
    assert d.image is not src and (d.source, d.format) == ("<PIL.Image>", None)
    d.image.paste((0, 0, 0), (0, 0, 12, 8))
    assert src.getpixel((0, 0)) == (10, 20, 30)


def test_lazy_pil_input_keeps_its_file_name_and_format():
    path = ODD / "hopper_orientation_6.jpg"
    with Image.open(path) as im:
        d = decode(im)
    assert (d.source, d.format) == (str(path), "JPEG")
    np.testing.assert_array_equal(_pixels(d.image), _pixels(decode(path).image))


def test_unknown_source_type_is_a_type_error():
    with pytest.raises(TypeError, match="path, bytes or a PIL image"):
        decode(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ errors


def test_missing_file(tmp_path: Path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="nope.jpg") as info:
        decode(missing)
    assert info.value.kind == "FileNotFound"


def test_directory_is_unreadable(tmp_path: Path):
    with pytest.raises(ImageError) as info:
        decode(tmp_path)
    assert info.value.kind == "FileUnreadable"


def test_text_file_is_unsupported(tmp_path: Path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image, whatever the extension says\n")
    with pytest.raises(ImageError, match="not an image") as info:
        decode_watched(text)
    assert info.value.kind == "UnsupportedFormat"


def test_empty_file_is_corrupt(tmp_path: Path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as info:
        decode(empty)
    assert info.value.kind == "CorruptImage"


def test_eps_is_refused():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageError, match="Ghostscript") as info:
        decode(eps)
    assert info.value.kind == "UnsupportedFormat"


def test_truncated_photo_is_an_error_not_a_grey_half():
    data = example_paths()[0].read_bytes()
    with pytest.raises(ImageError, match="truncated") as info:
        decode_watched(data[: len(data) // 2])
    assert info.value.kind == "CorruptImage"


def test_truncated_photo_is_flagged_when_pillow_pads_it(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # set by "other code"
    data = example_paths()[0].read_bytes()
    d = decode_watched(data[: len(data) // 2])
    assert any("LOAD_TRUNCATED_IMAGES" in note for note in d.notes)


def test_max_file_bytes(tmp_path: Path):
    path = example_paths()[0]
    size = path.stat().st_size
    limits = DecodeLimits(max_file_bytes=size - 1)
    for source in (path, path.read_bytes()):
        with pytest.raises(ImageError, match=r"raise limits\.max_file_mb in the config") as info:
            decode(source, limits)
        assert "DecodeLimits" not in str(info.value)  # a setting the user has, not a class
        assert info.value.kind == "FileTooLarge"
    assert decode(path, DecodeLimits(max_file_bytes=size)).width == 512


def test_max_pixels_and_max_side_on_a_real_photo():
    path = example_paths()[2]  # 451 x 300
    with pytest.raises(ImageError, match="max_pixels") as info:
        decode(path, DecodeLimits(max_pixels=451 * 300 - 1))
    assert info.value.kind == "DecompressionBomb"
    with pytest.raises(ImageError, match="max_side") as info:
        decode(path, DecodeLimits(max_side=450))
    assert info.value.kind == "DecompressionBomb"
    assert decode(path, DecodeLimits(max_pixels=451 * 300, max_side=451)).width == 451


def test_header_only_gigapixel_png_is_a_bomb(monkeypatch):
    before = Image.MAX_IMAGE_PIXELS
    loads: list[tuple[int, int]] = []  # every pixel decode started, and every buffer made
    buffers: list[tuple[int, int]] = []
    load, new = ImageFile.ImageFile.load, Image.core.new

    def spied_load(self):
        loads.append(self.size)
        return load(self)

    def spied_new(mode, size, *args):
        buffers.append(tuple(size))
        return new(mode, size, *args)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spied_load)
    monkeypatch.setattr(Image.core, "new", spied_new)
    with pytest.raises(ImageError) as info:
        decode_watched(_png_header_only(100_000, 100_000))
    assert info.value.kind == "DecompressionBomb"
    # refused from the header: no decode began and no 30 GB buffer was asked for (how fast
    # it is refused is measured by benchmarks/decode_guard.py)
    assert loads == [] and (100_000, 100_000) not in buffers
    assert before == Image.MAX_IMAGE_PIXELS, "Pillow's global limit is left alone"


def test_header_is_checked_before_decoding():
    # 7000 x 7000 is under Pillow's limits; decoding would allocate 147 MB and then fail on
    # the missing pixel data (CorruptImage). Our own header check must stop it first.
    with pytest.raises(ImageError, match="max_pixels=40,000,000") as info:
        decode_watched(_png_header_only(7000, 7000))
    assert info.value.kind == "DecompressionBomb"
    with pytest.raises(ImageError) as info:
        decode_watched(_png_header_only(7000, 7000), DecodeLimits(max_pixels=10**8))
    assert info.value.kind == "CorruptImage"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pillow_warning_range_is_a_bomb_even_with_a_higher_limit():
    # 100 M pixels: above Pillow's warning threshold, under its hard error.
    with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS") as info:
        decode_watched(_png_header_only(10_000, 10_000), DecodeLimits(max_pixels=10**9))
    assert info.value.kind == "DecompressionBomb"


# ---------------------------------------------------------------------------- example photos


def test_example_photos():
    paths = example_paths()
    names = [p.name for p in paths]
    assert (
        names
        == sorted(names)
        == [
            "astronaut.jpg",
            "camera.jpg",
            "chelsea.jpg",
            "coffee.jpg",
            "rocket.jpg",
        ]
    )
    readme = (paths[0].parent / "README.md").read_text()
    for path in paths:
        assert path.name in readme, f"{path.name} has no source/licence line"
        assert path.stat().st_size < 100_000
        d = decode_watched(path)
        assert d.format == "JPEG" and max(d.width, d.height) <= 512
        assert _pixels(d.image).std() > 20
