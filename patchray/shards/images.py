"""Decoding and encoding crop images, with bad input named rather than fatal."""
from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

# Formats a shard may store; anything else is re-encoded as JPEG.
STORED_FORMATS = ("JPEG", "PNG")
JPEG_QUALITY = 90


class BadImage(ValueError):
    """An image that cannot be used. ``reason`` is a short stable key used in skip counts."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def open_image(data: bytes) -> Image.Image:
    """Decode fully (so truncation shows now, not later) without changing the mode."""
    if not data:
        raise BadImage("empty_image", "no bytes")
    try:
        with warnings.catch_warnings():
            # PIL warns on some damaged headers; we turn damage into BadImage below instead.
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            image.load()
    except UnidentifiedImageError as e:
        raise BadImage("unreadable_image", str(e)) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        text = str(e)
        lowered = text.lower()
        reason = "truncated_image" if "truncated" in lowered or "broken data stream" in lowered else "unreadable_image"
        raise BadImage(reason, text) from None
    if image.width <= 0 or image.height <= 0:
        raise BadImage("empty_image", f"size {image.width}x{image.height}")
    return image


def to_rgb(image: Image.Image) -> tuple[Image.Image, bool]:
    """RGB version of ``image`` and whether a conversion was needed.

    Grayscale and CMYK convert directly; alpha is composited on black, which is
    what zero padding around a crop looks like too.
    """
    if image.mode == "RGB":
        return image, False
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), True
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bit before converting.
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB"), True


def decode_rgb(data: bytes) -> Image.Image:
    return to_rgb(open_image(data))[0]


def encode_image(image: Image.Image, fmt: str = "JPEG", quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


def normalise_encoded(data: bytes) -> tuple[bytes, str | None]:
    """Bytes fit for a shard (JPEG/PNG, RGB), and the mode converted from (None if kept).

    Keeps the original bytes when they already are an RGB JPEG or PNG, so ingest
    does not lose quality to a needless re-encode.
    """
    image = open_image(data)
    fmt = image.format
    rgb, converted = to_rgb(image)
    if not converted and fmt in STORED_FORMATS:
        return data, None
    return encode_image(rgb, "PNG" if fmt == "PNG" else "JPEG"), (image.mode if converted else None)
