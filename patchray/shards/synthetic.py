"""Procedural PARSE-27k-like pedestrian crops, rendered with Pillow and numpy.

``render_crop(seed, index)`` draws one "detector box" around a synthetic
pedestrian and returns it with the ten PARSE-27k attribute labels
(see ``patchray.shards.attributes.PARSE27K``; 0 = N/A, else 1..K).

How a crop is made:

1. ``sample_scene`` draws every random choice into a frozen ``Scene`` (person,
   background, other people, detection jitter, truncation, noise, blur). The
   RNG is ``default_rng(SeedSequence([seed, index]))``, so a crop depends on
   (seed, index) alone, not on worker count or order.
2. ``render_scene`` turns a ``Scene`` into pixels and ``scene_labels`` into
   labels. Both are pure functions of the ``Scene``; tests build scenes with
   forced choices (``dataclasses.replace``) to check the geometry.

The person is a 2.5D puppet: body points live in person coordinates
(s = lateral toward the person's own LEFT, f = forward, y = down, in units of
body height) and are projected orthographically for a yaw angle. Parts are
painted back to front by depth, so the same code yields front, back and
profile views, hides the far-side arm and bag in profile, and mirrors exactly
under ``mirror_scene`` (yaw -> -yaw, left <-> right, x -> width - x).

Conventions: yaw 0 = facing the camera, 90 = facing the LEFT image edge
(Orientation "left"; the person's left side then faces the camera), 180 = back,
270 = facing right. Left/right attributes are the person's own sides.

Speed: 1.7 ms per 100x200 crop on one core, 1.85 ms including JPEG encoding
at quality 92 (measured over 2000 crops in one process on a shared Intel Xeon
container), so 20,000 crops take about 20 s on 2 cores.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from patchray.shards.attributes import PARSE27K

# Sides are signs of the lateral coordinate s (person's own left is +s).
LEFT, RIGHT = 1, -1
SIDE_NAME = {LEFT: "Left", RIGHT: "Right"}

# Yaw at the centre of each orientation class (degrees, see module docstring).
ORIENTATION_YAW = {"front": 0.0, "left": 90.0, "back": 180.0, "right": 270.0}

# The camera looks slightly down on the street: a point nearer the camera is
# drawn a little lower, which makes front-view strides and feet visible.
ELEVATION = 0.12

# Painter's keys: parts are drawn in increasing key = depth + layer offset.
# Limbs and carried items sit outside the torso surface, hence the offset.
LIMB_LAYER = 0.06
HEAD_LAYER = 0.25

# Random N/A rate per attribute (annotator could not decide), on top of
# the N/A rules for occlusion and truncation.
RANDOM_NA_RATE = {"Orientation": 0.01, "Gender": 0.04, "Posture": 0.02}
DEFAULT_RANDOM_NA_RATE = 0.015
# In near-profile views the far-side bag attributes are N/A this often.
FAR_SIDE_NA_RATE = 0.8
# A cue region must be at least this visible (inside the crop, outside the
# zero padding) for its attribute to be labeled.
MIN_VISIBLE = {"Posture": 0.5, "isTalkingOnPhone": 0.5}
DEFAULT_MIN_VISIBLE = 0.4

Color = tuple[int, int, int]


# ----------------------------------------------------------------------------- scene description

@dataclass(frozen=True)
class Paint:
    """A garment's surface: solid colour, or a pattern fixed in image coordinates."""
    color: Color
    pattern: str = "solid"  # solid | stripes | checks | noise
    color2: Color = (0, 0, 0)
    period: float = 6.0
    angle: float = 0.0  # radians, direction across the stripes
    seed: int = 0

    def mirrored(self) -> "Paint":
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

    def mirrored(self, width: float) -> "Person":
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

    def mirrored(self, width: float) -> "Background":
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


# ----------------------------------------------------------------------------- the figure

def _limb(draw, pts, width, fill):
    """Thick polyline with round ends and joints."""
    w = max(1, int(round(width)))
    draw.line(pts, fill=fill, width=w, joint="curve")
    r = w / 2.0
    for x, y in (pts[0], pts[-1]):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def _ellipse(draw, x, y, rx, ry, fill):
    draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=fill)


def _lerp(a, b, t):
    return tuple(u + (v - u) * t for u, v in zip(a, b))


def _shade(col: Color, k: float) -> Color:
    return (min(255, int(col[0] * k)), min(255, int(col[1] * k)), min(255, int(col[2] * k)))


def _box_half_width(a: float, b: float, c: float, sn: float) -> float:
    """Projected half-width of a box with half-extents a (lateral) and b (forward)."""
    return a * abs(c) + b * abs(sn)


