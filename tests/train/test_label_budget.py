"""Fine-tuning's label budget (patchray.train.finetune.choose_budget): the same crops for every init."""
import pytest
from helpers import jpeg_bytes

from patchray.shards import AttributeSet, CropRecord, DatasetMeta, ShardWriter, open_shards
from patchray.train.finetune import choose_budget


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget")
    image = jpeg_bytes()
    with ShardWriter(out, DatasetMeta("budget", AttributeSet()), "labeled", rows_per_shard=64) as writer:
        for i in range(200):
            assert writer.add(CropRecord(image=image, crop_id=f"c{i:03d}", split="train")) is None
        for i in range(20):
            assert writer.add(CropRecord(image=image, crop_id=f"v{i:03d}", split="val")) is None
    return open_shards(str(out / "*-train-*.parquet"))


def test_label_budget_is_the_same_crops_for_every_init(train_split):
    assert len(train_split.files) == 4  # the order crosses shard files
    a = choose_budget(train_split, 50, seed=1)
    assert len(a) == 50 and a == choose_budget(train_split, 50, seed=1)
    assert all(c.startswith("c") for c in a)  # training crops only
    assert a != choose_budget(train_split, 50, seed=2)
    assert choose_budget(train_split, 60, seed=1) > a  # a bigger budget adds crops, keeps the smaller one's
    assert choose_budget(train_split, None, seed=1) is None  # no budget: every training crop
    with pytest.raises(ValueError, match="labels=201 but the training split has only 200 crops"):
        choose_budget(train_split, 201, seed=1)


def test_a_fixed_label_seed_gives_every_training_seed_the_same_labeled_crops(train_split):
    from patchray.train.config import FinetuneConfig

    def budget(**keys):
        return choose_budget(train_split, 50, FinetuneConfig(labels=50, **keys).budget_seed)

    # a search: the training seed varies, the user's labeled set does not
    assert budget(seed=1, label_seed=0) == budget(seed=2, label_seed=0) == budget(seed=0)
    # a comparison over seeds (label_seed null): each seed draws its own labeled set
    assert budget(seed=1) != budget(seed=2)
