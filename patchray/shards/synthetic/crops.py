"""Whole crops: every random choice of crop (seed, index) drawn into a ``Scene``, then rendered.

The RNG is ``default_rng(SeedSequence([seed, index]))``, so a crop depends on
(seed, index) alone, not on worker count or order. The draws are taken in a
fixed order (person, background, other people, truncation, camera, label
draws); changing that order changes every crop of every seed.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from patchray.shards.synthetic.background import draw_background, sample_background
from patchray.shards.synthetic.camera import photograph, sample_camera, sample_truncation
from patchray.shards.synthetic.canvas import Canvas
from patchray.shards.synthetic.figure import draw_person
from patchray.shards.synthetic.labels import sample_label_draws, scene_labels
from patchray.shards.synthetic.people import sample_person
from patchray.shards.synthetic.scene import Scene


def sample_scene(seed: int, index: int, width: int = 100, height: int = 200) -> Scene:
    """All random choices of crop (seed, index)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    # detection jitter: the box is neither perfectly centred nor perfectly sized
    person_h = height * rng.uniform(0.74, 0.92)
    cx = width / 2 + float(np.clip(rng.normal(0, 0.05 * width), -0.12 * width, 0.12 * width))
    top = (height - person_h) / 2 + float(np.clip(rng.normal(0, 0.03 * height), -0.07 * height, 0.07 * height))
    person = sample_person(rng, cx, top, person_h)
    background = sample_background(rng, width, height)

    others = []
    n_near = 0 if rng.random() < 0.65 else (1 if rng.random() < 0.8 else 2)
    for _ in range(n_near):  # neighbours cut by the box edge
        side = 1 if rng.random() < 0.5 else -1
        oh = person_h * rng.uniform(0.75, 1.15)
        ocx = width / 2 + side * rng.uniform(0.55, 0.95) * width
        others.append(sample_person(rng, ocx, top + rng.normal(0, 0.06) * height, oh))
    if rng.random() < 0.15:  # somebody further away
        oh = person_h * rng.uniform(0.35, 0.6)
        others.append(sample_person(rng, rng.uniform(0, width), rng.uniform(-0.1, 0.5) * height, oh))
    # far-away people must be drawn first
    others.sort(key=lambda o: o.height)

    truncation, frac = sample_truncation(rng)
    camera = sample_camera(rng)
    na_draws, occlusion_draws = sample_label_draws(rng)
    return Scene(
        width=width, height=height, person=person, background=background, others=tuple(others),
        truncation=truncation, truncation_frac=frac, **camera,
        na_draws=na_draws, occlusion_draws=occlusion_draws,
    )


def render_scene(scene: Scene) -> tuple[Image.Image, dict[str, int]]:
    """Pixels and labels of a scene (pure function of the scene)."""
    canvas = Canvas(draw_background(scene.background, scene.width, scene.height))
    for other in scene.others:
        draw_person(canvas, other)
    draw_person(canvas, scene.person)
    return photograph(canvas.image, scene), scene_labels(scene)


def render_crop(seed: int, index: int, width: int = 100, height: int = 200) -> tuple[Image.Image, dict[str, int]]:
    """One synthetic pedestrian crop (RGB, width x height) and its PARSE-27k labels.

    A pure function of (seed, index).
    """
    return render_scene(sample_scene(seed, index, width, height))


def render_batch(seed: int, start: int, count: int, width: int = 100,
                 height: int = 200) -> list[tuple[Image.Image, dict[str, int]]]:
    """Crops start .. start+count-1 of one seed."""
    return [render_crop(seed, i, width, height) for i in range(start, start + count)]