class _Figure:
    """Pose of one person: 3D joints, their projection, the drawing parts and the cue regions."""

    def __init__(self, p: Person):
        self.p = p
        yaw = math.radians(p.yaw)
        self.c, self.sn = math.cos(yaw), math.sin(yaw)
        self.H = p.height
        self.Ws = 0.118 * p.shoulder_w  # shoulder half-width
        self.Wh = 0.092 * p.hip_w  # hip half-width
        self._legs()
        self._arms()

    # projection -------------------------------------------------------------
    def depth(self, s, f):
        return s * self.sn + f * self.c

    def P(self, s, f, y):
        """Person coordinates (body heights) -> crop pixels."""
        H = self.H
        return (self.p.cx + H * (s * self.c - f * self.sn),
                self.p.top + H * (y + self.dy + ELEVATION * (s * self.sn + f * self.c)))

    def Pt(self, pt):
        return self.P(*pt)

    # skeleton ---------------------------------------------------------------
    def _legs(self):
        p = self.p
        self.legs = {}
        for side in (LEFT, RIGHT):
            trailing = False
            if p.walking:
                if side == p.lead:
                    a1, a2 = p.stride, 0.55 * p.stride
                else:
                    a1, a2, trailing = -0.7 * p.stride, -1.6 * p.stride, True
            else:
                a1 = a2 = 0.0
            s_hip = side * 0.052 * p.hip_w
            s_ankle = s_hip + side * p.stance
            hip = (s_hip, 0.0, 0.50)
            knee = ((s_hip + s_ankle) / 2, 0.245 * math.sin(a1), 0.50 + 0.245 * math.cos(a1))
            ankle = (s_ankle, knee[1] + 0.235 * math.sin(a2), knee[2] + 0.235 * math.cos(a2))
            if trailing:  # pushing off: heel up, toe down
                heel = (s_ankle, ankle[1] - 0.02, ankle[2] + 0.005)
                toe = (s_ankle, ankle[1] + 0.055, ankle[2] + 0.03)
            else:
                heel = (s_ankle, ankle[1] - 0.02, ankle[2] + 0.025)
                toe = (s_ankle, ankle[1] + 0.065, ankle[2] + 0.022)
            self.legs[side] = (hip, knee, ankle, heel, toe)
        # drop the body so that the lowest sole touches y = 1 (with the foot's thickness)
        sole = max(max(leg[3][2], leg[4][2]) for leg in self.legs.values())
        self.dy = 0.985 - sole

    def _arms(self):
        p = self.p
        self.arms = {}
        Ws = self.Ws
        for side in (LEFT, RIGHT):
            sh = (side * Ws * 0.84, 0.0, 0.19)
            if p.pushing:
                el = (side * Ws * 0.95, 0.09, 0.32)
                hd = (side * 0.075, 0.17, 0.44)
            elif p.phone == side:
                el = (side * (Ws + 0.035), 0.05, 0.31)
                hd = (side * 0.05, 0.035, 0.085)
            elif p.trolley == side:
                el = (side * (Ws + 0.012), -0.045, 0.34)
                hd = (side * (Ws + 0.03), -0.10, 0.47)
            else:
                if p.walking:
                    forward = side != p.lead  # arms swing against the legs
                    b1 = p.swing if forward else -0.8 * p.swing
                    b2 = b1 + (0.45 if forward else 0.12)
                    if side in p.hand_bags:  # a loaded hand swings less
                        b1, b2 = 0.3 * b1, 0.3 * b1
                else:
                    b1, b2 = 0.0, 0.12
                el = (sh[0] + side * 0.014, 0.16 * math.sin(b1), sh[2] + 0.16 * math.cos(b1))
                hd = (el[0] + side * 0.006, el[1] + 0.15 * math.sin(b2), el[2] + 0.15 * math.cos(b2))
            self.arms[side] = (sh, el, hd)

    def torso_half_width(self, y):
        """Projected torso half-width in pixels at body height y (piecewise linear chest -> waist -> hip)."""
        p = self.p
        waist_w = self.Wh * (0.88 if p.female else 0.97)
        if y <= 0.36:
            t = (y - 0.18) / 0.18
            W, D = self.Ws + (waist_w - self.Ws) * t, 0.058 - 0.008 * t
        else:
            t = (y - 0.36) / 0.16
            W, D = waist_w + (self.Wh - waist_w) * t, 0.05 + 0.01 * t
        return math.hypot(W * self.c, D * self.sn) * self.H

    # regions for label visibility --------------------------------------------
    def regions(self) -> dict[str, tuple[float, float, float, float]]:
        H = self.H
        cx = self.p.cx

        def box(pts, pad_x, pad_top, pad_bottom):
            xs = [q[0] for q in pts]
            ys = [q[1] for q in pts]
            return (min(xs) - pad_x * H, min(ys) - pad_top * H, max(xs) + pad_x * H, max(ys) + pad_bottom * H)

        head = self.P(0, 0.01, 0.065)
        hw = self.torso_half_width(0.19) / H
        out = {
            "head": box([head], 0.06, 0.07, 0.07),
            "upper": box([self.P(0, 0, 0.0), self.P(0, 0, 0.5)], hw + 0.02, 0, 0),
            "torso": box([self.P(0, 0, 0.18), self.P(0, 0, 0.5)], hw, 0, 0),
            "legs": box([self.Pt(leg[i]) for leg in self.legs.values() for i in (1, 3, 4)], 0.03, 0, 0.01),
            "lower_wide": (cx - 0.3 * H, self.P(0, 0, 0.5)[1], cx + 0.3 * H, self.P(0, 0, 1.0)[1]),
        }
        for side in (LEFT, RIGHT):
            hd = self.Pt(self.arms[side][2])
            out["hand" + SIDE_NAME[side]] = box([hd], 0.06, 0.03, 0.2)
            sh = self.P(side * self.Ws, 0, 0.17)
            out["hip" + SIDE_NAME[side]] = box([sh, self.P(side * self.Ws, 0, 0.58)], 0.07, 0, 0)
        return out

    # drawing ------------------------------------------------------------------
    def parts(self) -> list[tuple[float, object]]:
        """(painter's key, draw function(canvas)) for every part of this person."""
        p = self.p
        parts = []
        far = -0.02  # parts deeper than this are in shadow

        # legs and feet
        leg_keys = []
        for side in (LEFT, RIGHT):
            hip = self.legs[side][0]
            key = self.depth(hip[0], hip[1])
            leg_keys.append(key)
            parts.append((key, self._leg_fn(side, key < far)))
        if p.legwear == "skirt":
            parts.append((max(leg_keys) + 0.001, self._skirt_fn()))

        # torso and neck
        parts.append((-0.011, self._neck_fn()))
        parts.append((-0.01, self._torso_fn()))

        # arms
        for side in (LEFT, RIGHT):
            sh, _, hd = self.arms[side]
            d = 0.5 * (self.depth(hd[0], hd[1]) + self.depth(sh[0], sh[1]))
            if p.phone == side:  # the raised hand is in front of the head unless seen from behind
                key = HEAD_LAYER + (0.01 if self.depth(hd[0], hd[1]) > -0.02 else -0.01)
            else:
                key = d + LIMB_LAYER
            parts.append((key, self._arm_fn(side, self.depth(sh[0], sh[1]) < far)))

        # head and hair
        if p.long_hair:
            parts.append((-0.015 * self.c - 0.015, self._long_hair_fn()))
        parts.append((HEAD_LAYER, self._head_fn()))

        # carried things
        if p.backpack:
            f = -(0.058 + 0.045)
            parts.append((self.depth(0, f) + LIMB_LAYER, self._backpack_fn()))
            if self.c > 0:
                parts.append((self.depth(0, 0.058) + LIMB_LAYER + 0.001, self._pack_straps_fn()))
        for side in p.shoulder_bags:
            parts.append((self.depth(side * (self.Wh + 0.03), 0.02) + LIMB_LAYER - 0.001, self._shoulder_bag_fn(side)))
        for side in p.hand_bags:
            sh, _, hd = self.arms[side]
            d = 0.5 * (self.depth(hd[0], hd[1]) + self.depth(sh[0], sh[1]))
            parts.append((d + LIMB_LAYER + 0.002, self._hand_bag_fn(side)))  # just in front of its arm
        if p.trolley:
            parts.append((self.depth(p.trolley * (self.Ws + 0.03), -0.27) + LIMB_LAYER, self._trolley_fn(p.trolley)))
        if p.pushing:
            parts.append((self.depth(0, 0.27) + LIMB_LAYER, self._pram_fn()))
        return parts

    def _leg_fn(self, side, shadow):
        p, H = self.p, self.H
        hip, knee, ankle, heel, toe = (self.Pt(q) for q in self.legs[side])
        k = 0.8 if shadow else 1.0
        thigh_w = (0.066 if not p.female else 0.06) * H * p.hip_w
        shin_w = 0.05 * H
        foot_w = 0.03 * H + abs(self.c) * 0.016 * H
        skin = _shade(p.skin, k)
        leg_paint = _shade(p.tights, k) if p.tights else skin

        def draw(canvas):
            if p.legwear == "trousers":
                lower = _shaded_paint(p.lower, k)
                canvas.paint(lower, lambda d, f: (_limb(d, [hip, knee], thigh_w, f), _limb(d, [knee, ankle], shin_w, f)))
            else:
                d = canvas.draw
                _limb(d, [hip, knee], thigh_w * 0.92, leg_paint)
                _limb(d, [knee, ankle], shin_w * 0.85, leg_paint)
                if p.legwear == "shorts":
                    lower = _shaded_paint(p.lower, k)
                    end = _lerp(hip, knee, 0.75)
                    canvas.paint(lower, lambda d, f: _limb(d, [hip, end], thigh_w * 1.05, f))
            _limb(canvas.draw, [heel, toe], foot_w, _shade(p.shoes, k))
        return draw

    def _skirt_fn(self):
        p, H = self.p, self.H
        y0, y1 = 0.40, 0.50 + p.skirt_len
        top_w = self.torso_half_width(0.46)
        cx0, yy0 = self.P(0, 0, y0)
        cx1, yy1 = self.P(0, 0, y1)
        bottom_w = top_w * 1.25 + 0.03 * H * abs(self.sn)
        poly = [(cx0 - top_w, yy0), (cx0 + top_w, yy0), (cx1 + bottom_w, yy1), (cx1 - bottom_w, yy1)]
        return lambda canvas: canvas.paint(p.lower, lambda d, f: d.polygon(poly, fill=f))

    def _neck_fn(self):
        p, H = self.p, self.H
        x0, y0 = self.P(0, 0.005, 0.11)
        x1, y1 = self.P(0, 0.0, 0.2)
        r = 0.023 * H
        return lambda canvas: canvas.draw.polygon([(x0 - r, y0), (x0 + r, y0), (x1 + r, y1), (x1 - r, y1)], fill=p.skin)

    def _torso_fn(self):
        p, H = self.p, self.H
        lean = 0.015 if p.walking else 0.0
        ys = (0.18, 0.36, 0.52)
        pts_left, pts_right = [], []
        for y in ys:
            x, yy = self.P(0, lean * (0.52 - y) / 0.34, y)
            w = self.torso_half_width(y)
            pts_left.append((x - w, yy))
            pts_right.append((x + w, yy))
        (lx, ly), (rx, ry) = pts_left[0], pts_right[0]
        sh_r = 0.03 * H  # round shoulders
        poly = ([(lx, ly + sh_r), (lx + sh_r * 0.6, ly - 0.01 * H), (rx - sh_r * 0.6, ry - 0.01 * H), (rx, ry + sh_r)]
                + pts_right[1:] + pts_left[1:][::-1])

        def draw(canvas):
            def shape(d, f):
                d.polygon(poly, fill=f)
                _ellipse(d, lx + sh_r * 0.7, ly + sh_r * 0.7, sh_r * 0.8, sh_r * 0.8, f)
                _ellipse(d, rx - sh_r * 0.7, ry + sh_r * 0.7, sh_r * 0.8, sh_r * 0.8, f)
            canvas.paint(p.upper, shape)
        return draw

    def _arm_fn(self, side, shadow):
        p, H = self.p, self.H
        sh, el, hd = (self.Pt(q) for q in self.arms[side])
        k = 0.8 if shadow else 1.0
        width = 0.047 * H * (1.0 if not p.female else 0.9) * (0.85 + 0.15 * p.shoulder_w)
        upper = _shaded_paint(p.upper, k)
        skin = _shade(p.skin, k)
        # sleeve: the covered part of the shoulder -> elbow -> hand path
        l1 = math.dist(sh, el)
        l2 = math.dist(el, hd)
        cover = p.sleeve * (l1 + l2)
        if cover <= l1:
            sleeve = [sh, _lerp(sh, el, cover / max(l1, 1e-6))]
        else:
            sleeve = [sh, el, _lerp(el, hd, min(1.0, (cover - l1) / max(l2, 1e-6)))]
        # hand a little beyond the wrist, along the forearm
        hx, hy = _lerp(el, hd, 1.12)
        phone = p.phone == side

        def draw(canvas):
            d = canvas.draw
            _limb(d, [sh, el, hd], width * 0.85, skin)
            canvas.paint(upper, lambda dd, f: _limb(dd, sleeve, width, f))
            if phone:  # small dark handset between the hand and the ear
                px, py = hx, hy - 0.012 * H
                d.rectangle((px - 0.011 * H, py - 0.028 * H, px + 0.011 * H, py + 0.012 * H), fill=(22, 22, 26))
            _ellipse(d, hx, hy, 0.019 * H, 0.021 * H, skin)
        return draw

    def _long_hair_fn(self):
        p, H = self.p, self.H
        x0, y0 = self.P(0, -0.015, 0.05)
        x1, y1 = self.P(0, -0.02, 0.16 + p.hair_len)
        hw = math.hypot(0.058 * self.c, 0.05 * self.sn) * H
        bw = hw * (1.05 if self.c > -0.3 else 1.2)
        poly = [(x0 - hw, y0), (x0 + hw, y0), (x1 + bw, y1), (x1 - bw, y1)]
        return lambda canvas: (canvas.draw.polygon(poly, fill=p.hair),
                               _ellipse(canvas.draw, x1, y1, bw, 0.02 * H, p.hair))

    def _head_fn(self):
        p, H = self.p, self.H
        c, sn = self.c, self.sn
        hx, hy = self.P(0, -0.012, 0.055)
        hair_rx = math.hypot(0.049 * c, 0.058 * sn) * H
        hair_ry = 0.063 * H
        fx, fy = self.P(0, 0.035, 0.074)
        face_rx = 0.04 * H * (0.55 + 0.45 * abs(c))
        face_ry = 0.05 * H
        show_face = c > -0.25
        eyes = []
        for side in (LEFT, RIGHT):
            if self.depth(side * 0.018, 0.045) > 0.01:
                eyes.append(self.P(side * 0.018, 0.045, 0.066))
        nose = None
        if abs(sn) > 0.3 and c > -0.3:  # profile nose sticks out of the silhouette
            nx, ny = self.P(0, 0.065, 0.075)
            tip = -math.copysign(1.0, sn) * 0.016 * H
            nose = [(nx, ny - 0.012 * H), (nx + tip, ny + 0.006 * H), (nx, ny + 0.01 * H)]
        mouth = self.P(0, 0.05, 0.1) if c > 0.2 else None
        eye_r = max(0.6, 0.007 * H)
        feature = _shade(p.skin, 0.45)

        def draw(canvas):
            d = canvas.draw
            _ellipse(d, hx, hy, hair_rx, hair_ry, p.hair)
            if show_face:
                _ellipse(d, fx, fy, face_rx, face_ry, p.skin)
                if nose:
                    d.polygon(nose, fill=p.skin)
                for ex, ey in eyes:
                    _ellipse(d, ex, ey, eye_r, eye_r, (25, 20, 20))
                if mouth:
                    mx, my = mouth
                    d.line([(mx - 0.012 * H * c, my), (mx + 0.012 * H * c, my)], fill=feature, width=1)
        return draw

    def _backpack_fn(self):
        p, H = self.p, self.H
        a, b = 0.082 * p.bag_size ** 0.3, 0.045
        x, y0 = self.P(0, -(0.058 + b), 0.2)
        _, y1 = self.P(0, -(0.058 + b), 0.44)
        hw = _box_half_width(a, b, self.c, self.sn) * H
        col = p.pack_color

        def draw(canvas):
            d = canvas.draw
            d.rounded_rectangle((x - hw, y0, x + hw, y1), radius=max(1, int(0.02 * H)), fill=col,
                                outline=_shade(col, 0.6), width=1)
            if self.c < -0.3:  # from behind: the front pocket
                d.rectangle((x - hw * 0.6, y0 + (y1 - y0) * 0.55, x + hw * 0.6, y1 - (y1 - y0) * 0.1),
                            outline=_shade(col, 0.6), width=1)
        return draw

    def _pack_straps_fn(self):
        p, H = self.p, self.H
        lines = []
        for side in (LEFT, RIGHT):
            lines.append([self.P(side * self.Ws * 0.55, 0.058, 0.18), self.P(side * self.Ws * 0.62, 0.058, 0.36)])
        col = _shade(p.pack_color, 0.8)
        w = max(2, int(round(0.02 * H)))
        return lambda canvas: [canvas.draw.line(line, fill=col, width=w) for line in lines]

    def _shoulder_bag_fn(self, side):
        p, H = self.p, self.H
        size = p.bag_size
        a, b, v = 0.028, 0.06 * size, 0.05 * size
        s = side * (self.Wh + 0.035)
        x, y = self.P(s, 0.02, 0.50)
        hw = _box_half_width(a, b, self.c, self.sn) * H
        strap_top = [self.P(side * self.Ws * 0.62, f, 0.175) for f in (0.05, -0.05)]
        strap_bottom = [self.P(s, f, 0.5 - v) for f in (0.03, -0.03)]
        front_strap_visible = self.depth(side * self.Ws * 0.6, 0.05) > 0  # else it runs down the hidden side
        col = p.bag_color
        strap = _shade(col, 0.7)
        sw = max(1, int(round(0.014 * H)))

        def draw(canvas):
            d = canvas.draw
            d.line([strap_top[0] if front_strap_visible else strap_top[1],
                    strap_bottom[0] if front_strap_visible else strap_bottom[1]], fill=strap, width=sw)
            d.rounded_rectangle((x - hw, y - v * H, x + hw, y + v * H), radius=max(1, int(0.012 * H)), fill=col)
        return draw

    def _hand_bag_fn(self, side):
        p, H = self.p, self.H
        size = p.bag_size
        hd = self.arms[side][2]
        a, b, v = 0.026, 0.065 * size, 0.06 * size
        hx, hy = self.Pt(hd)
        x, y = self.P(hd[0], hd[1], hd[2] + 0.035 + v)
        hw = _box_half_width(a, b, self.c, self.sn) * H
        col = p.bag_color

        def draw(canvas):
            d = canvas.draw
            top = y - v * H
            d.line([(hx, hy), (x - hw * 0.6, top)], fill=_shade(col, 0.6), width=1)
            d.line([(hx, hy), (x + hw * 0.6, top)], fill=_shade(col, 0.6), width=1)
            d.rounded_rectangle((x - hw, top, x + hw, y + v * H), radius=max(1, int(0.01 * H)), fill=col)
        return draw

    def _trolley_fn(self, side):
        p, H = self.p, self.H
        s = side * (self.Ws + 0.03)
        hand = self.Pt(self.arms[side][2])
        bx, by = self.P(s, -0.27, 0.985)  # bottom centre on the ground
        a, b, v = 0.045, 0.075, 0.27
        hw = _box_half_width(a, b, self.c, self.sn) * H
        # the case leans toward the pulling hand
        lean = 0.35 * (hand[0] - bx)
        tx, ty = bx + lean, by - v * H
        col = p.trolley_color
        wheel = 0.018 * H

        def draw(canvas):
            d = canvas.draw
            d.line([hand, (tx, ty)], fill=(90, 90, 95), width=max(1, int(0.012 * H)))
            d.polygon([(bx - hw, by - wheel), (bx + hw, by - wheel), (tx + hw, ty), (tx - hw, ty)], fill=col)
            for wx in (bx - hw * 0.7, bx + hw * 0.7):
                _ellipse(d, wx, by - wheel * 0.5, wheel, wheel, (15, 15, 15))
        return draw

    def _pram_fn(self):
        p, H = self.p, self.H
        a, b = 0.1, 0.1
        f0 = 0.27
        x, y0 = self.P(0, f0, 0.58)
        _, y1 = self.P(0, f0, 0.86)
        hw = _box_half_width(a, b, self.c, self.sn) * H
        wheels = [self.P(s * a * 0.9, f0 + f * b * 0.8, 0.95) for s in (1, -1) for f in (1, -1)]
        handle = self.P(0, f0 - b, 0.52)
        hands = [self.Pt(self.arms[side][2]) for side in (LEFT, RIGHT)]
        col = p.pram_color
        wr = 0.035 * H

        def draw(canvas):
            d = canvas.draw
            for wx, wy in wheels:
                d.line([(x, y1), (wx, wy)], fill=(70, 70, 70), width=1)
            for wx, wy in wheels:
                _ellipse(d, wx, wy, wr, wr, (20, 20, 20))
            d.rounded_rectangle((x - hw, y0, x + hw, y1), radius=max(1, int(0.03 * H)), fill=col)
            for hx, hy in hands:
                d.line([handle, (hx, hy)], fill=(60, 60, 60), width=max(1, int(0.012 * H)))
        return draw


