"""Colour helpers shared by the people, their clothes and the background."""
from __future__ import annotations

import colorsys

Color = tuple[int, int, int]


def hsv(h, s, v) -> Color:
    """RGB of a hue (wrapped) and a saturation and value (clipped to 0..1)."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5))


def shade(col: Color, k: float) -> Color:
    """The colour darkened (k < 1) or brightened (k > 1, clipped at 255)."""
    return (min(255, int(col[0] * k)), min(255, int(col[1] * k)), min(255, int(col[2] * k)))


def jitter(rng, col: Color, amount: float) -> Color:
    """The colour with Gaussian noise of this many levels on each channel."""
    return tuple(int(min(255, max(0, v + rng.normal(0, amount)))) for v in col)


def muted(rng) -> Color:
    """A random street colour: desaturated, neither black nor white."""
    return hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.2, 0.85))
