"""Decoding a batch of stored crops to fixed-size RGB arrays, the hot path of every job.

JPEG goes through torchvision's decoder (faster than PIL on the CPU); PNG and
anything torchvision refuses fall back to PIL, which also names what is wrong
with a bad image. Bad rows are reported, not raised: one corrupt crop must not
end an epoch. An image whose header claims more than ``MAX_IMAGE_PIXELS`` is
skipped as ``image_too_large`` before any decoder allocates it.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image

from patchray.shards.images import MAX_IMAGE_PIXELS, BadImage, jpeg_size, open_image, to_rgb

_JPEG_MAGIC = b"\xff\xd8"
# torchvision 0.29 deprecates its codecs in favour of torchcodec, which is not installable here; the
# decoder still works and is the fastest on hand. Silence the notice rather than flood every data task's log.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def _torchvision_rgb(data: bytes) -> np.ndarray | None:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        tensor = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        return None  # let PIL decide whether the image is usable and why not
    return tensor.permute(1, 2, 0).numpy()


def _pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(to_rgb(open_image(data))[0])


def _resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    if pixels.shape[0] == height and pixels.shape[1] == width:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))


def decode_crops(images, width: int, height: int) -> tuple[np.ndarray, list[str]]:
    """Decode and resize to ``height x width``.

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
        pixels = None
        if data[:2] == _JPEG_MAGIC:
            # The frame header libjpeg will use, read before it allocates (a couple of microseconds a crop).
            size = jpeg_size(data)
            if size is not None:
                if size[0] * size[1] > MAX_IMAGE_PIXELS:
                    reasons[i] = "image_too_large"
                    continue
                pixels = _torchvision_rgb(data)
        if pixels is None:  # PIL checks the size from the header too (open_image)
            try:
                pixels = _pil_rgb(data)
            except BadImage as e:
                reasons[i] = e.reason
                continue
        out[i] = _resize(pixels, width, height)
    return out, reasons
