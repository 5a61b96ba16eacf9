"""Decoding JPEG crops where training runs: on a GPU with nvJPEG (torchvision's batched ``decode_jpeg``), or
on the training worker's CPU with the same call.

Data workers then ship the encoded crops (a few kB each) instead of decoded pixels (60 kB), and a GPU node's
CPUs are no longer the limit. A row that is not a whole JPEG (empty, truncated, another format, corrupt) is
handed to the CPU decoder of ``patchray.shards.decode``, which decodes it if it can and otherwise names the
reason it is skipped: the GPU decoder is never trusted with a file that would fail on the CPU. Nor with one whose
frame header claims more than ``MAX_IMAGE_PIXELS`` (skipped as ``image_too_large``, read from the header before
nvJPEG sees the file), nor with one whose header is not made of clean marker segments (handed to the CPU decoder,
which reads such files the way libjpeg does).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from patchray.shards.decode import decode_crops, fit_geometry
from patchray.shards.images import MAX_IMAGE_PIXELS, jpeg_size

_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
# torchvision 0.29 deprecates its codecs in favour of torchcodec, which is not installable here; nvJPEG through
# torchvision is still the GPU decoder on hand. Silence the notice rather than flood every training worker's log.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)
_EOI_SEARCH = 64  # bytes at the end searched for the end-of-image marker (encoders may pad after it)


def is_whole_jpeg(data) -> bool:
    """Starts with JPEG's start-of-image marker and ends (up to padding) with its end-of-image marker: a
    truncated file fails this, and nvJPEG would otherwise decode it to a partly gray crop without a word."""
    return data is not None and len(data) > 4 and bytes(data[:2]) == _SOI and _EOI in bytes(data[-_EOI_SEARCH:])


def _fit(image: torch.Tensor, width: int, height: int, fit: str = "aspect") -> torch.Tensor:
    """uint8 [3, h, w] -> [3, height, width] (bilinear with antialiasing, PIL's filter: within a grey level or two
    of the CPU decoder's fit; ``fit`` as :func:`patchray.shards.decode.fit_geometry`)."""
    if image.shape[1:] == (height, width):
        return image
    scaled_w, scaled_h, offset = fit_geometry(image.shape[2], image.shape[1], width, height, fit)
    if (scaled_h, scaled_w) != tuple(image.shape[1:]):
        image = F.interpolate(image[None].float(), size=(scaled_h, scaled_w), mode="bilinear", antialias=True,
                              align_corners=False)[0].round().clamp_(0, 255).to(torch.uint8)
    if offset == 0 and scaled_w == width:
        return image
    out = torch.zeros((3, height, width), dtype=torch.uint8, device=image.device)
    src0, dst0 = max(0, -offset), max(0, offset)
    n = min(scaled_w - src0, width - dst0)
    out[:, :, dst0:dst0 + n] = image[:, :, src0:src0 + n]
    return out


def decode_crops_on(images, width: int, height: int, device: torch.device | str, fit: str = "aspect"
                    ) -> tuple[torch.Tensor, list[str]]:
    """Decode and resize on ``device``: uint8 [N, height, width, 3] on the device (zeros for bad rows) and
    one reason per row ("" for a good crop), as :func:`patchray.shards.decode.decode_crops`."""
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    out = torch.zeros((len(images), 3, height, width), dtype=torch.uint8, device=device)
    reasons = [""] * len(images)
    whole, too_large = [], []
    for i, data in enumerate(images):
        if not is_whole_jpeg(data):
            continue
        size = jpeg_size(data if isinstance(data, (bytes, bytearray)) else bytes(data), strict=True)
        if size is None:
            continue  # not clean segments: the CPU decoder decides
        if size[0] * size[1] > MAX_IMAGE_PIXELS:
            reasons[i] = "image_too_large"
            too_large.append(i)
        else:
            whole.append(i)
    # frombuffer needs a writable buffer; bytearray is the one copy (tens of microseconds for a crop's JPEG)
    encoded = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in whole]
    try:
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device) if encoded else []
    except RuntimeError:  # one bad file fails the whole batch: find it by decoding one at a time
        decoded = []
        for data in encoded:
            try:
                decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
    on_cpu = sorted(set(range(len(images))) - set(whole) - set(too_large))
    fitted = [(i, _fit(image, width, height, fit)) for i, image in zip(whole, decoded) if image is not None]
    on_cpu += [i for i, image in zip(whole, decoded) if image is None]
    if fitted:  # one copy into the batch, not one per crop: per-crop launches would cost more than the decode
        rows, tensors = zip(*fitted)
        out[list(rows)] = torch.stack(tensors)
    if on_cpu:
        pixels, cpu_reasons = decode_crops([images[i] for i in on_cpu], width, height, fit)
        out[on_cpu] = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).to(device)
        for i, reason in zip(on_cpu, cpu_reasons):
            reasons[i] = reason
    return out.permute(0, 2, 3, 1).contiguous(), reasons
