"""Which crops fine-tuning scores: the val_limit subset (drawn by val_seed and crop id, decoded in file order)
and the test split only with evaluate_test (patchray.train.finetune; no Ray)."""
import pytest
from helpers import jpeg_bytes

from patchray import config as configlib
from patchray.shards import Attribute, AttributeSet, CropRecord, DatasetMeta, ShardWriter, open_shards
from patchray.train.config import FinetuneConfig
from patchray.train.finetune import choose_val_subset, labeled_folders, read_labeled, resolve_splits
from patchray.train.identity import run_identity

CROPS = 200
# One class per crop, so that the labels read back say which crops were decoded, and in which order.
INDEX = AttributeSet((Attribute("Index", tuple(f"crop{i}" for i in range(CROPS))),))


def _write_val(out, order, rows_per_shard):
    image = jpeg_bytes()
    with ShardWriter(out, DatasetMeta("val-subset", INDEX), "labeled", rows_per_shard=rows_per_shard) as writer:
        for i in order:
            assert writer.add(CropRecord(image=image, crop_id=f"v{i:03d}", split="val",
                                         labels={"Index": i + 1})) is None
    return open_shards(str(out / "*-val-*.parquet"))


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    """Crops v000..v199 in id order over 4 files, as a split sorted by sequence or camera would be."""
    return _write_val(tmp_path_factory.mktemp("val"), range(CROPS), rows_per_shard=64)


@pytest.fixture(scope="module")
def reordered_split(tmp_path_factory):
    """The same crops in reverse order, over other files."""
    return _write_val(tmp_path_factory.mktemp("val_reordered"), reversed(range(CROPS)), rows_per_shard=50)


def _cfg(**overrides) -> FinetuneConfig:
    return configlib.build(FinetuneConfig, {"data": ["unused"]} | overrides)


def test_val_subset_is_drawn_by_val_seed_whatever_the_seed(val_split):
    assert len(val_split.files) == 4
    chosen = choose_val_subset(val_split, _cfg(val_limit=50, seed=0))
    assert len(chosen) == 50
    assert choose_val_subset(val_split, _cfg(val_limit=50, seed=7)) == chosen  # another trial seed: same crops
    assert choose_val_subset(val_split, _cfg(val_limit=50, seed=0, val_seed=1)) != chosen
    assert chosen != {f"v{i:03d}" for i in range(50)}  # not the top of the files
    assert max(chosen) > "v128"  # drawn across the files, not from the first ones


def test_val_subset_does_not_depend_on_shard_order(val_split, reordered_split):
    assert choose_val_subset(reordered_split, _cfg(val_limit=50)) == choose_val_subset(val_split, _cfg(val_limit=50))


def test_no_limit_or_one_over_the_split_scores_every_crop(val_split):
    assert choose_val_subset(val_split, _cfg()) is None
    assert choose_val_subset(val_split, _cfg(val_limit=CROPS)) is None


def test_val_subset_is_decoded_alone_in_file_order(val_split):
    chosen = choose_val_subset(val_split, _cfg(val_limit=30))
    pixels, labels, skipped = read_labeled(val_split, 20, 40, "val", include_ids=chosen)
    assert pixels.shape == (30, 40, 20, 3) and not skipped
    assert [f"v{label - 1:03d}" for label in labels[:, 0]] == sorted(chosen)  # ids are in file order here


def test_without_evaluate_test_no_test_split_is_looked_for(tmp_path):
    specs = {"train_data": [str(tmp_path / "t-*.parquet")], "val_data": [str(tmp_path / "v-*.parquet")]}
    cfg = configlib.build(FinetuneConfig, specs | {"evaluate_test": False})
    assert labeled_folders(cfg) == []  # train and val given: no synthetic default rendered for a test split
    assert resolve_splits(cfg) == {"train": specs["train_data"], "val": specs["val_data"]}
    tested = _cfg(data=[str(tmp_path)])
    assert set(resolve_splits(tested)) == {"train", "val", "test"}


def test_val_seed_and_evaluate_test_are_part_of_the_run_identity():
    identity = run_identity(configlib.to_dict(_cfg(val_limit=10, val_seed=3, evaluate_test=False)), {}, 1)
    assert identity["val_seed"] == 3 and identity["evaluate_test"] is False
