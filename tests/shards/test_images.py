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
    data2, conversions = normalise_encoded(data)
    assert conversions == [f"{mode}->RGB"]
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
    assert normalise_encoded(data) == (data, [])
    assert normalise_encoded(data, turn_upright=True) == (data, [])


def test_median_size_reads_headers_and_skips_what_has_none():
    from patchray.shards.images import median_size

    large, small = jpeg_bytes(300, 600), jpeg_bytes(100, 200)
    png = jpeg_bytes(40, 80, fmt="PNG")
    assert median_size([large, small, large, png, b"junk", b"", large, small]) == (300, 600)
    assert median_size([small, jpeg_bytes(90, 540), large]) == (100, 540)  # each side's median on its own
    assert median_size([b"junk"]) is None and median_size([]) is None


def _photo(orientation: int | None, fmt: str = "JPEG") -> tuple[bytes, Image.Image]:
    """A 40 x 20 picture (red left half, blue right half, a green top-left corner) stored with an EXIF
    orientation tag, and the picture a viewer shows (PIL's own reading of the tag)."""
    from PIL import ImageOps

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (220, 20, 20)
    pixels[:, 20:] = (20, 20, 220)
    pixels[:6, :6] = (20, 220, 20)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue(), ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue())))


@pytest.mark.parametrize("orientation", range(2, 9))
def test_a_photo_stored_sideways_is_turned_as_its_exif_tag_says(orientation):
    from patchray.shards.images import upright

    data, shown = _photo(orientation)
    turned, done = upright(open_image(data))
    assert done == f"EXIF orientation {orientation}->upright"
    assert turned.size == shown.size == ((20, 40) if orientation >= 5 else (40, 20))
    assert np.abs(np.asarray(turned).astype(int) - np.asarray(shown.convert("RGB"))).max() <= 1
    stored, conversions = normalise_encoded(data, turn_upright=True)
    assert conversions == [done]
    again = open_image(stored)
    assert again.size == shown.size and upright(again) == (again, None)  # the tag is gone with the turn
    assert np.abs(np.asarray(again).astype(int) - np.asarray(shown.convert("RGB"))).mean() < 8  # a re-encode
    assert normalise_encoded(data) == (data, [])  # frames (mot, coco) keep their stored pixels


def test_an_upright_or_untagged_photo_is_kept_byte_for_byte():
    for orientation in (None, 1, 0, 9):  # none, "as stored", and two values no camera writes
        data, _ = _photo(orientation)
        assert normalise_encoded(data, turn_upright=True) == (data, [])
    png, _ = _photo(6, fmt="PNG")
    stored, conversions = normalise_encoded(png, turn_upright=True)
    assert conversions == ["EXIF orientation 6->upright"] and open_image(stored).size == (20, 40)
    assert open_image(stored).format == "PNG"
