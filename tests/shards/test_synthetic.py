"""Tests of the synthetic PARSE-27k-like renderer: determinism, label ranges and
prevalences, the left/right and orientation conventions, mirroring, truncation."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from patchray.shards.attributes import NA, PARSE27K
from patchray.shards.synthetic import (
    LEFT,
    RIGHT,
    Background,
    Paint,
    Scene,
    mirror_scene,
    orientation_of,
    render_batch,
    render_crop,
    render_scene,
    sample_scene,
    scene_labels,
)

W, H = 100, 200
MAGENTA = (255, 0, 255)  # bags
GREEN = (0, 200, 0)  # backpacks
BLUE = (0, 0, 230)  # trolleys
ORANGE = (230, 120, 0)  # prams


@pytest.fixture(scope="module")
def many_labels() -> np.ndarray:
    """[N, A] labels of crops 0..1999 of seed 11 (labels need no pixels, so this is cheap)."""
    return np.array([label_row(sample_scene(11, i)) for i in range(2000)])


def label_row(scene: Scene) -> list[int]:
    labels = scene_labels(scene)
    return [labels[a] for a in PARSE27K.names]


def clean_scene(yaw: float, **person) -> Scene:
    """A scene on a flat grey background, without noise, blur, clutter or random N/A.

    The person stands in the middle (cx = 50) in plain grey clothes, so that the
    carried things, painted in colours nothing else uses, can be found by colour.
    """
    s = sample_scene(0, 0)
    flat = Background(color_a=(128, 128, 128), color_b=(128, 128, 128), gradient_angle=0.0, horizon=None,
                      horizon_tilt=0.0, ground=(128, 128, 128), shapes=())
    p = replace(s.person, cx=W / 2, top=18.0, height=165.0, yaw=yaw, walking=False,
                upper=Paint((90, 90, 95)), lower=Paint((60, 60, 65)), legwear="trousers", long_hair=False,
                skin=(200, 160, 120), hair=(40, 30, 25), shoes=(30, 30, 30),
                shoulder_bags=(), hand_bags=(), backpack=False, trolley=0, pushing=False, phone=0,
                bag_color=MAGENTA, pack_color=GREEN, trolley_color=BLUE, pram_color=ORANGE)
    p = replace(p, **person)
    return replace(s, person=p, background=flat, others=(), truncation=None, truncation_frac=0.0, gain=1.0,
                   cast=(0.0, 0.0, 0.0), noise_sigma=0.0, downscale=1.0, blur=0.0,
                   na_draws=(1.0,) * len(PARSE27K), occlusion_draws=(0.5, 0.5))


def color_pixels(image: Image.Image, color) -> tuple[int, float]:
    """Count of pixels of exactly this colour, and their mean x (nan if none)."""
    a = np.asarray(image)
    ys, xs = np.nonzero(np.all(a == np.array(color, np.uint8), axis=2))
    return len(xs), float(xs.mean()) if len(xs) else float("nan")


# ----------------------------------------------------------------------------- basics

def test_same_seed_and_index_give_identical_crops():
    a_img, a_lab = render_crop(5, 123)
    b_img, b_lab = render_crop(5, 123)
    assert np.array_equal(np.asarray(a_img), np.asarray(b_img))
    assert a_lab == b_lab


def test_different_index_or_seed_gives_different_crops():
    base = np.asarray(render_crop(5, 123)[0], np.int16)
    for seed, index in ((5, 124), (6, 123)):
        other = np.asarray(render_crop(seed, index)[0], np.int16)
        assert np.abs(base - other).mean() > 5


def test_batch_matches_single_crops():
    batch = render_batch(3, 40, 3)
    for k, (img, lab) in enumerate(batch):
        img1, lab1 = render_crop(3, 40 + k)
        assert np.array_equal(np.asarray(img), np.asarray(img1)) and lab == lab1


@pytest.mark.parametrize("size", [(100, 200), (64, 128)])
def test_image_size_mode_and_label_ranges(size):
    for index in range(20):
        img, labels = render_crop(0, index, *size)
        assert img.mode == "RGB" and img.size == size
        assert set(labels) == set(PARSE27K.names)
        for attr in PARSE27K:
            v = labels[attr.name]
            assert isinstance(v, int) and 0 <= v <= attr.num_classes, (attr.name, v)


def test_rendered_labels_are_the_scene_labels():
    for index in range(10):
        assert render_crop(2, index)[1] == scene_labels(sample_scene(2, index))


def test_crops_are_not_blank_and_vary_in_brightness():
    means = [np.asarray(render_crop(1, i)[0], np.float32).mean() for i in range(30)]
    stds = [np.asarray(render_crop(1, i)[0], np.float32).std() for i in range(5)]
    assert min(stds) > 10  # there is structure in every crop
    assert np.std(means) > 5  # exposure and backgrounds differ between crops


# ----------------------------------------------------------------------------- label statistics

def test_every_class_occurs_and_na_is_a_minority(many_labels):
    n = len(many_labels)
    for j, attr in enumerate(PARSE27K):
        counts = np.bincount(many_labels[:, j], minlength=attr.num_classes + 1)
        assert (counts[1:] > 0).all(), (attr.name, counts)
        assert counts[NA] > 0, attr.name
        assert counts[NA] / n < 0.3, (attr.name, counts[NA] / n)


def _positive_rate(labels: np.ndarray, name: str) -> float:
    col = labels[:, PARSE27K.names.index(name)]
    col = col[col != NA]
    return float((col == PARSE27K[name].value("yes")).mean())


def test_prevalences_are_realistic(many_labels):
    names = PARSE27K.names
    orient = many_labels[:, names.index("Orientation")]
    orient = orient[orient != NA]
    shares = np.bincount(orient, minlength=5)[1:] / len(orient)
    assert shares.min() > 0.18 and shares.max() < 0.32, shares

    gender = many_labels[:, names.index("Gender")]
    assert 0.01 < (gender == NA).mean() < 0.08  # "a few percent"
    female = (gender[gender != NA] == PARSE27K["Gender"].value("female")).mean()
    assert 0.4 < female < 0.6

    posture = many_labels[:, names.index("Posture")]
    walking = (posture[posture != NA] == PARSE27K["Posture"].value("walking")).mean()
    assert 0.5 < walking < 0.7

    for name in ("HasBagOnShoulderLeft", "HasBagOnShoulderRight", "HasBagInHandLeft", "HasBagInHandRight"):
        assert 0.07 < _positive_rate(many_labels, name) < 0.25, name
    for name in ("HasTrolley", "isPushing", "isTalkingOnPhone"):
        assert 0.03 < _positive_rate(many_labels, name) < 0.12, name
    assert 0.12 < _positive_rate(many_labels, "HasBackpack") < 0.24


def test_left_and_right_are_symmetric_in_the_statistics(many_labels):
    names = PARSE27K.names
    for left, right in (("HasBagOnShoulderLeft", "HasBagOnShoulderRight"), ("HasBagInHandLeft", "HasBagInHandRight")):
        assert abs(_positive_rate(many_labels, left) - _positive_rate(many_labels, right)) < 0.05
        na_l = (many_labels[:, names.index(left)] == NA).mean()
        na_r = (many_labels[:, names.index(right)] == NA).mean()
        assert abs(na_l - na_r) < 0.05


def test_gender_cue_is_informative_but_overlapping():
    people = [sample_scene(4, i).person for i in range(1500)]
    female = np.array([p.female for p in people])
    long_hair = np.array([p.long_hair for p in people])
    skirt = np.array([p.legwear == "skirt" for p in people])
    shoulders = np.array([p.shoulder_w for p in people])
    assert long_hair[female].mean() > long_hair[~female].mean() + 0.3
    assert 0.02 < long_hair[~female].mean() and long_hair[female].mean() < 0.95  # not a perfect cue
    assert skirt[female].mean() > 0.2 and skirt[~female].mean() < 0.05
    assert shoulders[~female].mean() > shoulders[female].mean()
    # build overlaps: many women are broader than the narrowest quarter of men
    assert (shoulders[female] > np.quantile(shoulders[~female], 0.25)).mean() > 0.1


def test_orientation_bins():
    assert [orientation_of(y) for y in (0, 44, 46, 134, 136, 224, 226, 314, 316, -10)] == \
        ["front", "front", "left", "left", "back", "back", "right", "right", "front", "front"]


# ----------------------------------------------------------------------------- geometry and side conventions

@pytest.mark.parametrize("kind", ["hand_bags", "shoulder_bags"])
def test_bag_side_convention_front_and_back(kind):
    cx = W / 2
    # front view: the person's left side is on the image right; from behind it is on the image left
    for yaw, left_on_image_right in ((0.0, True), (180.0, False)):
        for side in (LEFT, RIGHT):
            img, labels = render_scene(clean_scene(yaw, **{kind: (side,)}))
            count, mean_x = color_pixels(img, MAGENTA)
            assert count > 30, (yaw, side)
            on_right = mean_x > cx
            assert on_right == ((side == LEFT) == left_on_image_right), (kind, yaw, side, mean_x)
            name = (("HasBagInHand" if kind == "hand_bags" else "HasBagOnShoulder")
                    + ("Left" if side == LEFT else "Right"))
            other = name.replace("Left", "Right") if side == LEFT else name.replace("Right", "Left")
            assert labels[name] == PARSE27K[name].value("yes")
            assert labels[other] == PARSE27K[other].value("no")


def test_profile_shows_the_near_side_and_hides_the_far_side():
    # facing the LEFT image edge, the person's left side faces the camera
    for yaw, near, far in ((90.0, LEFT, RIGHT), (270.0, RIGHT, LEFT)):
        near_img, near_labels = render_scene(clean_scene(yaw, hand_bags=(near,)))
        far_img, far_labels = render_scene(clean_scene(yaw, hand_bags=(far,)))
        near_count, _ = color_pixels(near_img, MAGENTA)
        far_count, _ = color_pixels(far_img, MAGENTA)
        assert near_count > 1.5 * far_count, (yaw, near_count, far_count)
        near_name = "HasBagInHand" + ("Left" if near == LEFT else "Right")
        far_name = "HasBagInHand" + ("Left" if far == LEFT else "Right")
        assert near_labels[near_name] == PARSE27K[near_name].value("yes")
        assert far_labels[far_name] == NA  # occlusion draw 0.5 < far-side N/A rate
        # and a far side with an unlucky draw stays labeled
        s = clean_scene(yaw, hand_bags=(far,))
        s = replace(s, occlusion_draws=(0.99, 0.99))
        assert scene_labels(s)[far_name] == PARSE27K[far_name].value("yes")


def test_profile_items_sit_where_the_person_faces():
    cx = W / 2
    for yaw, faces_left in ((90.0, True), (270.0, False)):
        # the backpack bulges out of the back, the trolley trails behind, the pram goes ahead
        _, pack_x = color_pixels(render_scene(clean_scene(yaw, backpack=True))[0], GREEN)
        _, case_x = color_pixels(render_scene(clean_scene(yaw, trolley=LEFT))[0], BLUE)
        _, pram_x = color_pixels(render_scene(clean_scene(yaw, pushing=True))[0], ORANGE)
        behind = (lambda x: x > cx) if faces_left else (lambda x: x < cx)
        assert behind(pack_x) and behind(case_x) and not behind(pram_x), (yaw, pack_x, case_x, pram_x)


def test_backpack_is_seen_fully_from_behind_and_as_straps_from_the_front():
    def green_pixels(yaw):  # the pack and its (shaded) straps; nothing else in the clean scene is green
        a = np.asarray(render_scene(clean_scene(yaw, backpack=True))[0]).astype(int)
        return int(((a[..., 1] > 100) & (a[..., 0] < 40) & (a[..., 2] < 40)).sum())

    assert green_pixels(180.0) > 3 * green_pixels(0.0) > 0


def test_phone_hand_is_raised_to_the_head():
    still = np.asarray(render_scene(clean_scene(0.0))[0], np.int16)
    phone = np.asarray(render_scene(clean_scene(0.0, phone=LEFT))[0], np.int16)
    changed = np.nonzero(np.abs(phone - still).sum(axis=2) > 30)
    # the raised arm adds pixels beside the head (top quarter of the person) on the image right
    head_rows = changed[0] < 18 + 0.25 * 165
    assert head_rows.sum() > 20
    assert changed[1][head_rows].mean() > W / 2


def test_walking_legs_spread_more_than_standing_in_profile():
    def foot_spread(walking: bool) -> float:
        # cyan shoes; the far foot is drawn in shadow, so match the hue, not the exact colour
        a = np.asarray(render_scene(clean_scene(90.0, walking=walking, stride=0.35, shoes=(10, 250, 250)))[0])
        a = a.astype(int)
        xs = np.nonzero((a[..., 0] < 30) & (a[..., 1] > 150) & (a[..., 2] > 150))[1]
        return float(xs.max() - xs.min())

    assert foot_spread(True) > foot_spread(False) + 20


def test_mirroring_a_scene_mirrors_its_labels():
    for index in range(300):
        s = sample_scene(9, index)
        labels = np.array(label_row(s))
        mirrored = np.array(label_row(mirror_scene(s)))
        assert np.array_equal(mirrored, PARSE27K.mirror(labels)), index


def test_mirroring_a_scene_mirrors_its_pixels():
    closer, total = [], []
    for index in range(12):
        s = sample_scene(8, index)
        p = replace(s.person, upper=Paint(s.person.upper.color), lower=Paint(s.person.lower.color))
        s = replace(s, person=p, others=(), noise_sigma=0.0, blur=0.0, downscale=1.0)
        a = np.asarray(render_scene(s)[0], np.float32)
        b = np.asarray(render_scene(mirror_scene(s))[0], np.float32)
        closer.append(np.abs(a[:, ::-1] - b).mean())
        total.append(np.abs(a - b).mean())
    # a flipped crop is (up to rasterisation) the crop of the mirrored scene
    assert np.mean(closer) < 0.15 * np.mean(total), (closer, total)
    assert max(closer) < 3.0


# ----------------------------------------------------------------------------- framing, truncation, clutter

def test_person_is_roughly_centred():
    """Where the person changes the crop: more in the centre columns than at the far edges."""
    diff = np.zeros(W)
    for index in range(60):
        s = sample_scene(6, index)
        gone = replace(s, person=replace(s.person, cx=-10 * W))  # same background, noise and all
        a = np.asarray(render_scene(s)[0], np.float32)
        b = np.asarray(render_scene(gone)[0], np.float32)
        diff += np.abs(a - b).mean(axis=(0, 2))
    centre = diff[40:60].mean()
    assert centre > 3 * diff[:8].mean() and centre > 3 * diff[-8:].mean(), diff.round(1)


def test_person_is_not_always_at_the_same_place():
    xs = [sample_scene(6, i).person.cx for i in range(200)]
    heights = [sample_scene(6, i).person.height for i in range(200)]
    assert np.std(xs) > 2 and np.std(heights) > 5
    assert abs(np.mean(xs) - W / 2) < 3


def test_bottom_truncation_is_zero_padding_and_hides_the_posture():
    s = replace(clean_scene(0.0, walking=True), truncation="bottom", truncation_frac=0.35)
    img, labels = render_scene(s)
    a = np.asarray(img)
    assert (a[int(0.66 * H):] == 0).all()
    assert (a[: int(0.6 * H)] != 0).any(axis=2).all()
    assert labels["Posture"] == NA
    assert labels["Orientation"] != NA and labels["Gender"] != NA


def test_side_truncation_hides_that_side():
    # front view: the person's left side is on the image right, so cutting the right border hides it
    s = replace(clean_scene(0.0, hand_bags=(LEFT,)), truncation="right", truncation_frac=0.45)
    labels = render_scene(s)[1]
    assert labels["HasBagInHandLeft"] == NA
    assert labels["HasBagInHandRight"] != NA


def test_truncated_crops_in_the_wild_have_zero_borders():
    found = 0
    for index in range(400):
        s = sample_scene(12, index)
        if s.truncation is None or s.downscale < 1.0:
            continue
        a = np.asarray(render_scene(s)[0])
        edge = {"top": a[:2], "bottom": a[-2:], "left": a[:, :2], "right": a[:, -2:]}[s.truncation]
        assert (edge == 0).all(), (index, s.truncation)
        found += 1
    assert found > 5


def test_backgrounds_do_not_encode_height():
    """The background brightness gradient points in random directions, so on average it is flat."""
    tops, bottoms = [], []
    for index in range(200):
        bg = sample_scene(13, index).background
        ya = np.sin(bg.gradient_angle)  # + means color_b is lower in the crop
        a, b = np.mean(bg.color_a), np.mean(bg.color_b)
        tops.append(a if ya > 0 else b)
        bottoms.append(b if ya > 0 else a)
    assert abs(np.mean(tops) - np.mean(bottoms)) < 15
    horizons = [h for h in (sample_scene(13, i).background.horizon for i in range(200)) if h is not None]
    assert np.std(horizons) > 0.15
