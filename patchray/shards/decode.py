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

A JPEG well above the training size (a detector's box of a near person) is decoded at one of libjpeg's reduced
scales (M/8 of each side, its inverse DCT taking only the low frequencies), the smallest that still covers the
fitted size: less to decode and far less for the bilinear resize that follows (a 300 x 600 crop to 100 x 200 in
0.73 ms instead of 1.49, ``docs/performance.md``). The result differs from a full decode then resize by one to two
grey levels on average, as two resize filters do; the fitted geometry is the same.
"""
from __future__ import annotations

import typing
from typing import Literal

import numpy as np
import simplejpeg
from PIL import Image

from patchray.shards.images import MAX_IMAGE_PIXELS, BadImage, jpeg_size, open_image, to_rgb

_JPEG_MAGIC = b"\xff\xd8"


def _jpeg_rgb(data: bytes, into: np.ndarray | None = None, at_least: tuple[int, int] | None = None
              ) -> np.ndarray | None:
    """RGB [H, W, 3] of a JPEG, written into ``into`` when given (its shape must be the image's); None when
    libjpeg fails or warns (``strict``: corrupt or truncated data), so that PIL decides whether the image is
    usable and why not. ``into`` may then hold a partial image. ``at_least`` (width, height): decode at
    libjpeg's smallest reduced scale that keeps both sides at least that large."""
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


# libjpeg's reduced scales between 7/8 and 1 decode no faster than the full image (measured: 7/8 slower, 6/8
# faster), so a reduced decode is asked for only where 6/8 of each side still covers the fitted size.
REDUCED_DECODE_MAX_SCALE = 6 / 8


def reduced_decode_size(src_width: int, src_height: int, width: int, height: int, fit: str = "aspect"
                        ) -> tuple[int, int] | None:
    """(width, height) that a ``src_width x src_height`` JPEG is decoded to at least, at a reduced libjpeg
    scale, before it is fitted to ``width x height``; None when it is decoded whole (too small to gain, or a
    header that claims no pixels: the decoders then name what is wrong)."""
    if src_width < 1 or src_height < 1:
        return None
    scaled_w, scaled_h, _ = fit_geometry(src_width, src_height, width, height, fit)
    if (scaled_w <= REDUCED_DECODE_MAX_SCALE * src_width
            and scaled_h <= REDUCED_DECODE_MAX_SCALE * src_height):
        return scaled_w, scaled_h
    return None


def _resize(pixels: np.ndarray, width: int, height: int, fit: str = "aspect",
            source: tuple[int, int] | None = None) -> np.ndarray:
    """Fit ``pixels`` to ``height x width``; the geometry is that of ``source`` (width, height), the stored
    image's size, when the pixels are a reduced decode of it (so that the fit is the same either way)."""
    if pixels.shape[0] == height and pixels.shape[1] == width:
        return pixels
    src_w, src_h = source or (pixels.shape[1], pixels.shape[0])
    scaled_w, scaled_h, offset = fit_geometry(src_w, src_h, width, height, fit)
    if (scaled_h, scaled_w) != pixels.shape[:2]:
        pixels = np.asarray(Image.fromarray(pixels).resize((scaled_w, scaled_h), Image.Resampling.BILINEAR))
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