def _shaded_paint(paint: Paint, k: float) -> Paint:
    if k == 1.0:
        return paint
    return replace(paint, color=_shade(paint.color, k), color2=_shade(paint.color2, k))


# ----------------------------------------------------------------------------- canvas and textures

@lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return yy, xx


def _texture(paint: Paint, width: int, height: int) -> Image.Image:
    if paint.pattern == "noise":
        # mottled fabric: a coarse random field, smoothly upsampled, blends the two colours
        rng = np.random.default_rng(paint.seed)
        small = (rng.random((height // 6 + 2, width // 6 + 2)) * 255).astype(np.uint8)
        weight = Image.fromarray(small, "L").resize((width, height), Image.BILINEAR)
    else:
        yy, xx = _grid(width, height)
        ca, sa = math.cos(paint.angle), math.sin(paint.angle)
        u = np.floor((xx * ca + yy * sa) * (1.0 / paint.period))
        if paint.pattern == "checks":
            u += np.floor((yy * ca - xx * sa) * (1.0 / paint.period))
        weight = Image.fromarray((u.astype(np.int32) & 1).astype(np.uint8) * 255, "L")
    texture = Image.new("RGB", (width, height), paint.color)
    texture.paste(paint.color2, (0, 0), weight)
    return texture


class _Canvas:
    def __init__(self, image: Image.Image):
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self._textures: dict[Paint, Image.Image] = {}

    def paint(self, paint: Paint | Color, shape) -> None:
        """Fill ``shape(draw, fill)`` with a colour or a patterned paint."""
        if isinstance(paint, tuple):
            shape(self.draw, paint)
            return
        if paint.pattern == "solid":
            shape(self.draw, paint.color)
            return
        tex = self._textures.get(paint)
        if tex is None:
            tex = self._textures[paint] = _texture(paint, *self.image.size)
        mask = Image.new("L", self.image.size, 0)
        shape(ImageDraw.Draw(mask), 255)
        box = mask.getbbox()  # pasting only the touched rectangle is several times faster
        if box is not None:
            self.image.paste(tex.crop(box), box, mask.crop(box))


def _draw_person(canvas: _Canvas, person: Person) -> None:
    parts = _Figure(person).parts()
    parts.sort(key=lambda kv: kv[0])  # stable: equal keys keep their listed order
    for _, fn in parts:
        fn(canvas)


def _draw_background(bg: Background, width: int, height: int) -> Image.Image:
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


# ----------------------------------------------------------------------------- rendering and labels

def render_scene(scene: Scene) -> tuple[Image.Image, dict[str, int]]:
    """Pixels and labels of a scene (pure function of the scene)."""
    w, h = scene.width, scene.height
    image = _draw_background(scene.background, w, h)
    canvas = _Canvas(image)
    for other in scene.others:
        _draw_person(canvas, other)
    _draw_person(canvas, scene.person)

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
    band = _truncated_band(scene)
    if band is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in band)
        arr[y0:y1, x0:x1] = 0
    image = Image.fromarray(arr, "RGB")
    if scene.downscale < 1.0:  # small detection, upsampled to the crop size
        small = (max(8, int(w * scene.downscale)), max(16, int(h * scene.downscale)))
        image = image.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)
    return image, scene_labels(scene)


_NOISE_TABLE: np.ndarray | None = None


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


def _truncated_band(scene: Scene) -> tuple[float, float, float, float] | None:
    w, h, t = scene.width, scene.height, scene.truncation_frac
    if scene.truncation is None or t <= 0:
        return None
    return {"top": (0, 0, w, t * h), "bottom": (0, h - t * h, w, h),
            "left": (0, 0, t * w, h), "right": (w - t * w, 0, w, h)}[scene.truncation]


def _visible_fraction(region, scene: Scene) -> float:
    """Share of a region inside the crop and outside the zero padding."""
    x0, y0, x1, y1 = region
    area = max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6)

    def overlap(bx0, by0, bx1, by1):
        return max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))

    inside = overlap(0, 0, scene.width, scene.height)
    band = _truncated_band(scene)
    if band is not None:
        inside -= overlap(*band)
    return inside / area


