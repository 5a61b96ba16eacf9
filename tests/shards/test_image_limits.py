"""Decompression bombs: an image whose header claims more than MAX_IMAGE_PIXELS is refused from the header, at
ingest and in training decode (CPU, and the GPU path before nvJPEG), as ``image_too_large``."""
import io
import json
import struct
import zlib

import numpy as np
import pytest
from helpers import gradient_frame, jpeg_bytes
from PIL import Image

from patchray.shards.cli import main
from patchray.shards.decode import decode_crops
from patchray.shards.device_decode import decode_crops_on
from patchray.shards.images import MAX_IMAGE_PIXELS, BadImage, header_size, jpeg_size, open_image, png_size
from patchray.shards.ingest.boxes import MAX_CROP_PIXELS

# 120 MP: over MAX_IMAGE_PIXELS, under PIL's own DecompressionBombError (2 x 89.5 MP), which ingest used to
# silence to a warning and then decode.
BOMB = (12000, 10000)


def jpeg_claiming(width, height, **save):
    """A small real JPEG whose frame header claims ``width x height``."""
    buffer = io.BytesIO()
    Image.fromarray(gradient_frame(32, 16)).save(buffer, format="JPEG", **save)
    data = bytearray(buffer.getvalue())
    size = jpeg_size(bytes(data))
    assert size == (32, 16)
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_claiming(width, height):
    data = bytearray(jpeg_bytes(8, 8, fmt="PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_limits_are_consistent():
    assert MAX_CROP_PIXELS < MAX_IMAGE_PIXELS  # every crop ingest writes decodes again in training
    assert BOMB[0] * BOMB[1] > MAX_IMAGE_PIXELS


@pytest.mark.parametrize("save", [{}, {"progressive": True}, {"quality": 50, "subsampling": 0}])
def test_jpeg_size_reads_the_frame_header_as_pil_does(save):
    image = Image.fromarray(gradient_frame(77, 33))
    for mode in ("RGB", "L", "CMYK"):
        buffer = io.BytesIO()
        exif = Image.Exif()
        exif[0x010E] = "x" * 3000  # a large APP1 segment before the frame header
        image.convert(mode).save(buffer, format="JPEG", exif=exif, **save)
        data = buffer.getvalue()
        assert jpeg_size(data, strict=True) == jpeg_size(data) == Image.open(io.BytesIO(data)).size == (77, 33)
        # fill bytes before a marker are legal; stray bytes are not, but libjpeg skips them (so must the check)
        filled = data[:2] + b"\xff\xff\xff" + data[2:]
        assert jpeg_size(filled, strict=True) == (77, 33)
        stray = data[:2] + b"\x00garbage" + data[2:]
        assert jpeg_size(stray) == (77, 33) and jpeg_size(stray, strict=True) is None
    assert png_size(jpeg_bytes(9, 4, fmt="PNG")) == (9, 4) == header_size(jpeg_bytes(9, 4, fmt="PNG"))
    for junk in (b"", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", b"\xff\xd8\xff\xe0\x00\x01", b"GIF89a"):
        assert jpeg_size(junk) is None and header_size(junk) is None


def test_open_image_refuses_images_over_the_limit():
    for data in (jpeg_claiming(*BOMB), png_claiming(*BOMB), png_claiming(100_000, 100_000),
                 jpeg_claiming(65535, 65535)):
        with pytest.raises(BadImage) as err:
            open_image(data)
        assert err.value.reason == "image_too_large"
    # a format without a header check: PIL's header decides, before decoding
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="BMP")
    bmp = bytearray(buffer.getvalue())
    bmp[18:26] = struct.pack("<ii", BOMB[0], BOMB[1])
    with pytest.raises(BadImage) as err:
        open_image(bytes(bmp))
    assert err.value.reason == "image_too_large"


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_training_decode_refuses_bombs_before_decoding(decode):
    good = jpeg_bytes(100, 200, (250, 10, 10))
    rows = [jpeg_claiming(*BOMB), good, png_claiming(*BOMB), jpeg_claiming(*BOMB, progressive=True),
            jpeg_claiming(1000, 800)]
    if decode == "cpu":
        pixels, reasons = decode_crops(rows, 100, 200)
    else:  # the GPU path's checks, run on the CPU (nvJPEG itself needs a GPU)
        tensor, reasons = decode_crops_on(rows, 100, 200, "cpu")
        pixels = tensor.numpy()
    # 0.8 MP is allowed: that header passes and the (small) data is decoded as far as it goes
    assert reasons[:4] == ["image_too_large", "", "image_too_large", "image_too_large"]
    assert pixels[[0, 2, 3]].max() == 0
    assert tuple(np.round(pixels[1].reshape(-1, 3).mean(0) / 10)) == (25, 1, 1)


def test_ingest_counts_bombs_as_image_too_large(tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    (crops / "bomb.jpg").write_bytes(jpeg_claiming(*BOMB))
    (crops / "bomb.png").write_bytes(png_claiming(*BOMB))
    (crops / "ok.jpg").write_bytes(jpeg_bytes())
    out = tmp_path / "out"
    assert main(["folder", "--crops", str(crops), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["crops_written"] == 1 and summary["skipped"] == {"image_too_large": 2}

    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "000001.jpg").write_bytes(jpeg_claiming(*BOMB))
    boxes = tmp_path / "det.txt"
    boxes.write_text("1,1,0,0,10,10,1\n1,2,5,5,10,10,1\n")
    out = tmp_path / "out2"
    assert main(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["skipped"] == {"image_too_large": 2}
