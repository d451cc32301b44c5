"""Safe image decoding: size limits, EXIF orientation, one RGB mode, clear errors.

Every image that enters factcap goes through :func:`decode`. It either returns a
:class:`DecodedImage` holding an 8-bit RGB picture, or raises
:class:`~factcap.errors.ImageError` whose ``kind`` is one of :data:`ERROR_KINDS`:

``FileNotFound``      the path does not exist.
``FileUnreadable``    the path exists but cannot be read (a directory, no permission, ...).
``FileTooLarge``      the file is over :attr:`DecodeLimits.max_file_bytes`.
``DecompressionBomb`` the header declares more pixels than :attr:`DecodeLimits.max_pixels`
                      (or than Pillow's own ``PIL.Image.MAX_IMAGE_PIXELS``), or a side over
                      :attr:`DecodeLimits.max_side`; checked before any pixel is decoded.
``UnsupportedFormat`` not an image, or a format this Pillow build cannot decode.
``CorruptImage``      a recognised format whose data is truncated or broken.
``OutOfMemory``       the machine ran out of memory while decoding an image within limits.

Rules applied to every image that decodes:

* only the first frame of an animation or multi-page file is decoded; ``frames`` counts them;
* the EXIF orientation tag is applied (the pixels are rotated/flipped as a viewer shows them);
  a broken EXIF block leaves the image unrotated and adds a line to ``notes``;
* every mode becomes RGB. Transparency (alpha channels, ``LA``, palette and ``tRNS``
  transparency) is composited onto a **white** background. 16/32-bit integer images are
  scaled from their effective bit depth (the smallest ``2**k - 1``, ``k >= 8``, that holds the
  brightest pixel) down to 8 bits, so 10/12/16-bit data keeps its contrast instead of being
  clipped to white; float images in ``[0, 1]`` are scaled by 255, other float or negative
  ranges are stretched from their minimum to their maximum;
* truncated data is an error, never a half-grey picture: factcap does not set Pillow's
  process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES``; if other code did, every decoded image
  carries a note saying so;
* EPS files are refused: Pillow decodes them by running Ghostscript on the file.

Pillow's global settings are read, never changed.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
from PIL import Image, ImageFile

from factcap.errors import ImageError

ImageSource: TypeAlias = str | Path | bytes | bytearray | memoryview | Image.Image

ERROR_KINDS = (
    "FileNotFound",
    "FileUnreadable",
    "FileTooLarge",
    "DecompressionBomb",
    "UnsupportedFormat",
    "CorruptImage",
    "OutOfMemory",
)

# Pillow decodes EPS by running Ghostscript on the file: not for untrusted input.
_REFUSED_FORMATS = {"EPS": "decoding it would run Ghostscript on the file"}

# EXIF orientation value -> the transpose that shows the image upright.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds checked before an image is decoded.

    Example:
        >>> limits = DecodeLimits(max_pixels=1_000_000)
        >>> limits.max_file_bytes
        50000000
    """

    max_pixels: int = 40_000_000
    """Most pixels (width x height, read from the header) an image may have."""
    max_file_bytes: int = 50_000_000
    """Largest encoded input accepted, in bytes (files and ``bytes`` inputs)."""
    max_side: int | None = None
    """Longest width or height accepted; ``None`` for no bound besides ``max_pixels``."""


@dataclass(frozen=True)
class DecodedImage:
    """An upright 8-bit RGB image and what was learnt while decoding it.

    Example:
        >>> from PIL import Image
        >>> d = decode(Image.new("LA", (4, 3)))
        >>> (d.image.mode, d.width, d.height, d.frames)
        ('RGB', 4, 3, 1)
    """

    image: Image.Image
    """RGB, at the original resolution, after the EXIF orientation."""
    width: int
    height: int
    format: str | None
    """Pillow's format name (``"JPEG"``, ``"PNG"``, ...); ``None`` for an in-memory image."""
    frames: int
    """Frames (or pages/layers) in the file; only the first is decoded."""
    source: str
    """The path, ``"<bytes>"``, or the PIL image's file name (``"<PIL.Image>"`` if none)."""
    notes: tuple[str, ...] = ()
    """Things worth knowing that did not stop decoding (e.g. an EXIF block was ignored)."""


