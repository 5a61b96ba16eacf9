"""Decoding a batch of stored crops to fixed-size RGB arrays, the hot path of every job.

JPEG goes through libjpeg-turbo by way of simplejpeg, straight into the batch's
array when the crop already has the training size: 15-25% less CPU a crop than
torchvision's decoder (which also returns channels first, to be turned back),
with the same pixels (``jobs/bench_ingest.py`` times both). PNG and anything
libjpeg refuses or warns about (a truncated file) fall back to PIL, which also
names what is wrong with a bad image. Bad rows are reported, not raised: one
corrupt crop must not end an epoch. An image whose header claims more than
``MAX_IMAGE_PIXELS`` is skipped as ``image_too_large`` before any decoder
allocates it.

A JPEG well above the training size (a detector's box of a near person) is decoded at one of libjpeg-turbo's
reduced scales with a SIMD inverse DCT (1/8, 2/8 or 4/8 of each side: only the low frequencies are transformed),
the smallest that still covers the fitted size. Every crop of another size is then fitted with OpenCV's
vectorised resize, 4-7x PIL's: a 300 x 600 crop fits 100 x 200 in 0.53 ms where a 3/8 decode and PIL's resize took
0.94, and closer to a Lanczos fit of the full image (``docs/performance.md``). The fitted geometry is the full
image's.
"""
from __future__ import annotations

import typing
from typing import Literal

import cv2
import numpy as np
import simplejpeg

from patchray.shards.images import MAX_IMAGE_PIXELS, BadImage, jpeg_size, open_image, to_rgb

# patchray decodes one crop per core, in as many data tasks (or trainer threads) as there are cores; OpenCV's own
# thread pool would only contend with them for a resize of a few hundred microseconds.
cv2.setNumThreads(1)

_JPEG_MAGIC = b"\xff\xd8"


def _jpeg_rgb(data: bytes, into: np.ndarray | None = None, at_least: tuple[int, int] | None = None
              ) -> np.ndarray | None:
    """RGB [H, W, 3] of a JPEG, written into ``into`` when given (its shape must be the image's); None when
    libjpeg fails or warns (``strict``: corrupt or truncated data), so that PIL decides whether the image is
    usable and why not. ``into`` may then hold a partial image. ``at_least`` (width, height): decode at
    libjpeg's smallest scale that keeps both sides at least that large (``reduced_decode_size``)."""
    min_width, min_height = at_least or (0, 0)
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, buffer=into, min_width=min_width,
                                      min_height=min_height)
    except ValueError:
        return None


def _pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(to_rgb(open_image(data))[0])


# How a crop of another shape becomes ``width x height``: "aspect" (the authors' rule) scales it to the
# height and centre-crops or zero-pads the width, so a person is never stretched; "stretch" resizes both sides.
CropFit = Literal["aspect", "stretch"]
CROP_FITS = typing.get_args(CropFit)


def fit_geometry(src_width: int, src_height: int, width: int, height: int, fit: str = "aspect"
                 ) -> tuple[int, int, int]:
    """(scaled width, scaled height, x offset) of a ``src_width x src_height`` crop fitted to ``width x height``:
    the crop is resized to the scaled size and its column 0 lands at the offset (negative: the sides are cut,
    positive: the sides are zero padded), always centred."""
    if fit == "stretch":
        return width, height, 0
    scaled = max(1, int(round(src_width * height / src_height)))
    return scaled, height, (width - scaled) // 2


def place(scaled: np.ndarray, width: int, offset: int) -> np.ndarray:
    """Centre ``scaled`` [H, w, ...] in ``width`` columns at ``offset``: cut its sides or zero-pad them."""
    if offset == 0 and scaled.shape[1] == width:
        return scaled
    out = np.zeros((scaled.shape[0], width, *scaled.shape[2:]), dtype=scaled.dtype)
    src0, dst0 = max(0, -offset), max(0, offset)
    n = min(scaled.shape[1] - src0, width - dst0)
    out[:, dst0:dst0 + n] = scaled[:, src0:src0 + n]
    return out


# The reduced scales, in eighths of each side, that libjpeg-turbo runs a SIMD inverse DCT for (4x4, 2x2, 1x1 per
# block). The others (3/8, 5/8 to 7/8) run plain C transforms at odd sizes, the chroma's at up to twice the luma's:
# measured slower than the next of these scales above them, and 6/8 and 7/8 slower than a full decode.
REDUCED_DECODE_EIGHTHS = (1, 2, 4)


