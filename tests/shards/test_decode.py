import numpy as np
from helpers import jpeg_bytes

from patchray.shards.decode import decode_crops


def test_jpeg_png_gray_and_bad_rows():
    jpeg = jpeg_bytes(100, 200, (250, 10, 10))
    png = jpeg_bytes(20, 40, (10, 250, 10), fmt="PNG")
    gray = jpeg_bytes(100, 200, (90, 90, 90), mode="L")
    pixels, reasons = decode_crops([jpeg, png, gray, b"", None, jpeg[:100]], 100, 200)
    assert reasons == ["", "", "", "empty_image", "empty_image", "truncated_image"]
    assert pixels.shape == (6, 200, 100, 3)
    assert tuple(np.round(pixels[0].reshape(-1, 3).mean(0) / 10)) == (25, 1, 1)
    assert tuple(pixels[1, 100, 50]) == (10, 250, 10)  # PNG through the fallback, resized 5x
    assert np.all(np.abs(pixels[2].astype(int) - 90) <= 2)  # grayscale JPEG comes out RGB
    assert pixels[3:].max() == 0


def test_crops_of_the_training_size_decode_in_place_to_torchvisions_pixels():
    """The fast path (libjpeg straight into the batch) gives the pixels torchvision's decoder gives, and a crop
    whose data ends early leaves no half-decoded image behind: it is skipped, its row zero."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    noisy = jpeg_bytes(100, 200, noise=True)
    pixels, reasons = decode_crops([noisy, noisy[: len(noisy) * 2 // 3], noisy], 100, 200)
    reference = decode_jpeg(torch.frombuffer(bytearray(noisy), dtype=torch.uint8), mode=ImageReadMode.RGB)
    assert reasons == ["", "truncated_image", ""]
    assert np.array_equal(pixels[0], reference.permute(1, 2, 0).numpy()) and np.array_equal(pixels[2], pixels[0])
    assert pixels[1].max() == 0
