"""The person's body and clothes: legs and feet, skirt, neck, torso, arms, hair and head.

Each function takes a ``Pose`` and returns the part's ``draw(canvas)``; the
geometry is worked out when the part is made, so that ``figure.py`` can sort
the parts by depth before any of them is drawn.
"""
from __future__ import annotations

import math

from patchray.shards.synthetic.canvas import ellipse, lerp, limb
from patchray.shards.synthetic.clothing import shaded_paint
from patchray.shards.synthetic.colors import shade
from patchray.shards.synthetic.pose import Pose
from patchray.shards.synthetic.scene import LEFT, RIGHT

# Parts on the far side of the body are darker by this factor.
SHADOW = 0.8


def leg(pose: Pose, side: int, shadow: bool):
    """Thigh, shin and foot, in trousers, shorts or bare (or in tights) below a skirt."""
    p, H = pose.person, pose.height
    hip, knee, ankle, heel, toe = (pose.project_point(q) for q in pose.legs[side])
    k = SHADOW if shadow else 1.0
    thigh_w = (0.066 if not p.female else 0.06) * H * p.hip_w
    shin_w = 0.05 * H
    foot_w = 0.03 * H + abs(pose.cos_yaw) * 0.016 * H
    skin = shade(p.skin, k)
    leg_paint = shade(p.tights, k) if p.tights else skin

    def draw(canvas):
        if p.legwear == "trousers":
            lower = shaded_paint(p.lower, k)
            canvas.paint(lower, lambda d, f: (limb(d, [hip, knee], thigh_w, f), limb(d, [knee, ankle], shin_w, f)))
        else:
            d = canvas.draw
            limb(d, [hip, knee], thigh_w * 0.92, leg_paint)
            limb(d, [knee, ankle], shin_w * 0.85, leg_paint)
            if p.legwear == "shorts":
                lower = shaded_paint(p.lower, k)
                end = lerp(hip, knee, 0.75)
                canvas.paint(lower, lambda d, f: limb(d, [hip, end], thigh_w * 1.05, f))
        limb(canvas.draw, [heel, toe], foot_w, shade(p.shoes, k))
    return draw


def skirt(pose: Pose):
    """A trapezoid from the hips, flaring out toward its hem."""
    p, H = pose.person, pose.height
    y0, y1 = 0.40, 0.50 + p.skirt_len
    top_w = pose.torso_half_width(0.46)
    cx0, yy0 = pose.project(0, 0, y0)
    cx1, yy1 = pose.project(0, 0, y1)
    bottom_w = top_w * 1.25 + 0.03 * H * abs(pose.sin_yaw)
    poly = [(cx0 - top_w, yy0), (cx0 + top_w, yy0), (cx1 + bottom_w, yy1), (cx1 - bottom_w, yy1)]
    return lambda canvas: canvas.paint(p.lower, lambda d, f: d.polygon(poly, fill=f))


def neck(pose: Pose):
    p, H = pose.person, pose.height
    x0, y0 = pose.project(0, 0.005, 0.11)
    x1, y1 = pose.project(0, 0.0, 0.2)
    r = 0.023 * H
    return lambda canvas: canvas.draw.polygon([(x0 - r, y0), (x0 + r, y0), (x1 + r, y1), (x1 - r, y1)], fill=p.skin)


def torso(pose: Pose):
    """Chest to hips in the upper garment, with round shoulders; leaning forward when walking."""
    p, H = pose.person, pose.height
    lean = 0.015 if p.walking else 0.0
    ys = (0.18, 0.36, 0.52)
    pts_left, pts_right = [], []
    for y in ys:
        x, yy = pose.project(0, lean * (0.52 - y) / 0.34, y)
        w = pose.torso_half_width(y)
        pts_left.append((x - w, yy))
        pts_right.append((x + w, yy))
    (lx, ly), (rx, ry) = pts_left[0], pts_right[0]
    sh_r = 0.03 * H  # round shoulders
    poly = ([(lx, ly + sh_r), (lx + sh_r * 0.6, ly - 0.01 * H), (rx - sh_r * 0.6, ry - 0.01 * H), (rx, ry + sh_r)]
            + pts_right[1:] + pts_left[1:][::-1])

    def draw(canvas):
        def shape(d, f):
            d.polygon(poly, fill=f)
            ellipse(d, lx + sh_r * 0.7, ly + sh_r * 0.7, sh_r * 0.8, sh_r * 0.8, f)
            ellipse(d, rx - sh_r * 0.7, ry + sh_r * 0.7, sh_r * 0.8, sh_r * 0.8, f)
        canvas.paint(p.upper, shape)
    return draw


