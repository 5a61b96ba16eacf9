"""Decoding and encoding crop images, with bad input named rather than fatal."""
from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a shard may store; anything else is re-encoded as JPEG.
STORED_FORMATS = ("JPEG", "PNG")
JPEG_QUALITY = 90
# The most pixels an image may have, read from its header before anything is decoded: at ingest (frames and
# crops) and at training decode (CPU and GPU). 100 MP is three times an 8K video frame and 300 MB of RGB; a
# larger one is skipped as ``image_too_large`` rather than allocated (a 1 kB file can claim 65535 x 65535).
MAX_IMAGE_PIXELS = 100_000_000
# JPEG cannot store a side longer than this.
MAX_JPEG_SIDE = 65535

_JPEG_SOI = b"\xff\xd8"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic), which carry the size.
_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_NO_LENGTH_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn, TEM
_NO_FRAME_MARKERS = frozenset((0xD8, 0xD9, 0xDA))  # SOI again, EOI or start-of-scan before any frame header


class BadImage(ValueError):
    """An image that cannot be used. ``reason`` is a short stable key used in skip counts."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def jpeg_size(data, strict: bool = False) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, found by walking its marker segments; None when there is
    none before the image data.

    ``strict=False`` finds the frame header libjpeg would use (it skips stray bytes between segments).
    ``strict=True`` gives up on anything but clean segments, for decoders (nvJPEG) whose tolerance is unknown.
    A few microseconds: a crop's header is four or five segments.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i < n:
        if data[i] != 0xFF:
            if strict:
                return None
            i = data.find(b"\xff", i)
            if i < 0:
                return None
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker in _SOF_MARKERS:
            if i + 7 > n:
                return None
            return (data[i + 5] << 8) | data[i + 6], (data[i + 3] << 8) | data[i + 4]
        if marker in _NO_LENGTH_MARKERS:
            continue
        if marker == 0:  # a stuffed 0xFF00 outside a scan: libjpeg skips it as a stray byte
            if strict:
                return None
            continue
        if marker in _NO_FRAME_MARKERS or i + 2 > n:
            return None
        length = (data[i] << 8) | data[i + 1]
        if length < 2:
            return None
        i += length
    return None


def png_size(data) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk (always the first), or None."""
    if len(data) < 24 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def header_size(data) -> tuple[int, int] | None:
    """(width, height) of a JPEG or PNG from its header alone; None for other formats or no header."""
    head = bytes(data[:2])
    if head == _JPEG_SOI:
        return jpeg_size(data if isinstance(data, (bytes, bytearray)) else bytes(data))
    if head == _PNG_SIGNATURE[:2]:
        return png_size(bytes(data[:24]))
    return None


def median_size(images) -> tuple[int, int] | None:
    """Median (width, height) of the encoded ``images`` whose header gives a size, each side's median on its own;
    None when none does."""
    sizes = [size for size in map(header_size, images) if size is not None]
    if not sizes:
        return None
    widths, heights = sorted(w for w, _ in sizes), sorted(h for _, h in sizes)
    return widths[len(sizes) // 2], heights[len(sizes) // 2]


def check_pixels(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise BadImage("image_too_large", f"{width}x{height} is over the limit of {MAX_IMAGE_PIXELS:,} pixels")


def open_image(data: bytes) -> Image.Image:
    """Decode fully (so truncation shows now, not later) without changing the mode.

    The size is checked from the header first: an image over ``MAX_IMAGE_PIXELS`` is refused before any
    pixel is decoded. Whatever PIL raises on a damaged file becomes a BadImage.
    """
    if not data:
        raise BadImage("empty_image", "no bytes")
    size = header_size(data)
    if size is not None:
        check_pixels(*size)
    try:
        with warnings.catch_warnings():
            # PIL warns on some damaged headers and on large images; both are decided below instead.
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))  # reads the header only
            check_pixels(image.width, image.height)
            image.load()
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage("image_too_large", str(e)) from None
    except UnidentifiedImageError as e:
        raise BadImage("unreadable_image", str(e)) from None
    except (OSError, SyntaxError, ValueError) as e:
        text = str(e)
        lowered = text.lower()
        reason = "truncated_image" if "truncated" in lowered or "broken data stream" in lowered else "unreadable_image"
        raise BadImage(reason, text) from None
    except Exception as e:  # PIL's decoders raise many other types on damaged files (struct.error, IndexError...)
        raise BadImage("unreadable_image", f"{type(e).__name__}: {e}") from None
    if image.width <= 0 or image.height <= 0:
        raise BadImage("empty_image", f"size {image.width}x{image.height}")
    return image