def decode(source: ImageSource, limits: DecodeLimits | None = None) -> DecodedImage:
    """Decode a path, encoded bytes or a PIL image into an upright RGB image.

    A PIL image is used as it is: the frame it currently shows, loaded if it is lazy
    (the caller's object is never returned or modified beyond that load).

    Raises:
        ImageError: with ``kind`` in :data:`ERROR_KINDS` and a message naming the problem
            and, for a limit, which one applies.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buf = io.BytesIO()
        >>> Image.new("RGBA", (8, 6), (255, 0, 0, 0)).save(buf, "PNG")
        >>> d = decode(buf.getvalue())
        >>> (d.format, d.width, d.height, d.image.getpixel((0, 0)))
        ('PNG', 8, 6, (255, 255, 255))
    """
    limits = limits or DecodeLimits()
    if isinstance(source, Image.Image):
        label = getattr(source, "filename", "") or "<PIL.Image>"
        return _decode_pil(source, limits, label, source.format)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > limits.max_file_bytes:
            raise ImageError("FileTooLarge", _too_large("input", len(data), limits))
        return _decode_bytes(data, limits, "<bytes>")
    if isinstance(source, (str, Path)):
        return _decode_bytes(_read_file(Path(source), limits), limits, str(source))
    raise TypeError(f"decode() takes a path, bytes or a PIL image, not {type(source).__name__}")


def _read_file(path: Path, limits: DecodeLimits) -> bytes:
    try:
        with path.open("rb") as f:
            # Read one byte past the limit instead of trusting stat(): the file may grow,
            # or be a pipe or device whose size stat() does not know.
            data = f.read(limits.max_file_bytes + 1)
    except FileNotFoundError:
        raise ImageError("FileNotFound", f"no such file: {path}") from None
    except IsADirectoryError:
        raise ImageError("FileUnreadable", f"{path} is a directory, not an image file") from None
    except OSError as e:
        raise ImageError("FileUnreadable", f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > limits.max_file_bytes:
        try:
            size = path.stat().st_size
        except OSError:
            size = len(data)
        raise ImageError("FileTooLarge", _too_large(str(path), max(size, len(data)), limits))
    return data


def _too_large(what: str, size: int, limits: DecodeLimits) -> str:
    return (
        f"{what} is {size:,} bytes, over the limit of {limits.max_file_bytes:,} bytes (raise"
        " limits.max_file_mb in the config, or --max-upload-mb for the service, to accept it)"
    )


def _decode_bytes(data: bytes, limits: DecodeLimits, label: str) -> DecodedImage:
    if not data:
        raise ImageError("CorruptImage", f"{label} is empty (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data), formats=_allowed_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("DecompressionBomb", _pillow_bomb(label, e)) from None
    except Image.UnidentifiedImageError:
        raise _unidentified(data, label) from None
    except MemoryError:
        raise ImageError("OutOfMemory", f"{label}: out of memory reading the header") from None
    except Exception as e:  # a plugin failing on a malformed header
        raise ImageError("CorruptImage", f"{label}: broken image header ({_describe(e)})") from e
    with im:
        _check_size(im.size, limits, label)
        frames, notes = _count_frames(im)
        return _decode_pil(im, limits, label, im.format, frames, notes)


def _decode_pil(
    im: Image.Image,
    limits: DecodeLimits,
    label: str,
    fmt: str | None,
    frames: int | None = None,
    notes: list[str] | None = None,
) -> DecodedImage:
    notes = list(notes or [])
    _check_size(im.size, limits, label)
    if frames is None:
        frames, more = _count_frames(im)
        notes += more
    what = f"{label} ({fmt or 'image'} {im.size[0]}x{im.size[1]} {im.mode})"
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("DecompressionBomb", _pillow_bomb(what, e)) from None
    except MemoryError:
        raise ImageError("OutOfMemory", f"{what}: out of memory while decoding") from None
    except Exception as e:
        message = str(e)
        if "not available" in message and ("decoder" in message or "codec" in message):
            raise ImageError(
                "UnsupportedFormat", f"{what}: this Pillow build cannot decode it ({message})"
            ) from e
        raise ImageError(
            "CorruptImage", f"{what}: truncated or broken data ({_describe(e)})"
        ) from e
    # Some formats (GIF frames larger than the logical screen) grow while loading.
    _check_size(im.size, limits, label)
    if im.size[0] < 1 or im.size[1] < 1:
        raise ImageError("CorruptImage", f"{what}: the image has no pixels")

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        notes.append(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process:"
            " truncated data may have been padded instead of reported"
        )
    rgb = _to_rgb(im)
    rgb, note = _apply_orientation(im, rgb)
    if note:
        notes.append(note)
    return DecodedImage(
        image=rgb,
        width=rgb.width,
        height=rgb.height,
        format=fmt,
        frames=frames,
        source=label,
        notes=tuple(notes),
    )


def _allowed_formats() -> list[str]:
    Image.init()
    return [f for f in Image.OPEN if f not in _REFUSED_FORMATS]


def _unidentified(data: bytes, label: str) -> ImageError:
    """Tell "not an image" apart from "an image whose header is broken"."""
    prefix = data[:16]
    for fmt, (_factory, accept) in Image.OPEN.items():
        try:
            recognised = accept is not None and accept(prefix) is True
        except Exception:
            recognised = False
        if not recognised:
            continue
        if fmt in _REFUSED_FORMATS:
            return ImageError(
                "UnsupportedFormat", f"{label}: {fmt} is refused: {_REFUSED_FORMATS[fmt]}"
            )
        return ImageError(
            "CorruptImage", f"{label}: starts like a {fmt} file but its header cannot be read"
        )
    # The file's bytes are never quoted: it may be any file a record names (/etc/passwd).
    return ImageError("UnsupportedFormat", f"{label}: not an image, or a format Pillow cannot read")


def _check_size(size: tuple[int, int], limits: DecodeLimits, label: str) -> None:
    width, height = size
    pixels = width * height
    if pixels > limits.max_pixels:
        raise ImageError(
            "DecompressionBomb",
            f"{label}: the header declares {width}x{height} = {pixels:,} pixels, over the limit"
            f" limits.max_pixels={limits.max_pixels:,} (raise limits.max_pixels in the config if"
            " it is genuine)",
        )
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if pillow_limit is not None and pixels > pillow_limit:
        # Pillow only warns up to twice its limit; factcap treats the warning as a bomb too.
        raise ImageError(
            "DecompressionBomb",
            f"{label}: the header declares {width}x{height} = {pixels:,} pixels: within"
            f" limits.max_pixels={limits.max_pixels:,}, but over Pillow's own limit of"
            f" {pillow_limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS; raise it too to accept it)",
        )
    if limits.max_side is not None and max(width, height) > limits.max_side:
        raise ImageError(
            "DecompressionBomb",
            f"{label}: {width}x{height} has a side over the limit max_side={limits.max_side:,}",
        )


def _pillow_bomb(what: str, e: BaseException) -> str:
    return (
        f"{what}: too many pixels for Pillow to open ({e}); factcap's own limit is"
        " limits.max_pixels in the config"
    )


def _count_frames(im: Image.Image) -> tuple[int, list[str]]:
    try:
        return max(1, int(getattr(im, "n_frames", 1))), []
    except Exception as e:  # walking a broken frame index; the first frame may still decode
        return 1, [f"could not count the frames ({_describe(e)}); decoded the first"]


def _to_rgb(im: Image.Image) -> Image.Image:
    """A new RGB image from any Pillow mode (see the module docstring for the rules)."""
    if im.mode.startswith("I") or im.mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(im))).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        if im.mode == "La":
            im = im.convert("LA")
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, _WHITE), rgba).convert("RGB")
    if im.mode == "RGB":
        return im.copy()
    return im.convert("RGB")


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.rint(a * 255.0).astype(np.uint8)
    else:
        a = a.astype(np.int64)
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0:
            white = 2 ** max(8, math.ceil(math.log2(hi + 1))) - 1 if hi > 0 else 255
            return np.rint(a * (255.0 / white)).astype(np.uint8)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _apply_orientation(original: Image.Image, rgb: Image.Image) -> tuple[Image.Image, str | None]:
    # Same mapping as ImageOps.exif_transpose, without its EXIF rewrite: factcap keeps only
    # pixels, and re-serialising a damaged EXIF block is what fails on broken files.
    try:
        orientation = _read_orientation(original)
    except Exception as e:
        return rgb, f"EXIF block is broken ({_describe(e)}); orientation not applied"
    if orientation in (None, 1):
        return rgb, None
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    if method is None:
        return rgb, f"EXIF orientation {orientation!r} is not valid; orientation not applied"
    return rgb.transpose(method), None


