"""The ten PARSE-27k labels of a scene's main person, N/A where the crop does not show the cue.

A label is N/A (stored 0) when the region that shows its cue is mostly outside
the crop or in the zero padding, when the far side is hidden in profile, or at
random, as annotators sometimes could not decide.
"""
from __future__ import annotations

import math

from patchray.shards.attributes import PARSE27K
from patchray.shards.synthetic.camera import truncated_band
from patchray.shards.synthetic.pose import Pose
from patchray.shards.synthetic.scene import LEFT, RIGHT, SIDE_NAME, Scene, orientation_of

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


def sample_label_draws(rng) -> tuple[tuple[float, ...], tuple[float, float]]:
    """The uniform draws deciding random N/A (one per attribute) and far-side N/A (LEFT, RIGHT)."""
    na_draws = tuple(float(v) for v in rng.random(len(PARSE27K)))
    occlusion_draws = (float(rng.random()), float(rng.random()))
    return na_draws, occlusion_draws


def visible_fraction(region, scene: Scene) -> float:
    """Share of a region inside the crop and outside the zero padding."""
    x0, y0, x1, y1 = region
    area = max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6)

    def overlap(bx0, by0, bx1, by1):
        return max(0.0, min(x1, bx1) - max(x0, bx0)) * max(0.0, min(y1, by1) - max(y0, by0))

    inside = overlap(0, 0, scene.width, scene.height)
    band = truncated_band(scene)
    if band is not None:
        inside -= overlap(*band)
    return inside / area


def scene_labels(scene: Scene) -> dict[str, int]:
    """Stored attribute values (0 = N/A) for the scene's main person."""
    p = scene.person
    regions = Pose(p).regions()
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
        if visible_fraction(regions[cue_region[attr.name]], scene) < MIN_VISIBLE.get(attr.name, DEFAULT_MIN_VISIBLE):
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