def scene_labels(scene: Scene) -> dict[str, int]:
    """Stored attribute values (0 = N/A) for the scene's main person."""
    p = scene.person
    regions = _Figure(p).regions()
    sn = math.sin(math.radians(p.yaw))
    c = math.cos(math.radians(p.yaw))

    truth = {
        "Orientation": orientation_of(p.yaw),
        "Gender": "female" if p.female else "male",
        "Posture": "walking" if p.walking else "standing",
        "HasTrolley": p.trolley != 0,
        "HasBackpack": p.backpack,
        "isPushing": p.pushing,
        "isTalkingOnPhone": p.phone != 0,
    }
    cue_region = {
        "Orientation": "upper", "Gender": "upper", "Posture": "legs", "HasTrolley": "lower_wide",
        "HasBackpack": "torso", "isPushing": "lower_wide", "isTalkingOnPhone": "head",
    }
    for side in (LEFT, RIGHT):
        name = SIDE_NAME[side]
        truth["HasBagOnShoulder" + name] = side in p.shoulder_bags
        truth["HasBagInHand" + name] = side in p.hand_bags
        cue_region["HasBagOnShoulder" + name] = "hip" + name
        cue_region["HasBagInHand" + name] = "hand" + name

    labels = {}
    for i, attr in enumerate(PARSE27K):
        value = truth[attr.name]
        if isinstance(value, bool):
            value = "yes" if value else "no"
        na = scene.na_draws[i] < RANDOM_NA_RATE.get(attr.name, DEFAULT_RANDOM_NA_RATE)
        if _visible_fraction(regions[cue_region[attr.name]], scene) < MIN_VISIBLE.get(attr.name, DEFAULT_MIN_VISIBLE):
            na = True
        if attr.name.startswith(("HasBagOnShoulder", "HasBagInHand")):
            side = LEFT if attr.name.endswith("Left") else RIGHT
            # near profile, the far side is hidden behind the body
            if side * sn < -0.7 and scene.occlusion_draws[0 if side == LEFT else 1] < FAR_SIDE_NA_RATE:
                na = True
        if attr.name == "isPushing" and c < -0.7 and scene.na_draws[i] < 0.2:
            na = True  # from behind, the pram is mostly hidden
        labels[attr.name] = attr.value(None if na else value)
    return labels


