"""Random people: build, pose, hair and clothes, and the things they carry.

The draws here set the ground truth of most attributes (gender, posture,
orientation, bags, trolley, pram, phone); whether a label survives as N/A is
decided later, from what the crop shows (``labels.py``).
"""
from __future__ import annotations

import numpy as np

from patchray.shards.synthetic.clothing import clothing_color, sample_paint
from patchray.shards.synthetic.colors import hsv, jitter
from patchray.shards.synthetic.scene import LEFT, ORIENTATION_YAW, RIGHT, Paint, Person

SKIN_TONES = ((245, 214, 186), (234, 192, 150), (214, 166, 120), (190, 135, 90), (150, 100, 65), (100, 66, 45))
HAIR_COLORS = ((22, 18, 16), (50, 35, 25), (95, 65, 40), (185, 150, 95), (150, 148, 145), (120, 55, 28))


def sample_yaw(rng, orientation: str) -> float:
    # mostly near the class centre, sometimes anywhere in its bin: diagonal views are ambiguous
    if rng.random() < 0.7:
        off = float(np.clip(rng.normal(0, 15), -44, 44))
    else:
        off = rng.uniform(-44, 44)
    return (ORIENTATION_YAW[orientation] + off) % 360.0


def sample_person(rng, cx: float, top: float, height: float) -> Person:
    """A random person standing at (cx, top) and ``height`` pixels tall."""
    female = rng.random() < 0.5
    orientation = ("front", "back", "left", "right")[int(rng.integers(4))]
    walking = rng.random() < 0.6
    sides = (LEFT, RIGHT)

    # carried things; hands are a limited resource
    pushing = rng.random() < 0.06
    free_hands = [] if pushing else [LEFT, RIGHT]
    phone = 0
    if free_hands and rng.random() < 0.075:
        phone = free_hands.pop(int(rng.integers(len(free_hands))))
    trolley = 0
    if free_hands and rng.random() < 0.07:
        trolley = free_hands.pop(int(rng.integers(len(free_hands))))
    hand_bags = tuple(s for s in free_hands if rng.random() < 0.14)
    shoulder_bags = tuple(s for s in sides if rng.random() < 0.15)
    backpack = rng.random() < 0.17

    # the gender cue is informative, not decisive: hair, skirts, build and colours overlap
    long_hair = rng.random() < (0.68 if female else 0.1)
    legwear_u = rng.random()
    if female:
        legwear = "skirt" if legwear_u < 0.35 else ("shorts" if legwear_u < 0.45 else "trousers")
    else:
        legwear = "skirt" if legwear_u < 0.015 else ("shorts" if legwear_u < 0.13 else "trousers")
    colorful = 0.45 if female else 0.22
    upper = sample_paint(rng, colorful)
    lower = sample_paint(rng, colorful * 0.7) if rng.random() < 0.5 else Paint(clothing_color(rng, colorful * 0.5))
    skin = jitter(rng, SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], 8)
    hair_base = HAIR_COLORS[int(rng.integers(len(HAIR_COLORS)))]
    if rng.random() < 0.08:  # hats and hoods: the head top is clothing-coloured
        hair_base = clothing_color(rng, 0.3)
    # the keyword arguments are evaluated in order: their draws come from the RNG in this order
    return Person(
        cx=cx, top=top, height=height,
        yaw=sample_yaw(rng, orientation),
        walking=walking,
        lead=int(sides[int(rng.integers(2))]),
        stride=rng.uniform(0.2, 0.45),
        swing=rng.uniform(0.2, 0.5),
        stance=rng.uniform(0.0, 0.025),
        female=female,
        shoulder_w=float(rng.normal(0.9 if female else 1.02, 0.07)),
        hip_w=float(rng.normal(1.03 if female else 0.95, 0.06)),
        skin=skin,
        hair=jitter(rng, hair_base, 10),
        long_hair=long_hair,
        hair_len=rng.uniform(0.02, 0.14),
        upper=upper,
        lower=lower,
        shoes=hsv(rng.random(), rng.uniform(0, 0.4),
                  rng.uniform(0.05, 0.7) if rng.random() < 0.3 else rng.uniform(0.05, 0.25)),
        sleeve=rng.uniform(0.25, 0.45) if rng.random() < 0.3 else rng.uniform(0.85, 0.97),
        legwear=legwear,
        skirt_len=rng.uniform(0.08, 0.24),
        tights=hsv(0, 0, rng.uniform(0.05, 0.2)) if rng.random() < 0.4 else None,
        shoulder_bags=shoulder_bags,
        hand_bags=hand_bags,
        backpack=backpack,
        trolley=int(trolley),
        pushing=pushing,
        phone=int(phone),
        bag_color=clothing_color(rng, 0.3),
        bag_size=rng.uniform(0.7, 1.35),
        pack_color=clothing_color(rng, 0.35),
        trolley_color=clothing_color(rng, 0.3),
        pram_color=clothing_color(rng, 0.4),
    )