def _read_orientation(im: Image.Image) -> object:
    raw = im.info.get("exif")
    if isinstance(raw, bytes) and raw:
        # Parsed afresh: some plugins read EXIF while opening and cache an empty result when
        # it is broken, which would hide the damage from im.getexif().
        exif = Image.Exif()
        exif.load(raw)
        if _EXIF_ORIENTATION_TAG in exif:
            return exif[_EXIF_ORIENTATION_TAG]
    # TIFF tags, PNG text chunks and XMP also carry an orientation.
    return im.getexif().get(_EXIF_ORIENTATION_TAG, 1)


_BYTES_REPR = re.compile(r"(?<!\w)b'(?:[^'\\]|\\.)*'" + r'|(?<!\w)b"(?:[^"\\]|\\.)*"')


def _describe(e: BaseException) -> str:
    """An exception as ``Type: message``, with any bytes it quotes (some Pillow plugins put
    the file's own bytes in their messages) replaced by ``<bytes>``.

    >>> _describe(ValueError(b"Token too long: root:x:0:0"))
    'ValueError: <bytes>'
    >>> _describe(SyntaxError("broken PNG file (chunk b'IDAT')"))
    'SyntaxError: broken PNG file (chunk <bytes>)'
    """
    arg = e.args[0] if len(e.args) == 1 else None
    text = "<bytes>" if isinstance(arg, (bytes, bytearray)) else _BYTES_REPR.sub("<bytes>", str(e))
    text = text.strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