# ----------------------------------------------------------------------------- sampling

SKIN_TONES = ((245, 214, 186), (234, 192, 150), (214, 166, 120), (190, 135, 90), (150, 100, 65), (100, 66, 45))
HAIR_COLORS = ((22, 18, 16), (50, 35, 25), (95, 65, 40), (185, 150, 95), (150, 148, 145), (120, 55, 28))


def _hsv(h, s, v) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5))


def _jitter(rng, col: Color, amount: float) -> Color:
    return tuple(int(min(255, max(0, v + rng.normal(0, amount)))) for v in col)


def _clothing_color(rng, colorful: float) -> Color:
    u = rng.random()
    if u < colorful:
        return _hsv(rng.random(), rng.uniform(0.3, 0.85), rng.uniform(0.3, 0.9))
    if u < colorful + (1 - colorful) * 0.55:  # dark: black, navy, brown
        return _hsv(rng.random(), rng.uniform(0.0, 0.45), rng.uniform(0.07, 0.32))
    return _hsv(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.35, 0.95))  # greys, beige, white


def _paint(rng, colorful: float) -> Paint:
    color = _clothing_color(rng, colorful)
    u = rng.random()
    if u < 0.58:
        return Paint(color)
    color2 = _clothing_color(rng, colorful) if rng.random() < 0.6 else _shade(color, rng.uniform(0.5, 0.8))
    seed = int(rng.integers(2**31))
    if u < 0.74:
        angle = (math.pi / 2 if rng.random() < 0.7 else 0.0) + rng.normal(0, 0.15)
        return Paint(color, "stripes", color2, rng.uniform(2.5, 7.0), angle, seed)
    if u < 0.85:
        return Paint(color, "checks", color2, rng.uniform(3.0, 7.0), rng.normal(0, 0.1), seed)
    return Paint(color, "noise", _shade(color, rng.uniform(0.55, 0.85)), 6.0, 0.0, seed)


