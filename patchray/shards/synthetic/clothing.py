"""What people wear: clothing colours and patterns, drawn at random and rendered as textures."""
from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import numpy as np
from PIL import Image

from patchray.shards.synthetic.colors import Color, hsv, shade
from patchray.shards.synthetic.scene import Paint


def clothing_color(rng, colorful: float) -> Color:
    """A garment colour: saturated with probability ``colorful``, else dark or neutral."""
    u = rng.random()
    if u < colorful:
        return hsv(rng.random(), rng.uniform(0.3, 0.85), rng.uniform(0.3, 0.9))
    if u < colorful + (1 - colorful) * 0.55:  # dark: black, navy, brown
        return hsv(rng.random(), rng.uniform(0.0, 0.45), rng.uniform(0.07, 0.32))
    return hsv(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.35, 0.95))  # greys, beige, white


def sample_paint(rng, colorful: float) -> Paint:
    """A garment surface: mostly solid, else stripes, checks or mottled fabric."""
    color = clothing_color(rng, colorful)
    u = rng.random()
    if u < 0.58:
        return Paint(color)
    color2 = clothing_color(rng, colorful) if rng.random() < 0.6 else shade(color, rng.uniform(0.5, 0.8))
    seed = int(rng.integers(2**31))
    if u < 0.74:
        angle = (math.pi / 2 if rng.random() < 0.7 else 0.0) + rng.normal(0, 0.15)
        return Paint(color, "stripes", color2, rng.uniform(2.5, 7.0), angle, seed)
    if u < 0.85:
        return Paint(color, "checks", color2, rng.uniform(3.0, 7.0), rng.normal(0, 0.1), seed)
    return Paint(color, "noise", shade(color, rng.uniform(0.55, 0.85)), 6.0, 0.0, seed)


def shaded_paint(paint: Paint, k: float) -> Paint:
    """The same garment in shadow (k < 1): both of its colours darkened."""
    if k == 1.0:
        return paint
    return replace(paint, color=shade(paint.color, k), color2=shade(paint.color2, k))


@lru_cache(maxsize=8)
def _pixel_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return yy, xx


def paint_texture(paint: Paint, width: int, height: int) -> Image.Image:
    """The patterned paint over a whole crop; shapes cut their fill out of it."""
    if paint.pattern == "noise":
        # mottled fabric: a coarse random field, smoothly upsampled, blends the two colours
        rng = np.random.default_rng(paint.seed)
        small = (rng.random((height // 6 + 2, width // 6 + 2)) * 255).astype(np.uint8)
        weight = Image.fromarray(small, "L").resize((width, height), Image.BILINEAR)
    else:
        yy, xx = _pixel_grid(width, height)
        ca, sa = math.cos(paint.angle), math.sin(paint.angle)
        u = np.floor((xx * ca + yy * sa) * (1.0 / paint.period))
        if paint.pattern == "checks":
            u += np.floor((yy * ca - xx * sa) * (1.0 / paint.period))
        weight = Image.fromarray((u.astype(np.int32) & 1).astype(np.uint8) * 255, "L")
    texture = Image.new("RGB", (width, height), paint.color)
    texture.paste(paint.color2, (0, 0), weight)
    return texture
