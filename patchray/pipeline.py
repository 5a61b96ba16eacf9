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

from patchray.patches import PatchTaskConfig, crop_seed, training_patches
from patchray.shards.attributes import AttributeSet
from patchray.shards.decode import decode_crops
from patchray.shards.reader import ShardSet
from patchray.shards.schema import CROP_ID, IMAGE

# Rows per decode task: big enough to amortise task overhead, small enough
# (~3 MB of JPEG in, ~6 MB of pixels out) to stream.
DECODE_BATCH_ROWS = 100


def _tensor_column(array: np.ndarray) -> pa.Array:
    # Built explicitly so that a block with no rows left still has a typed tensor column.
    from ray.data.extensions import ArrowTensorArray

    return ArrowTensorArray.from_numpy(array)


def decode_batch(batch: pa.Table, width: int, height: int, exclude_ids: frozenset[str] = frozenset(),
                 include_ids: frozenset[str] | None = None, label_columns: tuple[str, ...] = ()) -> pa.Table:
    """map_batches stage: encoded images -> ``pixels`` uint8 [H, W, 3], ``crop_id``, ``skip`` reason
    ("" for a good crop), and with ``label_columns`` a ``labels`` int16 [A] column.

    Rows in ``exclude_ids`` (held out for validation), or not in ``include_ids``
    (a label budget), are dropped before decoding.
    """
    torch.set_num_threads(1)  # one data task per CPU; intra-op threads would only fight each other
    crop_ids = batch.column(CROP_ID).to_pylist()
    keep = [i for i, c in enumerate(crop_ids)
            if c not in exclude_ids and (include_ids is None or c in include_ids)]
    if len(keep) < len(crop_ids):
        batch = batch.take(pa.array(keep, pa.int64()))
        crop_ids = [crop_ids[i] for i in keep]
    pixels, reasons = decode_crops(batch.column(IMAGE).to_pylist(), width, height)
    columns = {"pixels": _tensor_column(pixels), CROP_ID: pa.array(crop_ids, pa.string()),
               "skip": pa.array(reasons, pa.string())}
    if label_columns:
        labels = np.stack([batch.column(c).to_numpy(zero_copy_only=False) for c in label_columns], axis=1)
        columns["labels"] = _tensor_column(labels.astype(np.int16).reshape(len(crop_ids), len(label_columns)))
    return pa.table(columns)


def crop_dataset(shards: ShardSet, width: int, height: int, exclude_ids=frozenset(), include_ids=None,
                 label_columns: tuple[str, ...] = (), seed: int = 0, override_num_blocks=None,
                 data_resources: dict[str, float] | None = None):
    """A Ray Dataset of decoded crops (see ``decode_batch`` for the columns).

    It streams: nothing here materialises the dataset (no all-to-all step). Each
    execution (epoch) reads the files in a new, seeded order; workers shuffle
    further within a small buffer. ``data_resources`` (e.g. ``{"data_node": 1}``) pins
    reading and decoding to the nodes that offer those custom resources.
    """
    import ray.data
    from ray.data import FileShuffleConfig

    placement = {"resources": dict(data_resources)} if data_resources else {}
    ds = ray.data.read_parquet(list(shards.files), filesystem=shards.filesystem,
                               shuffle=FileShuffleConfig(seed=seed, reseed_after_execution=True),
                               override_num_blocks=override_num_blocks, ray_remote_args=placement or None)
    ds = ds.select_columns([IMAGE, CROP_ID, *label_columns])
    kwargs = {"width": width, "height": height, "exclude_ids": frozenset(exclude_ids),
              "include_ids": frozenset(include_ids) if include_ids is not None else None,
              "label_columns": tuple(label_columns)}
    return ds.map_batches(decode_batch, fn_kwargs=kwargs, batch_size=DECODE_BATCH_ROWS, batch_format="pyarrow",
                          zero_copy_batch=True, **placement)


def _good_rows(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, Counter]:
    reasons = batch["skip"]
    return np.array([not r for r in reasons], dtype=bool), Counter(r for r in reasons if r)


class PatchCollate(NumpyBatchCollateFn):
    """Training-worker collate: drop (and count) bad rows, cut the epoch's patches.

    Returns ``{"patches": uint8 [B*K, P, P, 3] (pairwise [B*K, 2, P, P, 3]),
    "labels": int64 [B*K]}`` plus ``skipped``: a Counter of bad rows in this batch.
    """

    def __init__(self, task: PatchTaskConfig, seed: int, epoch: int):
        self.task, self.seed, self.epoch = task, seed, epoch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        good, skipped = _good_rows(batch)
        pixels = batch["pixels"][good]
        crop_ids = [str(c) for c in batch[CROP_ID][good]]
        patches, labels = training_patches(pixels, crop_ids, self.task, self.seed, self.epoch)
        return {"patches": torch.from_numpy(patches), "labels": torch.from_numpy(labels), "skipped": skipped}


class AttributeCollate(NumpyBatchCollateFn):
    """Fine-tuning collate: drop (and count) bad rows; mirror crops at random with their labels.

    Whether a crop is mirrored is a function of (seed, epoch, crop id); mirrored
    labels come from the dataset's own swap table (``AttributeSet.mirror``).
    Returns ``{"images": uint8 [B, H, W, 3], "labels": int64 [B, A], "skipped": Counter}``.
    """

    def __init__(self, attributes: AttributeSet, seed: int, epoch: int, mirror: bool = True):
        self.attributes, self.seed, self.epoch, self.mirror = attributes, seed, epoch, mirror

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        good, skipped = _good_rows(batch)
        images = batch["pixels"][good]
        labels = batch["labels"][good].astype(np.int64)
        if self.mirror and len(images):
            crop_ids = [str(c) for c in batch[CROP_ID][good]]
            flip = np.array([crop_seed(self.seed, self.epoch, c) & 1 for c in crop_ids], dtype=bool)
            images = images.copy()
            images[flip] = images[flip, :, ::-1]
            labels[flip] = self.attributes.mirror(labels[flip])
        return {"images": torch.from_numpy(np.ascontiguousarray(images)), "labels": torch.from_numpy(labels),
                "skipped": skipped}