def _muted(rng) -> Color:
    return _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.2, 0.85))


def _sample_yaw(rng, orientation: str) -> float:
    # mostly near the class centre, sometimes anywhere in its bin: diagonal views are ambiguous
    if rng.random() < 0.7:
        off = float(np.clip(rng.normal(0, 15), -44, 44))
    else:
        off = rng.uniform(-44, 44)
    return (ORIENTATION_YAW[orientation] + off) % 360.0


def _sample_person(rng, cx: float, top: float, height: float) -> Person:
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
    upper = _paint(rng, colorful)
    lower = _paint(rng, colorful * 0.7) if rng.random() < 0.5 else Paint(_clothing_color(rng, colorful * 0.5))
    skin = _jitter(rng, SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], 8)
    hair_base = HAIR_COLORS[int(rng.integers(len(HAIR_COLORS)))]
    if rng.random() < 0.08:  # hats and hoods: the head top is clothing-coloured
        hair_base = _clothing_color(rng, 0.3)
    return Person(
        cx=cx, top=top, height=height,
        yaw=_sample_yaw(rng, orientation),
        walking=walking,
        lead=int(sides[int(rng.integers(2))]),
        stride=rng.uniform(0.2, 0.45),
        swing=rng.uniform(0.2, 0.5),
        stance=rng.uniform(0.0, 0.025),
        female=female,
        shoulder_w=float(rng.normal(0.9 if female else 1.02, 0.07)),
        hip_w=float(rng.normal(1.03 if female else 0.95, 0.06)),
        skin=skin,
        hair=_jitter(rng, hair_base, 10),
        long_hair=long_hair,
        hair_len=rng.uniform(0.02, 0.14),
        upper=upper,
        lower=lower,
        shoes=_hsv(rng.random(), rng.uniform(0, 0.4), rng.uniform(0.05, 0.7) if rng.random() < 0.3 else rng.uniform(0.05, 0.25)),
        sleeve=rng.uniform(0.25, 0.45) if rng.random() < 0.3 else rng.uniform(0.85, 0.97),
        legwear=legwear,
        skirt_len=rng.uniform(0.08, 0.24),
        tights=_hsv(0, 0, rng.uniform(0.05, 0.2)) if rng.random() < 0.4 else None,
        shoulder_bags=shoulder_bags,
        hand_bags=hand_bags,
        backpack=backpack,
        trolley=int(trolley),
        pushing=pushing,
        phone=int(phone),
        bag_color=_clothing_color(rng, 0.3),
        bag_size=rng.uniform(0.7, 1.35),
        pack_color=_clothing_color(rng, 0.35),
        trolley_color=_clothing_color(rng, 0.3),
        pram_color=_clothing_color(rng, 0.4),
    )