def reduced_decode_size(src_width: int, src_height: int, width: int, height: int, fit: str = "aspect"
                        ) -> tuple[int, int] | None:
    """(width, height) that a ``src_width x src_height`` JPEG is decoded to at a reduced libjpeg scale (the
    smallest of ``REDUCED_DECODE_EIGHTHS`` that covers its fit to ``width x height``) before it is fitted; None
    when it is decoded whole (no such scale covers it, or a header claims no pixels: the decoders then name what
    is wrong)."""
    if src_width < 1 or src_height < 1:
        return None
    scaled_w, scaled_h, _ = fit_geometry(src_width, src_height, width, height, fit)
    for eighths in REDUCED_DECODE_EIGHTHS:
        # libjpeg rounds a scaled side up, and picks the smallest scale that gives at least the size asked for
        decoded_w, decoded_h = -(-src_width * eighths // 8), -(-src_height * eighths // 8)
        if decoded_w >= scaled_w and decoded_h >= scaled_h:
            return decoded_w, decoded_h
    return None


# OpenCV's bilinear resize samples two pixels a side, which is a proper filter while a side shrinks by at most 2:
# every reduced decode leaves less than that (the next smaller scale did not cover), as do crops near the training
# size. Beyond it (a large crop decoded whole: a PNG, or past 16x the training size) its area average keeps the
# skipped pixels from aliasing.
MAX_BILINEAR_SHRINK = 2.0


def _scale(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = max(pixels.shape[1] / width, pixels.shape[0] / height)
    interpolation = cv2.INTER_AREA if shrink > MAX_BILINEAR_SHRINK else cv2.INTER_LINEAR
    return cv2.resize(pixels, (width, height), interpolation=interpolation)


def _resize(pixels: np.ndarray, width: int, height: int, fit: str = "aspect",
            source: tuple[int, int] | None = None) -> np.ndarray:
    """Fit ``pixels`` to ``height x width``; the geometry is that of ``source`` (width, height), the stored
    image's size, when the pixels are a reduced decode of it (so that the fit is the same either way)."""
    if pixels.shape[0] == height and pixels.shape[1] == width:
        return pixels
    src_w, src_h = source or (pixels.shape[1], pixels.shape[0])
    scaled_w, scaled_h, offset = fit_geometry(src_w, src_h, width, height, fit)
    if (scaled_h, scaled_w) != pixels.shape[:2]:
        pixels = _scale(pixels, scaled_w, scaled_h)
    return place(pixels, width, offset)


def decode_crops(images, width: int, height: int, fit: str = "aspect") -> tuple[np.ndarray, list[str]]:
    """Decode and fit to ``height x width`` (``fit``: see ``CROP_FITS``).

    Returns ``pixels`` uint8 [N, height, width, 3] (zeros for bad rows) and one
    reason per row: "" for a good crop, else a skip reason such as
    "truncated_image".
    """
    out = np.zeros((len(images), height, width, 3), dtype=np.uint8)
    reasons = [""] * len(images)
    for i, data in enumerate(images):
        if data is None or len(data) == 0:
            reasons[i] = "empty_image"
            continue
        data = bytes(data)
        pixels, source = None, None
        if data[:2] == _JPEG_MAGIC:
            # The frame header libjpeg will use, read before it allocates (a couple of microseconds a crop).
            size = jpeg_size(data)
            if size is not None:
                if size[0] * size[1] > MAX_IMAGE_PIXELS:
                    reasons[i] = "image_too_large"
                    continue
                if size == (width, height):  # the common case: decoded in place, nothing to fit or copy
                    if _jpeg_rgb(data, into=out[i]) is not None:
                        continue
                    out[i] = 0  # a failed decode may have written part of the image
                else:
                    pixels = _jpeg_rgb(data, at_least=reduced_decode_size(*size, width, height, fit))
                    source = size  # the geometry is the stored image's, whatever scale it was decoded at
        if pixels is None:  # PIL checks the size from the header too (open_image), and decodes at full scale
            source = None
            try:
                pixels = _pil_rgb(data)
            except BadImage as e:
                reasons[i] = e.reason
                continue
        out[i] = _resize(pixels, width, height, fit, source=source)
    return out, reasons