def arm(pose: Pose, side: int, shadow: bool):
    """Bare arm, the sleeve over part of it, the hand, and the phone if this hand holds one."""
    p, H = pose.person, pose.height
    sh, el, hd = (pose.project_point(q) for q in pose.arms[side])
    k = SHADOW if shadow else 1.0
    width = 0.047 * H * (1.0 if not p.female else 0.9) * (0.85 + 0.15 * p.shoulder_w)
    upper = shaded_paint(p.upper, k)
    skin = shade(p.skin, k)
    # sleeve: the covered part of the shoulder -> elbow -> hand path
    l1 = math.dist(sh, el)
    l2 = math.dist(el, hd)
    cover = p.sleeve * (l1 + l2)
    if cover <= l1:
        sleeve = [sh, lerp(sh, el, cover / max(l1, 1e-6))]
    else:
        sleeve = [sh, el, lerp(el, hd, min(1.0, (cover - l1) / max(l2, 1e-6)))]
    # hand a little beyond the wrist, along the forearm
    hx, hy = lerp(el, hd, 1.12)
    phone = p.phone == side

    def draw(canvas):
        d = canvas.draw
        limb(d, [sh, el, hd], width * 0.85, skin)
        canvas.paint(upper, lambda dd, f: limb(dd, sleeve, width, f))
        if phone:  # small dark handset between the hand and the ear
            px, py = hx, hy - 0.012 * H
            d.rectangle((px - 0.011 * H, py - 0.028 * H, px + 0.011 * H, py + 0.012 * H), fill=(22, 22, 26))
        ellipse(d, hx, hy, 0.019 * H, 0.021 * H, skin)
    return draw


def long_hair(pose: Pose):
    """Hair falling behind the head onto the shoulders."""
    p, H = pose.person, pose.height
    c, sn = pose.cos_yaw, pose.sin_yaw
    x0, y0 = pose.project(0, -0.015, 0.05)
    x1, y1 = pose.project(0, -0.02, 0.16 + p.hair_len)
    hw = math.hypot(0.058 * c, 0.05 * sn) * H
    bw = hw * (1.05 if c > -0.3 else 1.2)
    poly = [(x0 - hw, y0), (x0 + hw, y0), (x1 + bw, y1), (x1 - bw, y1)]
    return lambda canvas: (canvas.draw.polygon(poly, fill=p.hair),
                           ellipse(canvas.draw, x1, y1, bw, 0.02 * H, p.hair))


def head(pose: Pose):
    """Hair-coloured skull, and unless seen from behind the face: eyes, profile nose, mouth."""
    p, H = pose.person, pose.height
    c, sn = pose.cos_yaw, pose.sin_yaw
    hx, hy = pose.project(0, -0.012, 0.055)
    hair_rx = math.hypot(0.049 * c, 0.058 * sn) * H
    hair_ry = 0.063 * H
    fx, fy = pose.project(0, 0.035, 0.074)
    face_rx = 0.04 * H * (0.55 + 0.45 * abs(c))
    face_ry = 0.05 * H
    show_face = c > -0.25
    eyes = []
    for side in (LEFT, RIGHT):
        if pose.depth(side * 0.018, 0.045) > 0.01:
            eyes.append(pose.project(side * 0.018, 0.045, 0.066))
    nose = None
    if abs(sn) > 0.3 and c > -0.3:  # profile nose sticks out of the silhouette
        nx, ny = pose.project(0, 0.065, 0.075)
        tip = -math.copysign(1.0, sn) * 0.016 * H
        nose = [(nx, ny - 0.012 * H), (nx + tip, ny + 0.006 * H), (nx, ny + 0.01 * H)]
    mouth = pose.project(0, 0.05, 0.1) if c > 0.2 else None
    eye_r = max(0.6, 0.007 * H)
    feature = shade(p.skin, 0.45)

    def draw(canvas):
        d = canvas.draw
        ellipse(d, hx, hy, hair_rx, hair_ry, p.hair)
        if show_face:
            ellipse(d, fx, fy, face_rx, face_ry, p.skin)
            if nose:
                d.polygon(nose, fill=p.skin)
            for ex, ey in eyes:
                ellipse(d, ex, ey, eye_r, eye_r, (25, 20, 20))
            if mouth:
                mx, my = mouth
                d.line([(mx - 0.012 * H * c, my), (mx + 0.012 * H * c, my)], fill=feature, width=1)
    return draw
