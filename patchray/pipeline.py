"""Ray Data: stream crops from Parquet shards, decode and resize them on CPU workers.

The stream carries decoded crops; each training worker cuts the epoch's patches
from them in its batch collate step (see ``PatchCollate``). Why there and not in
``map_batches``: patches must be a function of (seed, epoch, crop id), and only
the training worker knows the epoch, while a Ray Data stage is re-run each
epoch without being told which. Cutting is a vectorised gather, about 1% of the
cost of decoding, which stays on the data workers.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from patchray.patches import PatchTaskConfig, training_patches
from patchray.shards.decode import decode_crops
from patchray.shards.reader import ShardSet
from patchray.shards.schema import CROP_ID, IMAGE

# Rows per decode task: big enough to amortise task overhead, small enough
# (~3 MB of JPEG in, ~6 MB of pixels out) to stream.
DECODE_BATCH_ROWS = 100
HELD_OUT = "held_out"  # a row reserved for validation: dropped from training, not counted as bad


def decode_batch(batch: pa.Table, width: int, height: int, exclude_ids: frozenset[str] = frozenset()
                 ) -> dict[str, np.ndarray]:
    """map_batches stage: encoded image column -> fixed-size uint8 pixels plus a skip reason per row.

    Rows in ``exclude_ids`` (the validation crops) are not decoded and are marked
    HELD_OUT rather than removed: a block must never come out empty, since Ray
    Data cannot type an empty tensor column.
    """
    torch.set_num_threads(1)  # one data task per CPU; intra-op threads would only fight each other
    crop_ids = batch.column(CROP_ID).to_pylist()
    images = batch.column(IMAGE).to_pylist()
    held_out = [c in exclude_ids for c in crop_ids] if exclude_ids else [False] * len(crop_ids)
    pixels, reasons = decode_crops([None if h else im for im, h in zip(images, held_out)], width, height)
    reasons = [HELD_OUT if h else r for r, h in zip(reasons, held_out)]
    return {"pixels": pixels, CROP_ID: np.array(crop_ids, dtype=object), "skip": np.array(reasons, dtype=object)}


def crop_dataset(shards: ShardSet, width: int, height: int, exclude_ids=frozenset(), seed: int = 0,
                 override_num_blocks=None):
    """A Ray Dataset of decoded crops: columns ``pixels`` [H, W, 3] uint8, ``crop_id``, ``skip``.

    It streams: nothing here materialises the dataset (no all-to-all step). Each
    execution (epoch) reads the files in a new, seeded order; workers shuffle
    further within a small buffer.
    """
    import ray.data
    from ray.data import FileShuffleConfig

    ds = ray.data.read_parquet(list(shards.files), filesystem=shards.filesystem,
                               shuffle=FileShuffleConfig(seed=seed, reseed_after_execution=True),
                               override_num_blocks=override_num_blocks).select_columns([IMAGE, CROP_ID])
    return ds.map_batches(decode_batch, fn_kwargs={"width": width, "height": height,
                                                   "exclude_ids": frozenset(exclude_ids)},
                          batch_size=DECODE_BATCH_ROWS, batch_format="pyarrow", zero_copy_batch=True)


class PatchCollate(NumpyBatchCollateFn):
    """Training-worker collate: drop (and count) bad rows, cut the epoch's patches.

    Returns ``{"patches": uint8 [B*K, P, P, 3] (pairwise [B*K, 2, P, P, 3]),
    "labels": int64 [B*K]}`` plus ``skipped``: a Counter of bad rows in this batch.
    """

    def __init__(self, task: PatchTaskConfig, seed: int, epoch: int):
        self.task, self.seed, self.epoch = task, seed, epoch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        reasons = batch["skip"]
        good = np.array([not r for r in reasons], dtype=bool)
        skipped = Counter(r for r in reasons if r and r != HELD_OUT)
        pixels = batch["pixels"][good]
        crop_ids = [str(c) for c in batch[CROP_ID][good]]
        patches, labels = training_patches(pixels, crop_ids, self.task, self.seed, self.epoch)
        return {"patches": torch.from_numpy(patches), "labels": torch.from_numpy(labels), "skipped": skipped}
