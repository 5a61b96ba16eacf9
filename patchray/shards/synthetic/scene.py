"""What a crop shows, as plain data: the ``Scene`` and the people and background in it.

Every random choice of a crop is drawn into these frozen records first and
only then turned into pixels and labels, so tests can force a choice with
``dataclasses.replace`` and check the drawing and the labels against it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from patchray.shards.attributes import PARSE27K
from patchray.shards.synthetic.colors import Color

# Sides are signs of the lateral coordinate s (person's own left is +s).
LEFT, RIGHT = 1, -1
SIDE_NAME = {LEFT: "Left", RIGHT: "Right"}

# Yaw at the centre of each orientation class (degrees, see the package docstring).
ORIENTATION_YAW = {"front": 0.0, "left": 90.0, "back": 180.0, "right": 270.0}


@dataclass(frozen=True)
class Paint:
    """A garment's surface: solid colour, or a pattern fixed in image coordinates."""
    color: Color
    pattern: str = "solid"  # solid | stripes | checks | noise
    color2: Color = (0, 0, 0)
    period: float = 6.0
    angle: float = 0.0  # radians, direction across the stripes
    seed: int = 0

    def mirrored(self) -> Paint:
        return replace(self, angle=math.pi - self.angle)


@dataclass(frozen=True)
class Person:
    # placement in the crop, pixels
    cx: float
    top: float
    height: float
    # pose
    yaw: float  # degrees
    walking: bool
    lead: int  # side whose leg is forward when walking
    stride: float  # radians
    swing: float  # radians
    stance: float  # lateral foot spread, body heights
    # build and appearance
    female: bool
    shoulder_w: float
    hip_w: float
    skin: Color
    hair: Color
    long_hair: bool
    hair_len: float
    upper: Paint
    lower: Paint
    shoes: Color
    sleeve: float  # fraction of the arm covered by the sleeve
    legwear: str  # trousers | shorts | skirt
    skirt_len: float
    tights: Color | None
    # carried things (sides are LEFT / RIGHT, 0 = none)
    shoulder_bags: tuple[int, ...] = ()
    hand_bags: tuple[int, ...] = ()
    backpack: bool = False
    trolley: int = 0
    pushing: bool = False
    phone: int = 0
    bag_color: Color = (60, 40, 30)
    bag_size: float = 1.0
    pack_color: Color = (40, 40, 60)
    trolley_color: Color = (30, 30, 30)
    pram_color: Color = (50, 50, 70)

    def mirrored(self, width: float) -> Person:
        return replace(
            self, cx=width - self.cx, yaw=(-self.yaw) % 360.0, lead=-self.lead,
            upper=self.upper.mirrored(), lower=self.lower.mirrored(),
            shoulder_bags=tuple(-s for s in self.shoulder_bags), hand_bags=tuple(-s for s in self.hand_bags),
            trolley=-self.trolley, phone=-self.phone,
        )


@dataclass(frozen=True)
class Background:
    color_a: Color
    color_b: Color
    gradient_angle: float  # radians; random per crop so brightness says nothing about height
    horizon: float | None  # fraction of crop height, None = no ground plane
    horizon_tilt: float  # pixels of rise across the crop width
    ground: Color
    # (kind, x0, y0, x1, y1, colour, line width); kinds: rect, ellipse, pole, line
    shapes: tuple[tuple, ...] = ()

    def mirrored(self, width: float) -> Background:
        shapes = tuple((k, width - x1, y0, width - x0, y1, col, lw) if k != "line" else
                       (k, width - x0, y0, width - x1, y1, col, lw)
                       for k, x0, y0, x1, y1, col, lw in self.shapes)
        return replace(self, gradient_angle=math.pi - self.gradient_angle, horizon_tilt=-self.horizon_tilt,
                       shapes=shapes)


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    person: Person
    background: Background
    others: tuple[Person, ...] = ()
    truncation: str | None = None  # which crop border left the image: top | bottom | left | right
    truncation_frac: float = 0.0  # zero-filled fraction of the crop along that axis
    gain: float = 1.0
    cast: tuple[float, float, float] = (0.0, 0.0, 0.0)
    noise_sigma: float = 0.0
    noise_seed: int = 0
    downscale: float = 1.0  # <1: the crop was upsampled from a smaller detection
    blur: float = 0.0
    # uniform draws deciding random N/A, one per attribute in PARSE27K order
    na_draws: tuple[float, ...] = field(default_factory=lambda: (1.0,) * len(PARSE27K))
    # uniform draws deciding far-side N/A in profile, for (LEFT, RIGHT)
    occlusion_draws: tuple[float, float] = (1.0, 1.0)


def mirror_scene(scene: Scene) -> Scene:
    """The scene seen in a horizontal mirror: a valid scene whose labels are the mirrored labels."""
    w = scene.width
    names = PARSE27K.names
    partner = [names.index(a.mirror_partner) if a.mirror_partner else i for i, a in enumerate(PARSE27K)]
    side_swap = {"left": "right", "right": "left"}
    return replace(
        scene,
        person=scene.person.mirrored(w),
        background=scene.background.mirrored(w),
        others=tuple(o.mirrored(w) for o in scene.others),
        truncation=side_swap.get(scene.truncation, scene.truncation),
        cast=scene.cast,
        na_draws=tuple(scene.na_draws[partner[i]] for i in range(len(names))),
        occlusion_draws=(scene.occlusion_draws[1], scene.occlusion_draws[0]),
    )


def orientation_of(yaw: float) -> str:
    """4-way orientation class of a yaw angle in degrees (bins of 90 degrees around each centre)."""
    k = int(((yaw % 360.0) + 45.0) // 90.0) % 4
    return ("front", "left", "back", "right")[k]
