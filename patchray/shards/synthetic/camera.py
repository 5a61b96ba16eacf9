"""What the camera and the detector do to a crop: exposure and colour cast, sensor noise,
softness, zero padding where the detector box left the image, and upsampling of small detections.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from patchray.shards.synthetic.scene import Scene

_NOISE_TABLE: np.ndarray | None = None


def sample_truncation(rng) -> tuple[str | None, float]:
    """Which border of the detector box left the image, if any, and the zero-filled fraction of the crop."""
    truncation, frac = None, 0.0
    if rng.random() < 0.1:
        u = rng.random()
        if u < 0.45:
            truncation, frac = "bottom", rng.uniform(0.08, 0.35)
        elif u < 0.6:
            truncation, frac = "top", rng.uniform(0.05, 0.25)
        else:
            truncation, frac = ("left" if u < 0.8 else "right"), rng.uniform(0.1, 0.4)
    return truncation, frac


def sample_camera(rng) -> dict:
    """The ``Scene`` fields of the camera: gain, cast, noise_sigma, noise_seed, downscale, blur."""
    # drawn one after the other, in this order: the order of the RNG draws is part of the dataset
    gain = rng.uniform(0.7, 1.2)
    cast = tuple(float(v) for v in rng.normal(0, 7, 3))
    noise_sigma = rng.uniform(2, 10)
    noise_seed = int(rng.integers(2**31))
    downscale = rng.uniform(0.45, 0.85) if rng.random() < 0.4 else 1.0
    blur = rng.uniform(0.3, 1.1)
    return {"gain": gain, "cast": cast, "noise_sigma": noise_sigma, "noise_seed": noise_seed,
            "downscale": downscale, "blur": blur}


def photograph(image: Image.Image, scene: Scene) -> Image.Image:
    """The drawn scene as the detector's crop of a camera frame."""
    w, h = scene.width, scene.height
    # camera: exposure, colour cast, sensor noise, optics / compression softness
    arr = np.asarray(image, dtype=np.float32)
    if scene.gain != 1.0 or any(scene.cast):
        arr = arr * np.float32(scene.gain) + np.asarray(scene.cast, np.float32)
    if scene.noise_sigma > 0:
        arr = arr + _noise(scene.noise_seed, arr.shape) * np.float32(scene.noise_sigma)
    if scene.blur > 0:
        arr = _blur(arr, scene.blur)
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    # the detector box left the image: that part is zero padding, added before
    # the box is rescaled to the crop size (the optional resize below)
    band = truncated_band(scene)
    if band is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in band)
        arr[y0:y1, x0:x1] = 0
    image = Image.fromarray(arr, "RGB")
    if scene.downscale < 1.0:  # small detection, upsampled to the crop size
        small = (max(8, int(w * scene.downscale)), max(16, int(h * scene.downscale)))
        image = image.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)
    return image


def truncated_band(scene: Scene) -> tuple[float, float, float, float] | None:
    """The zero-padded part of the crop (x0, y0, x1, y1), or None if the box lay inside the image."""
    w, h, t = scene.width, scene.height, scene.truncation_frac
    if scene.truncation is None or t <= 0:
        return None
    return {"top": (0, 0, w, t * h), "bottom": (0, h - t * h, w, h),
            "left": (0, 0, t * w, h), "right": (w - t * w, 0, w, h)}[scene.truncation]


def _noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Unit Gaussian sensor noise: a window of a fixed table chosen by ``seed``.

    Drawing 60k normals per crop would cost more than drawing the person; a
    window at a pseudo-random offset into one table is as good for noise and
    is still a pure function of the seed.
    """
    global _NOISE_TABLE
    n = int(np.prod(shape))
    if _NOISE_TABLE is None or _NOISE_TABLE.size < 4 * n:
        _NOISE_TABLE = np.random.default_rng(20160919).standard_normal(max(1 << 21, 8 * n), dtype=np.float32)
    offset = seed % (_NOISE_TABLE.size - n)
    return _NOISE_TABLE[offset:offset + n].reshape(shape)


def _blur(arr: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian-like blur of an [H, W, C] float image with 3-tap [w, 1-2w, w] passes (edges replicated)."""
    variance = sigma * sigma
    passes = 1 if variance <= 0.5 else 2  # one 3-tap pass has variance 2w <= 0.5
    w = np.float32(variance / (2 * passes))
    for _ in range(passes):
        for axis in (0, 1):
            a = np.moveaxis(arr, axis, 0)
            side = a * w
            out = a - 2 * side
            out[1:] += side[:-1]
            out[:-1] += side[1:]
            out[0] += side[0]
            out[-1] += side[-1]
            arr = np.moveaxis(out, 0, axis)
    return arr
