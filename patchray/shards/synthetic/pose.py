"""Where one person's body is: the 3D joints of the puppet, their projection into the crop,
and the image regions each attribute's cue lies in.

Body points are in person coordinates (s = lateral toward the person's own
LEFT, f = forward, y = down, in units of body height) and are projected
orthographically for the person's yaw.
"""
from __future__ import annotations

import math

from patchray.shards.synthetic.scene import LEFT, RIGHT, SIDE_NAME, Person

# The camera looks slightly down on the street: a point nearer the camera is
# drawn a little lower, which makes front-view strides and feet visible.
ELEVATION = 0.12

Point3 = tuple[float, float, float]  # (s, f, y), body heights
Region = tuple[float, float, float, float]  # (x0, y0, x1, y1), crop pixels


class Pose:
    """Pose of one person: 3D joints, their projection and the cue regions.

    ``legs[side]`` is (hip, knee, ankle, heel, toe) and ``arms[side]`` is
    (shoulder, elbow, hand), each point in person coordinates.
    """

    def __init__(self, person: Person):
        self.person = person
        yaw = math.radians(person.yaw)
        self.cos_yaw, self.sin_yaw = math.cos(yaw), math.sin(yaw)
        self.height = person.height  # pixels per body height
        self.shoulder_half_w = 0.118 * person.shoulder_w
        self.hip_half_w = 0.092 * person.hip_w
        self.legs: dict[int, tuple[Point3, ...]] = self._legs()
        # drop the body so that the lowest sole touches y = 1 (with the foot's thickness)
        sole = max(max(leg[3][2], leg[4][2]) for leg in self.legs.values())
        self.drop = 0.985 - sole
        self.arms: dict[int, tuple[Point3, ...]] = self._arms()

    # projection -------------------------------------------------------------
    def depth(self, s, f):
        """Distance toward the camera of a point at lateral s and forward f (body heights)."""
        return s * self.sin_yaw + f * self.cos_yaw

    def project(self, s, f, y):
        """Person coordinates (body heights) -> crop pixels."""
        H = self.height
        return (self.person.cx + H * (s * self.cos_yaw - f * self.sin_yaw),
                self.person.top + H * (y + self.drop + ELEVATION * (s * self.sin_yaw + f * self.cos_yaw)))

    def project_point(self, pt):
        return self.project(*pt)

    # skeleton ---------------------------------------------------------------
    def _legs(self) -> dict[int, tuple[Point3, ...]]:
        p = self.person
        legs = {}
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
            legs[side] = (hip, knee, ankle, heel, toe)
        return legs

    def _arms(self) -> dict[int, tuple[Point3, ...]]:
        p = self.person
        arms = {}
        Ws = self.shoulder_half_w
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
            arms[side] = (sh, el, hd)
        return arms

    def torso_half_width(self, y):
        """Projected torso half-width in pixels at body height y (piecewise linear chest -> waist -> hip)."""
        Ws, Wh = self.shoulder_half_w, self.hip_half_w
        waist_w = Wh * (0.88 if self.person.female else 0.97)
        if y <= 0.36:
            t = (y - 0.18) / 0.18
            W, D = Ws + (waist_w - Ws) * t, 0.058 - 0.008 * t
        else:
            t = (y - 0.36) / 0.16
            W, D = waist_w + (Wh - waist_w) * t, 0.05 + 0.01 * t
        return math.hypot(W * self.cos_yaw, D * self.sin_yaw) * self.height

    # regions for label visibility --------------------------------------------
    def regions(self) -> dict[str, Region]:
        """Crop boxes of the body parts that show each attribute (head, upper body, legs, hands, hips)."""
        H = self.height
        cx = self.person.cx
        P = self.project

        def box(pts, pad_x, pad_top, pad_bottom):
            xs = [q[0] for q in pts]
            ys = [q[1] for q in pts]
            return (min(xs) - pad_x * H, min(ys) - pad_top * H, max(xs) + pad_x * H, max(ys) + pad_bottom * H)

        head = P(0, 0.01, 0.065)
        hw = self.torso_half_width(0.19) / H
        out = {
            "head": box([head], 0.06, 0.07, 0.07),
            "upper": box([P(0, 0, 0.0), P(0, 0, 0.5)], hw + 0.02, 0, 0),
            "torso": box([P(0, 0, 0.18), P(0, 0, 0.5)], hw, 0, 0),
            "legs": box([self.project_point(leg[i]) for leg in self.legs.values() for i in (1, 3, 4)], 0.03, 0, 0.01),
            "lower_wide": (cx - 0.3 * H, P(0, 0, 0.5)[1], cx + 0.3 * H, P(0, 0, 1.0)[1]),
        }
        for side in (LEFT, RIGHT):
            hd = self.project_point(self.arms[side][2])
            out["hand" + SIDE_NAME[side]] = box([hd], 0.06, 0.03, 0.2)
            sh = P(side * self.shoulder_half_w, 0, 0.17)
            out["hip" + SIDE_NAME[side]] = box([sh, P(side * self.shoulder_half_w, 0, 0.58)], 0.07, 0, 0)
        return out
