"""What a person carries: backpack and its straps, shoulder and hand bags, trolley case, pram.

Like ``body.py``, each function takes a ``Pose`` and returns the item's
``draw(canvas)``. The items are boxes in person coordinates, so they turn with
the person: a backpack bulges out behind, a pram goes ahead, a trolley trails.
"""
from __future__ import annotations

from patchray.shards.synthetic.canvas import ellipse
from patchray.shards.synthetic.colors import shade
from patchray.shards.synthetic.pose import Pose
from patchray.shards.synthetic.scene import LEFT, RIGHT

# Forward extent of the torso surface (body heights): carried things sit outside it.
TORSO_DEPTH = 0.058
# Half-extent of a backpack front to back (body heights).
PACK_DEPTH = 0.045


def box_half_width(a: float, b: float, c: float, sn: float) -> float:
    """Projected half-width of a box with half-extents a (lateral) and b (forward)."""
    return a * abs(c) + b * abs(sn)


def backpack(pose: Pose):
    """The pack on the back; from behind, its front pocket shows."""
    p, H = pose.person, pose.height
    a, b = 0.082 * p.bag_size ** 0.3, PACK_DEPTH
    x, y0 = pose.project(0, -(TORSO_DEPTH + b), 0.2)
    _, y1 = pose.project(0, -(TORSO_DEPTH + b), 0.44)
    hw = box_half_width(a, b, pose.cos_yaw, pose.sin_yaw) * H
    col = p.pack_color

    def draw(canvas):
        d = canvas.draw
        d.rounded_rectangle((x - hw, y0, x + hw, y1), radius=max(1, int(0.02 * H)), fill=col,
                            outline=shade(col, 0.6), width=1)
        if pose.cos_yaw < -0.3:  # from behind: the front pocket
            d.rectangle((x - hw * 0.6, y0 + (y1 - y0) * 0.55, x + hw * 0.6, y1 - (y1 - y0) * 0.1),
                        outline=shade(col, 0.6), width=1)
    return draw


def pack_straps(pose: Pose):
    """The backpack's straps over the chest, all that shows of it from the front."""
    p, H = pose.person, pose.height
    lines = []
    for side in (LEFT, RIGHT):
        lines.append([pose.project(side * pose.shoulder_half_w * 0.55, TORSO_DEPTH, 0.18),
                      pose.project(side * pose.shoulder_half_w * 0.62, TORSO_DEPTH, 0.36)])
    col = shade(p.pack_color, 0.8)
    w = max(2, int(round(0.02 * H)))
    return lambda canvas: [canvas.draw.line(line, fill=col, width=w) for line in lines]


def shoulder_bag(pose: Pose, side: int):
    """A bag at the hip on this side, its strap running up to the shoulder."""
    p, H = pose.person, pose.height
    size = p.bag_size
    a, b, v = 0.028, 0.06 * size, 0.05 * size
    s = side * (pose.hip_half_w + 0.035)
    x, y = pose.project(s, 0.02, 0.50)
    hw = box_half_width(a, b, pose.cos_yaw, pose.sin_yaw) * H
    strap_top = [pose.project(side * pose.shoulder_half_w * 0.62, f, 0.175) for f in (0.05, -0.05)]
    strap_bottom = [pose.project(s, f, 0.5 - v) for f in (0.03, -0.03)]
    front_strap_visible = pose.depth(side * pose.shoulder_half_w * 0.6, 0.05) > 0  # else it runs down the hidden side
    col = p.bag_color
    strap = shade(col, 0.7)
    sw = max(1, int(round(0.014 * H)))

    def draw(canvas):
        d = canvas.draw
        d.line([strap_top[0] if front_strap_visible else strap_top[1],
                strap_bottom[0] if front_strap_visible else strap_bottom[1]], fill=strap, width=sw)
        d.rounded_rectangle((x - hw, y - v * H, x + hw, y + v * H), radius=max(1, int(0.012 * H)), fill=col)
    return draw


def hand_bag(pose: Pose, side: int):
    """A bag hanging from this side's hand by two handles."""
    p, H = pose.person, pose.height
    size = p.bag_size
    hd = pose.arms[side][2]
    a, b, v = 0.026, 0.065 * size, 0.06 * size
    hx, hy = pose.project_point(hd)
    x, y = pose.project(hd[0], hd[1], hd[2] + 0.035 + v)
    hw = box_half_width(a, b, pose.cos_yaw, pose.sin_yaw) * H
    col = p.bag_color

    def draw(canvas):
        d = canvas.draw
        top = y - v * H
        d.line([(hx, hy), (x - hw * 0.6, top)], fill=shade(col, 0.6), width=1)
        d.line([(hx, hy), (x + hw * 0.6, top)], fill=shade(col, 0.6), width=1)
        d.rounded_rectangle((x - hw, top, x + hw, y + v * H), radius=max(1, int(0.01 * H)), fill=col)
    return draw


def trolley(pose: Pose, side: int):
    """A wheeled case on the ground behind the person, pulled by this side's hand."""
    p, H = pose.person, pose.height
    s = side * (pose.shoulder_half_w + 0.03)
    hand = pose.project_point(pose.arms[side][2])
    bx, by = pose.project(s, -0.27, 0.985)  # bottom centre on the ground
    a, b, v = 0.045, 0.075, 0.27
    hw = box_half_width(a, b, pose.cos_yaw, pose.sin_yaw) * H
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
            ellipse(d, wx, by - wheel * 0.5, wheel, wheel, (15, 15, 15))
    return draw


def pram(pose: Pose):
    """A pram in front of the person, both hands on its handle."""
    p, H = pose.person, pose.height
    a, b = 0.1, 0.1
    f0 = 0.27
    x, y0 = pose.project(0, f0, 0.58)
    _, y1 = pose.project(0, f0, 0.86)
    hw = box_half_width(a, b, pose.cos_yaw, pose.sin_yaw) * H
    wheels = [pose.project(s * a * 0.9, f0 + f * b * 0.8, 0.95) for s in (1, -1) for f in (1, -1)]
    handle = pose.project(0, f0 - b, 0.52)
    hands = [pose.project_point(pose.arms[side][2]) for side in (LEFT, RIGHT)]
    col = p.pram_color
    wr = 0.035 * H

    def draw(canvas):
        d = canvas.draw
        for wx, wy in wheels:
            d.line([(x, y1), (wx, wy)], fill=(70, 70, 70), width=1)
        for wx, wy in wheels:
            ellipse(d, wx, wy, wr, wr, (20, 20, 20))
        d.rounded_rectangle((x - hw, y0, x + hw, y1), radius=max(1, int(0.03 * H)), fill=col)
        for hx, hy in hands:
            d.line([handle, (hx, hy)], fill=(60, 60, 60), width=max(1, int(0.012 * H)))
    return draw
