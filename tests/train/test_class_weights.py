"""loss: balanced: the training split's class frequencies (label budget, mirroring) and the weights made of them."""
import numpy as np
import pytest

from patchray.shards import Attribute, AttributeSet, CropRecord, DatasetMeta, ShardWriter, open_shards
from patchray.train.finetune import balanced_class_weights, training_class_counts

ATTRIBUTES = AttributeSet((
    Attribute("Orientation", ("front", "back", "left", "right"), mirror_classes=(("left", "right"),)),
    Attribute("BagLeft", ("no", "yes"), mirror_partner="BagRight"),
    Attribute("BagRight", ("no", "yes"), mirror_partner="BagLeft"),
))
# Stored values (0 = N/A) of crops c0..c5: Orientation, BagLeft, BagRight.
LABELS = [(1, 1, 1), (1, 2, 1), (1, 0, 1), (3, 1, 1), (0, 1, 1), (2, 1, 2)]


@pytest.fixture
def shards(tmp_path):
    with ShardWriter(tmp_path / "d", DatasetMeta("d", ATTRIBUTES), "labeled", rows_per_shard=4) as writer:
        for i, (o, left, right) in enumerate(LABELS):
            writer.add(CropRecord(image=b"pixels are not read %d" % i, crop_id=f"c{i}", split="train",
                                  labels={"Orientation": o, "BagLeft": left, "BagRight": right}))
    return open_shards(str(tmp_path / "d"))


def test_class_counts_of_the_training_split_and_its_label_budget(shards):
    assert len(shards.files) == 2  # counted across files
    counts = training_class_counts(shards, None, mirror=False)
    assert [c.tolist() for c in counts] == [[3, 1, 1, 0], [4, 1], [5, 1]]  # N/A not counted
    budget = {"c0", "c3", "c5"}
    assert [c.tolist() for c in training_class_counts(shards, budget, mirror=False)] == [[1, 1, 1, 0], [3, 0], [2, 1]]


def test_class_counts_with_mirroring_average_the_crops_and_their_mirror_images(shards):
    counts = training_class_counts(shards, None, mirror=True)
    # Orientation left <-> right: (3,1,1,0) and (3,1,0,1) -> (3,1,.5,.5). BagLeft and BagRight trade places.
    assert [c.tolist() for c in counts] == [[3, 1, 0.5, 0.5], [4.5, 1], [4.5, 1]]


def test_balanced_weights_are_normalised_inverse_frequencies():
    weights = balanced_class_weights([np.array([3, 1, 0.5, 0.5]), np.array([4, 0]), np.array([0, 0])])
    # n = 5 labeled, 4 classes: w_c = 5 / (4 n_c); a labeled example weighs 1 on average (sum n_c w_c = n).
    assert weights[0] == pytest.approx([5 / 12, 5 / 4, 5 / 2, 5 / 2])
    assert sum(n * w for n, w in zip([3, 1, 0.5, 0.5], weights[0])) == pytest.approx(5)
    assert weights[1] == [1.0, 0.0]  # a class absent from training weighs 0
    assert weights[2] == [0.0, 0.0]  # no labeled example at all
    assert balanced_class_weights([np.array([7, 7])]) == [[1.0, 1.0]]  # balanced data: plain cross-entropy


def test_loss_is_ce_or_balanced():
    from patchray import config as configlib
    from patchray.train.config import FinetuneConfig

    assert configlib.build(FinetuneConfig, {}).loss == "ce"
    assert configlib.load(FinetuneConfig, None, ["loss=balanced"]).loss == "balanced"
    with pytest.raises(configlib.ConfigError, match="loss: 'focal' is not one of"):
        configlib.load(FinetuneConfig, None, ["loss=focal"])
