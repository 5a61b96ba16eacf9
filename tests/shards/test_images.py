import io

import numpy as np
import pytest
from helpers import jpeg_bytes
from PIL import Image

from patchray.shards.images import BadImage, normalise_encoded, open_image, to_rgb


def test_truncated_and_garbage_images_are_named():
    data = jpeg_bytes(64, 64, noise=True)
    for cut in (len(data) // 2, 300):  # inside the pixel data, inside the headers
        with pytest.raises(BadImage) as err:
            open_image(data[:cut])
        assert err.value.reason == "truncated_image"
    with pytest.raises(BadImage) as err:
        open_image(b"this is not an image")
    assert err.value.reason == "unreadable_image"
    with pytest.raises(BadImage) as err:
        open_image(b"")
    assert err.value.reason == "empty_image"


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "LA"])
def test_other_modes_become_rgb(mode):
    fmt = "PNG" if mode in ("RGBA", "P", "LA") else "JPEG"
    data = jpeg_bytes(8, 8, (10, 200, 60), mode=mode, fmt=fmt)
    data2, converted_from = normalise_encoded(data)
    assert converted_from == mode
    image = to_rgb(open_image(data2))[0]
    assert image.mode == "RGB" and image.size == (8, 8)


def test_alpha_is_composited_on_black():
    rgba = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    pixels = np.asarray(to_rgb(open_image(buffer.getvalue()))[0])
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[1, 1]) == (0, 0, 0)


def test_rgb_jpeg_is_kept_byte_for_byte():
    data = jpeg_bytes()
    assert normalise_encoded(data) == (data, None)


def test_median_size_reads_headers_and_skips_what_has_none():
    from patchray.shards.images import median_size

    large, small = jpeg_bytes(300, 600), jpeg_bytes(100, 200)
    png = jpeg_bytes(40, 80, fmt="PNG")
    assert median_size([large, small, large, png, b"junk", b"", large, small]) == (300, 600)
    assert median_size([small, jpeg_bytes(90, 540), large]) == (100, 540)  # each side's median on its own
    assert median_size([b"junk"]) is None and median_size([]) is None
