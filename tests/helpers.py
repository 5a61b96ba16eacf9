"""Small inputs the tests make themselves: encoded images, frames whose pixels say where they are."""
import io

import numpy as np
from PIL import Image


def jpeg_bytes(width=20, height=40, color=(200, 30, 30), mode="RGB", fmt="JPEG", noise=False):
    image = Image.new("RGB", (width, height), color)
    if noise:  # incompressible content, so that cutting the file lands inside the image data
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def person_jpeg(width=100, height=200, index=0):
    """A synthetic person crop (seed 0, ``index``) rendered at ``width x height``, as a detector's crop of that
    size would be stored (JPEG quality 90)."""
    from patchray.shards.synthetic.crops import render_scene, sample_scene

    buffer = io.BytesIO()
    render_scene(sample_scene(0, index, width, height))[0].save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def gradient_frame(width=64, height=48):
    """Frame whose pixels encode their own position: R = x, G = y."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x, y, np.full_like(x, 77)], axis=-1).astype(np.uint8)


def small_config(out, name, data, **overrides):
    from patchray import config as configlib
    from patchray.train.config import PretrainConfig

    base = {"out": str(out), "name": name, "data": [str(d) for d in data], "epochs": 2, "holdout_crops": 100,
            "patches_per_step": 64}
    return configlib.build(PretrainConfig, base | overrides)
