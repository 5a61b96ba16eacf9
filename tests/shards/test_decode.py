import io

import numpy as np
from helpers import jpeg_bytes, person_jpeg

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


def test_which_crops_decode_at_a_reduced_scale():
    """The smallest of libjpeg-turbo's SIMD scales (1/8, 2/8, 4/8) whose decode covers the crop's fit, as the size
    it decodes to; None where the crop is decoded whole."""
    from patchray.shards.decode import reduced_decode_size

    assert reduced_decode_size(100, 200, 100, 200) is None            # the training size: decoded in place
    assert reduced_decode_size(150, 300, 100, 200) is None            # 4/8 would not cover it, 6/8 is slower
    assert reduced_decode_size(199, 399, 100, 200) == (100, 200)      # 4/8, rounded up as libjpeg rounds
    assert reduced_decode_size(300, 600, 100, 200) == (150, 300)      # 4/8: 3/8 would cover, but is slower
    assert reduced_decode_size(400, 800, 100, 200) == (100, 200)      # 2/8
    assert reduced_decode_size(1601, 3202, 100, 200) == (201, 401)    # 1/8
    assert reduced_decode_size(37, 500, 100, 200) == (19, 250)        # a thin box: its own fitted width (15)
    assert reduced_decode_size(37, 500, 100, 200, "stretch") is None  # stretched, 37 columns must become 100
    assert reduced_decode_size(400, 300, 100, 200) is None            # a wide box keeps its aspect: 267 x 200
    assert reduced_decode_size(800, 600, 100, 200) == (400, 300)
    assert reduced_decode_size(0, 0, 100, 200) is None                # a header claiming no pixels: left to PIL


def _full_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_large_crops_decode_at_a_reduced_scale_to_the_same_fit():
    """A detector's crop well above the training size is decoded at a reduced scale (4/8 of a 300 x 600 crop for
    100 x 200); fitted, it is the full decode's fit within two grey levels on average, with the same geometry: the
    same zero bands, nothing shifted."""
    from patchray.shards.decode import _jpeg_rgb, _resize, fit_geometry, reduced_decode_size

    big = person_jpeg(300, 600)
    assert _jpeg_rgb(big, at_least=reduced_decode_size(300, 600, 100, 200)).shape == (300, 150, 3)
    for (width, height, fit) in [(300, 600, "aspect"), (250, 500, "aspect"), (90, 540, "aspect"),
                                 (840, 600, "aspect"), (460, 920, "stretch"), (840, 600, "stretch")]:
        assert reduced_decode_size(width, height, 100, 200, fit) is not None
        images = [person_jpeg(width, height, i) for i in range(4)]
        pixels, reasons = decode_crops(images, 100, 200, fit)
        assert reasons == [""] * 4
        full = np.stack([_resize(_full_decode(d), 100, 200, fit) for d in images])
        difference = np.abs(pixels.astype(int) - full.astype(int))
        assert 0 < difference.mean() < 2.0, (width, height, fit, difference.mean())
        _, _, offset = fit_geometry(width, height, 100, 200, fit)
        if offset > 0:  # a thin box: the zero bands are where the full decode puts them, to the column
            content = slice(offset, 100 - offset)
            assert pixels[:, :, :offset].max() == 0 and pixels[:, :, 100 - offset + 1:].max() == 0
            assert pixels[:, :, content].reshape(4, -1).max(axis=1).min() > 0
            assert (full[:, :, :offset].max(), full[:, :, 100 - offset + 1:].max()) == (0, 0)


def test_crops_of_other_sizes_fit_close_to_a_lanczos_fit_of_the_whole_image():
    """Against the best a resize can do (PIL's Lanczos filter on the full decode), every fitted size stays within
    1.35 grey levels on average (0.6 to 1.3 here). The decode before (3/8 and 6/8 scales, PIL's bilinear resize)
    was 1.4 to 2.2 levels off at 150 x 300, 250 x 500, 300 x 600 and 600 x 1200."""
    from PIL import Image

    from patchray.shards.decode import fit_geometry, place

    for width, height in [(64, 128), (120, 240), (150, 300), (250, 500), (300, 600), (600, 1200), (90, 540)]:
        images = [person_jpeg(width, height, i) for i in range(4)]
        pixels, reasons = decode_crops(images, 100, 200)
        scaled_w, scaled_h, offset = fit_geometry(width, height, 100, 200)
        lanczos = np.stack([place(np.asarray(Image.fromarray(_full_decode(d)).resize(
            (scaled_w, scaled_h), Image.Resampling.LANCZOS)), 100, offset) for d in images])
        assert reasons == [""] * 4
        error = np.abs(pixels.astype(int) - lanczos.astype(int)).mean()
        assert error < 1.35, (width, height, error)


def test_a_large_image_decoded_whole_is_area_averaged_not_aliased():
    """A 6x shrink (a PNG is never decoded at a reduced scale) averages the pixels it drops: one-pixel stripes
    become an even grey, where sampling two of every six columns would keep black or white bands."""
    from PIL import Image

    stripes = np.zeros((1200, 600, 3), dtype=np.uint8)
    stripes[:, ::2] = 255
    buffer = io.BytesIO()
    Image.fromarray(stripes).save(buffer, format="PNG")
    pixels, reasons = decode_crops([buffer.getvalue()], 100, 200)
    assert reasons == [""]
    assert abs(pixels.mean() - 127.5) < 2 and pixels.std() < 4, (pixels.mean(), pixels.std())


def test_a_large_crop_cut_short_is_skipped_not_half_decoded():
    big = person_jpeg(300, 600)
    pixels, reasons = decode_crops([big[: len(big) // 2], big], 100, 200)
    assert reasons == ["truncated_image", ""]
    assert pixels[0].max() == 0 and pixels[1].max() > 0
