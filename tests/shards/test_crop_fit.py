"""Crops of another shape fitted the authors' way (scale to the height, centre-crop or pad the width) or
stretched, the same on the data workers' CPU decoder and on the device path."""
import numpy as np
import pytest
from helpers import jpeg_bytes
from PIL import Image

from patchray.shards.decode import decode_crops, fit_geometry, place
from patchray.shards.device_decode import decode_crops_on


def _png(pixels: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_geometry_keeps_the_aspect_and_centres():
    assert fit_geometry(100, 200, 100, 200) == (100, 200, 0)      # already the shape
    assert fit_geometry(200, 200, 100, 200) == (200, 200, -50)    # a wide box: scaled to 200 high, sides cut
    assert fit_geometry(50, 400, 100, 200) == (25, 200, 37)       # a thin one: 25 wide, zero bands either side
    assert fit_geometry(200, 200, 100, 200, "stretch") == (100, 200, 0)
    row = np.arange(6)[None, :, None]
    assert place(row, 4, -1)[0, :, 0].tolist() == [1, 2, 3, 4]
    assert place(row, 8, 1)[0, :, 0].tolist() == [0, 0, 1, 2, 3, 4, 5, 0]


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_a_wide_crop_is_never_squashed(decode):
    # 200x200: a red square (the person) 60 px wide in the middle of a blue background; black bands mark the
    # outer 20 px of each side
    pixels = np.zeros((200, 200, 3), np.uint8)
    pixels[:, :, 2] = 200
    pixels[:, 70:130] = (220, 0, 0)
    pixels[:, :20] = pixels[:, 180:] = 0
    image = _png(pixels)
    if decode == "cpu":
        fitted = decode_crops([image], 100, 200)[0][0]
        stretched = decode_crops([image], 100, 200, "stretch")[0][0]
    else:
        fitted = decode_crops_on([image], 100, 200, "cpu")[0][0].numpy()
        stretched = decode_crops_on([image], 100, 200, "cpu", "stretch")[0][0].numpy()
    red = lambda im: int(((im[100, :, 0] > 150) & (im[100, :, 2] < 60)).sum())  # noqa: E731
    assert red(fitted) == 60  # the person keeps its width: centre 100 columns of the 200, at scale 1
    assert red(stretched) == 30  # squashed to half
    assert fitted[100, :10, 2].min() > 150 and fitted[100, -10:, 2].min() > 150  # the cut sides: no black bands


def test_a_thin_crop_is_padded_with_zeros_not_stretched():
    image = jpeg_bytes(50, 400, (30, 200, 30))  # green, 50x400: 25 px wide at height 200
    for pixels in (decode_crops([image], 100, 200)[0][0], decode_crops_on([image], 100, 200, "cpu")[0][0].numpy()):
        green = pixels[100, :, 1] > 150
        assert green.sum() == 25 and green[37:62].all()
        assert pixels[:, :37].max() == 0 and pixels[:, 62:].max() == 0  # zero padding, as outside a frame
