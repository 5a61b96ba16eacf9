"""Where the online probe's labeled crops come from (patchray.train.probe_set): the labeled sibling, drawn by id."""
import numpy as np
import pytest
from helpers import jpeg_bytes

from patchray.probe import ProbeConfig
from patchray.shards import PARSE27K, AttributeSet, CropRecord, DatasetMeta, ShardWriter
from patchray.train.probe_set import labeled_sibling, probe_folders, read_probe_set


def _write(folder, kind, splits, bad=()):
    """Crops c<split><i> whose Gender is 1 for even i and 2 for odd i; the ids in ``bad`` hold no image."""
    with ShardWriter(folder, DatasetMeta("probe", PARSE27K if kind == "labeled" else AttributeSet()), kind,
                     rows_per_shard=16) as writer:
        for split, count in splits.items():
            for i in range(count):
                crop_id = f"{split}{i:03d}"
                labels = {"Gender": 1 if i % 2 == 0 else 2} if kind == "labeled" else {}
                image = b"not a jpeg" if crop_id in bad else jpeg_bytes(50, 100, color=(5 * i % 255, 90, 200))
                assert writer.add(CropRecord(image=image, crop_id=crop_id, split=split, labels=labels)) is None


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """root/unlabeled (what pretraining reads) beside root/labeled (train 40, val 30, one bad val row)."""
    root = tmp_path_factory.mktemp("data")
    _write(root / "unlabeled", "unlabeled", {"train": 20})
    _write(root / "labeled", "labeled", {"train": 40, "val": 30, "test": 10}, bad={"val003"})
    return root


def test_the_labeled_sibling_is_found_beside_a_folder_or_a_glob_and_nowhere_else(layout, tmp_path):
    assert labeled_sibling([str(layout / "unlabeled")]) == [str(layout / "labeled")]
    assert labeled_sibling([str(layout / "unlabeled" / "*-train-*.parquet")]) == [str(layout / "labeled")]
    assert labeled_sibling([str(tmp_path)]) == []                      # nothing beside it
    assert labeled_sibling(["s3://bucket/unlabeled"]) == []             # never looked for beside a URI
    assert labeled_sibling([str(layout / "labeled")]) == []             # the labeled folder is not its own sibling
    # given data wins; off is off
    assert probe_folders(ProbeConfig(data=["/elsewhere"]), [str(layout / "unlabeled")]) == ["/elsewhere"]
    assert probe_folders(ProbeConfig(enabled=False), [str(layout / "unlabeled")]) == []


def test_probe_crops_are_drawn_by_id_decoded_at_the_crop_size_and_bad_rows_counted(layout):
    cfg = ProbeConfig(train_crops=12, val_crops=50)
    probe = read_probe_set([str(layout / "labeled")], cfg, 100, 200, "aspect", seed=0)
    assert probe.train_pixels.shape == (12, 200, 100, 3) and probe.train_pixels.dtype == np.uint8
    assert len(probe.val_labels) == 29 and probe.skipped == {"unreadable_image": 1}  # all 30 asked, one bad
    gender = PARSE27K.names.index("Gender")
    assert set(probe.train_labels[:, gender]) <= {1, 2} and probe.train_labels.shape[1] == len(PARSE27K)
    assert "12 train + 29 val labeled crops" in probe.describe() and "1 bad row(s) skipped" in probe.describe()
    # the same seed draws the same crops; another seed other ones; a larger draw keeps the smaller one's crops
    again = read_probe_set([str(layout / "labeled")], cfg, 100, 200, "aspect", seed=0)
    assert np.array_equal(again.train_pixels, probe.train_pixels)
    other = read_probe_set([str(layout / "labeled")], cfg, 100, 200, "aspect", seed=1)
    assert not np.array_equal(other.train_pixels, probe.train_pixels)
    larger = read_probe_set([str(layout / "labeled")], ProbeConfig(train_crops=20, val_crops=5), 100, 200,
                            "aspect", seed=0)
    assert all(any(np.array_equal(p, q) for q in larger.train_pixels) for p in probe.train_pixels)
