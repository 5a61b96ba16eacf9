"""Decoding where training runs (nvJPEG on a GPU; the worker's CPU otherwise) against the data workers' decoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import jpeg_bytes

from patchray.shards.decode import decode_crops
from patchray.shards.device_decode import decode_crops_on, is_whole_jpeg

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def textured_jpeg(seed: int, width: int = 100, height: int = 200) -> bytes:
    """A crop-like JPEG: smooth colour gradients under random soft blobs (not flat, so decoders can differ; not
    white noise, whose chroma no two JPEG decoders upsample alike)."""
    import io

    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    pixels = np.stack([80 + 100 * xs, 60 + 120 * ys, 120 + 60 * xs * ys], axis=-1)
    for _ in range(8):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2)
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / r**2)
        pixels += blob[..., None] * rng.uniform(-70, 70, 3)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_whole_jpeg_check():
    jpeg = jpeg_bytes(100, 200, (1, 2, 3))
    assert is_whole_jpeg(jpeg) and is_whole_jpeg(jpeg + b"\x00" * 16)
    assert not is_whole_jpeg(jpeg[: len(jpeg) // 2])  # truncated: no end-of-image marker
    assert not is_whole_jpeg(jpeg_bytes(10, 10, (1, 2, 3), fmt="PNG"))
    assert not is_whole_jpeg(b"") and not is_whole_jpeg(None)


@pytest.mark.parametrize("device", DEVICES)
def test_good_crops_match_the_cpu_decoder(device):
    images = [textured_jpeg(seed) for seed in range(6)]
    expected, _ = decode_crops(images, 100, 200)
    pixels, reasons = decode_crops_on(images, 100, 200, device)
    assert reasons == [""] * 6 and pixels.shape == (6, 200, 100, 3) and pixels.device.type == device
    difference = np.abs(pixels.cpu().numpy().astype(int) - expected.astype(int))
    if device == "cpu":  # the same libjpeg
        assert difference.max() == 0
    else:  # nvJPEG's IDCT, chroma upsampling and colour conversion round differently
        assert difference.mean() < 1.5


@pytest.mark.parametrize("device", DEVICES)
def test_bad_rows_get_the_cpu_decoders_reasons_and_good_rows_survive(device):
    jpeg = textured_jpeg(0)
    png = jpeg_bytes(20, 40, (10, 250, 10), fmt="PNG")
    # Looks whole (start and end markers) but has no frame: the batched decode fails and each row is retried.
    hollow = b"\xff\xd8" + b"\x00" * 64 + b"\xff\xd9"
    rows = [jpeg, jpeg[:300], b"", None, png, hollow, b"not an image at all", jpeg]
    expected, expected_reasons = decode_crops(rows, 100, 200)
    pixels, reasons = decode_crops_on(rows, 100, 200, device)
    assert reasons == expected_reasons
    assert reasons[0] == reasons[4] == reasons[7] == "" and all(reasons[i] for i in (1, 2, 3, 5, 6))
    pixels = pixels.cpu().numpy()
    assert tuple(pixels[4, 100, 50]) == (10, 250, 10)  # PNG decoded (and resized) on the CPU fallback
    assert pixels[[1, 2, 3, 5, 6]].max() == 0
    assert np.abs(pixels[[0, 7]].astype(int) - expected[[0, 7]].astype(int)).mean() < 1.5


def test_other_sizes_are_resized_like_the_cpu_decoder():
    images = [jpeg_bytes(50, 100, (200, 40, 40)), textured_jpeg(3, width=150, height=300)]
    expected, _ = decode_crops(images, 100, 200)
    pixels, reasons = decode_crops_on(images, 100, 200, "cpu")
    assert reasons == ["", ""] and pixels.shape == (2, 200, 100, 3)
    assert np.abs(pixels[0].numpy().astype(int) - expected[0].astype(int)).max() <= 2  # flat colour
    assert np.abs(pixels[1].numpy().astype(float) - expected[1]).mean() < 2.0  # texture, 1.5x downscale


@pytest.mark.parametrize("device", DEVICES)
def test_batches_made_in_threads_reach_a_consumer_intact(device):
    """Ray collates batches in a thread pool while the step runs in the main thread: batches made that way, and
    used at once on the default stream, equal batches made one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from patchray.accel import produce_for_default_stream
    from patchray.patches import PatchTaskConfig, task_patches_on

    task = PatchTaskConfig()
    batches = [[textured_jpeg(10 * b + i) for i in range(6)] for b in range(12)]

    def make(index):
        def produce():
            pixels, reasons = decode_crops_on(batches[index], 100, 200, device)
            patches, labels = task_patches_on(pixels, [f"b{index}-{i}" for i in range(6)], task, seed=0, epoch=index)
            return reasons, patches, labels

        return produce_for_default_stream(torch.device(device), produce)

    def digest(patches, labels):  # work on the consumer's stream, as a training step
        return (patches.float().mean(dim=(1, 2, 3)) * (labels + 1)).cpu()

    serial = [digest(*make(i)[1:]) for i in range(len(batches))]
    with ThreadPoolExecutor(4) as pool:
        made = [pool.submit(make, i) for i in range(len(batches))]
        for index, future in enumerate(made):
            reasons, patches, labels = future.result()
            assert reasons == [""] * 6 and patches.device.type == device
            assert torch.equal(digest(patches, labels), serial[index])