def _sample_background(rng, width: int, height: int) -> Background:
    shapes = []
    for _ in range(int(rng.integers(2, 9))):
        kind = ("rect", "rect", "ellipse", "pole", "line")[int(rng.integers(5))]
        col = _muted(rng)
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
        color_a=_muted(rng),
        color_b=_muted(rng),
        gradient_angle=rng.uniform(0, 2 * math.pi),
        horizon=rng.uniform(0.1, 0.95) if rng.random() < 0.7 else None,
        horizon_tilt=rng.normal(0, 0.1) * width,
        ground=_muted(rng),
        shapes=tuple(shapes),
    )


def sample_scene(seed: int, index: int, width: int = 100, height: int = 200) -> Scene:
    """All random choices of crop (seed, index)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    # detection jitter: the box is neither perfectly centred nor perfectly sized
    person_h = height * rng.uniform(0.74, 0.92)
    cx = width / 2 + float(np.clip(rng.normal(0, 0.05 * width), -0.12 * width, 0.12 * width))
    top = (height - person_h) / 2 + float(np.clip(rng.normal(0, 0.03 * height), -0.07 * height, 0.07 * height))
    person = _sample_person(rng, cx, top, person_h)
    background = _sample_background(rng, width, height)

    others = []
    n_near = 0 if rng.random() < 0.65 else (1 if rng.random() < 0.8 else 2)
    for _ in range(n_near):  # neighbours cut by the box edge
        side = 1 if rng.random() < 0.5 else -1
        oh = person_h * rng.uniform(0.75, 1.15)
        ocx = width / 2 + side * rng.uniform(0.55, 0.95) * width
        others.append(_sample_person(rng, ocx, top + rng.normal(0, 0.06) * height, oh))
    if rng.random() < 0.15:  # somebody further away
        oh = person_h * rng.uniform(0.35, 0.6)
        others.append(_sample_person(rng, rng.uniform(0, width), rng.uniform(-0.1, 0.5) * height, oh))
    # far-away people must be drawn first
    others.sort(key=lambda o: o.height)

    truncation, frac = None, 0.0
    if rng.random() < 0.1:
        u = rng.random()
        if u < 0.45:
            truncation, frac = "bottom", rng.uniform(0.08, 0.35)
        elif u < 0.6:
            truncation, frac = "top", rng.uniform(0.05, 0.25)
        else:
            truncation, frac = ("left" if u < 0.8 else "right"), rng.uniform(0.1, 0.4)

    return Scene(
        width=width, height=height, person=person, background=background, others=tuple(others),
        truncation=truncation, truncation_frac=frac,
        gain=rng.uniform(0.7, 1.2),
        cast=tuple(float(v) for v in rng.normal(0, 7, 3)),
        noise_sigma=rng.uniform(2, 10),
        noise_seed=int(rng.integers(2**31)),
        downscale=rng.uniform(0.45, 0.85) if rng.random() < 0.4 else 1.0,
        blur=rng.uniform(0.3, 1.1),
        na_draws=tuple(float(v) for v in rng.random(len(PARSE27K))),
        occlusion_draws=(float(rng.random()), float(rng.random())),
    )


def render_crop(seed: int, index: int, width: int = 100, height: int = 200) -> tuple[Image.Image, dict[str, int]]:
    """One synthetic pedestrian crop (RGB, width x height) and its PARSE-27k labels; a pure function of (seed, index)."""
    return render_scene(sample_scene(seed, index, width, height))


def render_batch(seed: int, start: int, count: int, width: int = 100,
                 height: int = 200) -> list[tuple[Image.Image, dict[str, int]]]:
    """Crops start .. start+count-1 of one seed."""
    return [render_crop(seed, i, width, height) for i in range(start, start + count)]
