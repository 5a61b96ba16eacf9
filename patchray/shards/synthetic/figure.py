"""A whole person drawn as a 2.5D puppet: body parts and carried things painted back to front.

Parts are sorted by a painter's key (depth toward the camera plus a layer
offset), so one routine gives front, back and profile views, hides the
far-side arm and bag in profile, and mirrors exactly under ``mirror_scene``.
"""
from __future__ import annotations

from collections.abc import Callable

from patchray.shards.synthetic import body, carried
from patchray.shards.synthetic.canvas import Canvas
from patchray.shards.synthetic.carried import PACK_DEPTH, TORSO_DEPTH
from patchray.shards.synthetic.pose import Pose
from patchray.shards.synthetic.scene import LEFT, RIGHT, Person

# Painter's keys: parts are drawn in increasing key = depth + layer offset.
# Limbs and carried items sit outside the torso surface, hence the offset.
LIMB_LAYER = 0.06
HEAD_LAYER = 0.25
# Limbs whose root is deeper than this are on the far side, in shadow.
FAR_DEPTH = -0.02

Part = tuple[float, Callable[[Canvas], object]]  # (painter's key, draw(canvas))


def figure_parts(pose: Pose) -> list[Part]:
    """(painter's key, draw function(canvas)) for every part of this person, in listing order."""
    return _body_parts(pose) + _carried_parts(pose)


def _body_parts(pose: Pose) -> list[Part]:
    p = pose.person
    parts = []

    # legs and feet
    leg_keys = []
    for side in (LEFT, RIGHT):
        hip = pose.legs[side][0]
        key = pose.depth(hip[0], hip[1])
        leg_keys.append(key)
        parts.append((key, body.leg(pose, side, key < FAR_DEPTH)))
    if p.legwear == "skirt":
        parts.append((max(leg_keys) + 0.001, body.skirt(pose)))

    # torso and neck
    parts.append((-0.011, body.neck(pose)))
    parts.append((-0.01, body.torso(pose)))

    # arms
    for side in (LEFT, RIGHT):
        sh, _, hd = pose.arms[side]
        d = 0.5 * (pose.depth(hd[0], hd[1]) + pose.depth(sh[0], sh[1]))
        if p.phone == side:  # the raised hand is in front of the head unless seen from behind
            key = HEAD_LAYER + (0.01 if pose.depth(hd[0], hd[1]) > -0.02 else -0.01)
        else:
            key = d + LIMB_LAYER
        parts.append((key, body.arm(pose, side, pose.depth(sh[0], sh[1]) < FAR_DEPTH)))

    # head and hair
    if p.long_hair:
        parts.append((-0.015 * pose.cos_yaw - 0.015, body.long_hair(pose)))
    parts.append((HEAD_LAYER, body.head(pose)))
    return parts


def _carried_parts(pose: Pose) -> list[Part]:
    p = pose.person
    parts = []
    if p.backpack:
        f = -(TORSO_DEPTH + PACK_DEPTH)
        parts.append((pose.depth(0, f) + LIMB_LAYER, carried.backpack(pose)))
        if pose.cos_yaw > 0:
            parts.append((pose.depth(0, TORSO_DEPTH) + LIMB_LAYER + 0.001, carried.pack_straps(pose)))
    for side in p.shoulder_bags:
        key = pose.depth(side * (pose.hip_half_w + 0.03), 0.02) + LIMB_LAYER - 0.001
        parts.append((key, carried.shoulder_bag(pose, side)))
    for side in p.hand_bags:
        sh, _, hd = pose.arms[side]
        d = 0.5 * (pose.depth(hd[0], hd[1]) + pose.depth(sh[0], sh[1]))
        parts.append((d + LIMB_LAYER + 0.002, carried.hand_bag(pose, side)))  # just in front of its arm
    if p.trolley:
        key = pose.depth(p.trolley * (pose.shoulder_half_w + 0.03), -0.27) + LIMB_LAYER
        parts.append((key, carried.trolley(pose, p.trolley)))
    if p.pushing:
        parts.append((pose.depth(0, 0.27) + LIMB_LAYER, carried.pram(pose)))
    return parts


def draw_person(canvas: Canvas, person: Person) -> None:
    parts = figure_parts(Pose(person))
    parts.sort(key=lambda kv: kv[0])  # stable: equal keys keep their listed order
    for _, draw in parts:
        draw(canvas)
