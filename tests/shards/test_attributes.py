import json

import numpy as np
import pytest

from patchray.shards.attributes import PARSE27K, Attribute, AttributeSet


def test_parse27k_mirror_swaps_sides_and_orientation():
    names = PARSE27K.names
    labels = np.zeros(len(names), dtype=np.int64)
    labels[names.index("Orientation")] = PARSE27K["Orientation"].value("left")
    labels[names.index("HasBagInHandLeft")] = 2
    labels[names.index("HasBagInHandRight")] = 1
    labels[names.index("HasBagOnShoulderLeft")] = 0
    labels[names.index("HasBagOnShoulderRight")] = 2
    labels[names.index("Gender")] = 2
    mirrored = PARSE27K.mirror(labels)
    assert mirrored[names.index("Orientation")] == PARSE27K["Orientation"].value("right")
    assert mirrored[names.index("HasBagInHandLeft")] == 1 and mirrored[names.index("HasBagInHandRight")] == 2
    assert mirrored[names.index("HasBagOnShoulderLeft")] == 2 and mirrored[names.index("HasBagOnShoulderRight")] == 0
    assert mirrored[names.index("Gender")] == 2
    # front and back do not change; N/A stays N/A
    for cls in ("front", "back"):
        labels[0] = PARSE27K["Orientation"].value(cls)
        assert PARSE27K.mirror(labels)[0] == labels[0]
    labels[0] = 0
    assert PARSE27K.mirror(labels)[0] == 0


def test_mirror_twice_is_identity_on_batches():
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, a.num_classes + 1, 50) for a in PARSE27K], axis=1)
    assert not np.array_equal(PARSE27K.mirror(labels), labels)
    assert np.array_equal(PARSE27K.mirror(PARSE27K.mirror(labels)), labels)


def test_json_round_trip_and_validation():
    assert AttributeSet.from_list(json.loads(json.dumps(PARSE27K.to_list()))) == PARSE27K
    with pytest.raises(ValueError, match="does not name it back"):
        AttributeSet((Attribute("A", ("no", "yes"), "B"), Attribute("B", ("no", "yes"))))
    with pytest.raises(ValueError, match="not in the set"):
        AttributeSet((Attribute("A", ("no", "yes"), "Z"),))
    with pytest.raises(ValueError, match="unknown class"):
        Attribute("O", ("a", "b"), mirror_classes=(("a", "c"),))
    with pytest.raises(ValueError, match="unknown keys"):
        Attribute.from_dict({"name": "A", "classes": ["x", "y"], "colour": 1})
    with pytest.raises(ValueError, match="no class 'maybe'"):
        PARSE27K["HasTrolley"].value("maybe")


def test_orientation8_mirrors_the_left_and_right_halves_of_the_circle():
    from patchray.shards.attributes import ORIENTATION8, PARSE27K_BOTH_ORIENTATIONS

    o8 = PARSE27K_BOTH_ORIENTATIONS["Orientation8"]
    assert o8 == ORIENTATION8 and o8.num_classes == 8
    flipped = {"front": "front", "back": "back", "left": "right", "right": "left", "front-left": "front-right",
               "front-right": "front-left", "back-left": "back-right", "back-right": "back-left"}
    perm = o8.class_permutation()
    for name, mirrored in flipped.items():
        assert perm[o8.value(name)] == o8.value(mirrored)
    assert perm[0] == 0
    names = PARSE27K_BOTH_ORIENTATIONS.names
    assert names[:2] == ["Orientation", "Orientation8"] and names[2:] == PARSE27K.names[1:]
    labels = np.zeros(len(names), dtype=np.int64)
    labels[0], labels[1] = PARSE27K["Orientation"].value("left"), o8.value("back-left")
    labels[names.index("HasBagInHandLeft")] = 2
    mirrored_labels = PARSE27K_BOTH_ORIENTATIONS.mirror(labels)
    assert mirrored_labels[0] == PARSE27K["Orientation"].value("right")
    assert mirrored_labels[1] == o8.value("back-right")
    assert mirrored_labels[names.index("HasBagInHandRight")] == 2
    assert (AttributeSet.from_list(json.loads(json.dumps(PARSE27K_BOTH_ORIENTATIONS.to_list())))
            == PARSE27K_BOTH_ORIENTATIONS)
