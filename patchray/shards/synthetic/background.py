"""The street behind the person: a colour gradient, an optional ground plane and clutter shapes."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from patchray.shards.synthetic.colors import muted
from patchray.shards.synthetic.scene import Background


def sample_background(rng, width: int, height: int) -> Background:
    """A random backdrop: a colour gradient, maybe a ground plane, and 2 to 8 rectangles, ellipses, poles and lines."""
    shapes = []
    for _ in range(int(rng.integers(2, 9))):
        kind = ("rect", "rect", "ellipse", "pole", "line")[int(rng.integers(5))]
        col = muted(rng)
        if kind == "pole":
            x = rng.uniform(-5, width + 5)
            w = rng.uniform(2, 8)
            y0 = rng.uniform(-0.2, 0.6) * height
            shapes.append((kind, x, y0, x + w, y0 + rng.uniform(0.3, 1.2) * height, col, 0))
        elif kind == "line":
            shapes.append((kind, rng.uniform(-10, width + 10), rng.uniform(-10, height + 10),
                           rng.uniform(-10, width + 10), rng.uniform(-10, height + 10), col, int(rng.integers(1, 4))))
        else:
            x0, y0 = rng.uniform(-0.3, 1.0) * width, rng.uniform(-0.2, 1.0) * height
            shapes.append((kind, x0, y0, x0 + rng.uniform(0.1, 0.8) * width, y0 + rng.uniform(0.05, 0.4) * height,
                           col, 0))
    return Background(
        color_a=muted(rng),
        color_b=muted(rng),
        gradient_angle=rng.uniform(0, 2 * math.pi),
        horizon=rng.uniform(0.1, 0.95) if rng.random() < 0.7 else None,
        horizon_tilt=rng.normal(0, 0.1) * width,
        ground=muted(rng),
        shapes=tuple(shapes),
    )


def draw_background(bg: Background, width: int, height: int) -> Image.Image:
    """The backdrop as a fresh RGB image, for the people to be drawn on."""
    # the gradient is smooth, so it is computed on a coarse grid and upsampled
    gw, gh = max(2, width // 8), max(2, height // 8)
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    xx = (xx + 0.5) * (width / gw)
    yy = (yy + 0.5) * (height / gh)
    ca, sa = math.cos(bg.gradient_angle), math.sin(bg.gradient_angle)
    u = xx * ca + yy * sa
    corners = [0 * ca + 0 * sa, width * ca, height * sa, width * ca + height * sa]
    lo, hi = min(corners), max(corners)
    t = ((u - lo) / max(hi - lo, 1e-6))[..., None]
    a, b = np.array(bg.color_a, np.float32), np.array(bg.color_b, np.float32)
    arr = (a + (b - a) * t).astype(np.uint8)
    image = Image.fromarray(arr, "RGB").resize((width, height), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    if bg.horizon is not None:
        yl = bg.horizon * height + bg.horizon_tilt / 2
        yr = bg.horizon * height - bg.horizon_tilt / 2
        draw.polygon([(0, yl), (width, yr), (width, height), (0, height)], fill=bg.ground)
    for kind, x0, y0, x1, y1, col, lw in bg.shapes:
        if kind == "rect" or kind == "pole":
            draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=col)
        elif kind == "ellipse":
            draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=col)
        else:
            draw.line([(x0, y0), (x1, y1)], fill=col, width=lw)
    return image
