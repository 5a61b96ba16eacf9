"""The pipeline's two stages as plain functions (no cluster): decode_batch and PatchCollate."""
import numpy as np
import pyarrow as pa

from patchray.patches import PatchTaskConfig, training_patches
from patchray.pipeline import HELD_OUT, PatchCollate, decode_batch

from helpers import jpeg_bytes


def _table(images, ids):
    return pa.table({"image": pa.array(images, pa.binary()), "crop_id": ids})


def test_decode_batch_resizes_marks_bad_and_held_out_rows():
    good = jpeg_bytes(50, 100, (10, 200, 30))
    batch = _table([good, b"junk", good[:40], good], ["a", "b", "c", "val0"])
    out = decode_batch(batch, 100, 200, exclude_ids=frozenset({"val0"}))
    assert out["pixels"].shape == (4, 200, 100, 3) and out["pixels"].dtype == np.uint8
    assert list(out["skip"]) == ["", "unreadable_image", "truncated_image", HELD_OUT]
    assert abs(int(out["pixels"][0, 100, 50, 1]) - 200) <= 3  # resized, colour kept
    assert out["pixels"][3].max() == 0  # held-out rows are not decoded


def test_collate_cuts_epoch_patches_and_counts_bad_rows_only():
    task = PatchTaskConfig()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 200, 100, 3), dtype=np.uint8)
    batch = {"pixels": pixels, "crop_id": np.array(["a", "b", "c", "d"], dtype=object),
             "skip": np.array(["", "truncated_image", HELD_OUT, ""], dtype=object)}
    out = PatchCollate(task, seed=5, epoch=2)(batch)
    assert dict(out["skipped"]) == {"truncated_image": 1}
    assert out["patches"].shape == (2 * task.patches_per_crop, 32, 32, 3)
    expected, labels = training_patches(pixels[[0, 3]], ["a", "d"], task, 5, 2)
    assert np.array_equal(out["patches"].numpy(), expected) and np.array_equal(out["labels"].numpy(), labels)
    other_epoch = PatchCollate(task, seed=5, epoch=3)(batch)
    assert not np.array_equal(other_epoch["patches"].numpy(), expected)