def to_rgb(image: Image.Image) -> tuple[Image.Image, bool]:
    """RGB version of ``image`` and whether a conversion was needed.

    Grayscale and CMYK convert directly; alpha is composited on black, which is
    what zero padding around a crop looks like too. A mode PIL cannot convert
    (LAB, say) raises BadImage ``unsupported_mode``.
    """
    if image.mode == "RGB":
        return image, False
    try:
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            return Image.alpha_composite(background, rgba).convert("RGB"), True
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16/32-bit grayscale: scale to 8 bit before converting.
            image = image.point(lambda v: v / 256).convert("L")
        return image.convert("RGB"), True
    except Exception as e:
        raise BadImage("unsupported_mode", f"mode {image.mode}: {type(e).__name__}: {e}") from None


def encode_image(image: Image.Image, fmt: str = "JPEG", quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        if max(image.size) > MAX_JPEG_SIDE:
            raise BadImage("image_too_large", f"{image.width}x{image.height}: JPEG stores at most "
                                              f"{MAX_JPEG_SIDE} pixels a side")
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


# The EXIF tag in which a camera says how a photo stored sideways or mirrored is to be shown (2 to 8; 1 is as stored).
EXIF_ORIENTATION = 0x0112


def upright(image: Image.Image) -> tuple[Image.Image, str | None]:
    """``image`` turned as its EXIF orientation tag says, so that a person stands as a viewer shows them, and what
    was done ("EXIF orientation 6->upright"); the image itself and None when it has no such tag, or one that says
    "as stored" or cannot be read (the pixels are then kept as they are)."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: the pixels themselves may be fine
        return image, None
    if not isinstance(orientation, int) or not 2 <= orientation <= 8:
        return image, None
    try:
        return ImageOps.exif_transpose(image), f"EXIF orientation {orientation}->upright"
    except Exception as e:  # PIL's decoders raise many types on damaged files
        raise BadImage("unreadable_image", f"{type(e).__name__}: {e}") from None


def to_upright_rgb(image: Image.Image, turn_upright: bool = False) -> tuple[Image.Image, list[str]]:
    """``image`` in RGB (``to_rgb``), with ``turn_upright`` turned as its EXIF orientation says (``upright``), and
    what was converted ("CMYK->RGB", "EXIF orientation 6->upright"; empty if nothing)."""
    turned = None
    if turn_upright:
        image, turned = upright(image)
    rgb, converted = to_rgb(image)
    return rgb, [f"{image.mode}->RGB"] * converted + [turned] * bool(turned)


def normalise_encoded(data: bytes, turn_upright: bool = False) -> tuple[bytes, list[str]]:
    """Bytes fit for a shard (JPEG/PNG, RGB; with ``turn_upright`` turned as its EXIF orientation says), and what
    was converted (``to_upright_rgb``).

    Keeps the original bytes when they already are an RGB JPEG or PNG shown as stored, so ingest does not lose
    quality to a needless re-encode.
    """
    image = open_image(data)
    rgb, conversions = to_upright_rgb(image, turn_upright)
    if not conversions and image.format in STORED_FORMATS:
        return data, []
    return encode_image(rgb, "PNG" if image.format == "PNG" else "JPEG"), conversions
