"""What a Ray Data task of the crop stream runs: read Parquet row groups, decode the JPEGs, and with ``cut_on=data``
cut the epoch's patches (``pipeline.crop_dataset`` builds the stream around ``read_and_decode``).

Kept apart from ``patchray.pipeline`` and free of torch: a data task imports the module of the function it runs,
and torch (with torchvision) is most of a second of every new data worker's start, paid again by each Tune trial
and each node an autoscaler adds, and a few hundred MB of each one's memory. Only ``cut_columns`` needs it, and
imports it there.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from patchray.shards.decode import decode_crops
from patchray.shards.schema import CROP_ID, IMAGE

if TYPE_CHECKING:
    from patchray.patches import PatchTaskConfig

# Crops per decoded block: ~15 MB of 200x100 pixels, a few training batches each; small enough that a data
# task holds one at a time and the stream stays in bounded memory, big enough to amortise per-block overhead.
DECODE_BATCH_ROWS = 256
# Crops one data task reads and decodes. Ray takes tens of milliseconds to end a task and start the next, in
# which the data CPU idles: with a task per row group (~800 default crops, ~0.1 s) that cost an eighth of the
# ingest rate on 2 cores (docs/performance.md, "Ingest"). A few row groups per task amortise it...
TASK_ROWS = 2048
# ...as long as every data CPU of the cluster still gets several tasks an epoch.
TASKS_PER_CPU = 4


def _tensor_column(array: np.ndarray) -> pa.Array:
    # Built explicitly so that a block with no rows left still has a typed tensor column.
    from ray.data.extensions import ArrowTensorArray

    return ArrowTensorArray.from_numpy(array)


def select_batch(batch: pa.Table, exclude_ids: frozenset[str] = frozenset(), include_ids: frozenset[str] | None = None,
                 label_columns: tuple[str, ...] = ()) -> pa.Table:
    """map_batches stage without decoding: the rows ``decode_batch`` keeps, still encoded (``image``,
    ``crop_id``, and with ``label_columns`` their columns), for a training worker that decodes them itself."""
    crop_ids = batch.column(CROP_ID).to_pylist()
    keep = [i for i, c in enumerate(crop_ids)
            if c not in exclude_ids and (include_ids is None or c in include_ids)]
    if len(keep) < len(crop_ids):
        batch = batch.take(pa.array(keep, pa.int64()))
    return batch.select([IMAGE, CROP_ID, *label_columns])


@dataclass(frozen=True)
class CutSpec:
    """What a data task needs to cut an epoch's patches itself: the task, the run's seed, and the epoch of the
    stream's first execution less Ray Data's execution counter when the stream was created."""
    task: dict  # PatchTaskConfig.to_dict()
    seed: int
    epoch_offset: int

    @classmethod
    def starting_at(cls, task: PatchTaskConfig, seed: int, first_epoch: int) -> CutSpec:
        """For a stream created now (in the driver) whose first execution trains epoch ``first_epoch``."""
        from patchray.ray_compat import data_execution_index

        return cls(task.to_dict(), seed, first_epoch - data_execution_index())

    def epoch(self) -> int:
        """The epoch the running data task cuts for (call it inside the task)."""
        from patchray.ray_compat import data_execution_index

        return self.epoch_offset + data_execution_index()

    def on(self, dataset) -> CutSpec:
        """This spec for a stage built on ``dataset`` (a materialized one, ``pipeline.cache_decoded``): a stage
        counts its executions from its parent's context, which a materialization has already advanced, not from
        the driver's, which ``starting_at`` read."""
        from patchray.ray_compat import data_execution_index, dataset_execution_index

        return CutSpec(self.task, self.seed, self.epoch_offset + data_execution_index()
                       - dataset_execution_index(dataset))


def cut_columns(pixels: np.ndarray, crop_ids: list[str], reasons: list[str], cut: CutSpec,
                epoch: int) -> dict[str, pa.Array]:
    """The columns of a block of patches: ``patches`` uint8 [K, P, P, 3] (pairwise [K, 2, P, P, 3]) and
    ``patch_labels`` int64 [K] per row, all zero for a bad row (kept, with its ``skip`` reason, to be counted),
    and ``epoch``, the epoch they were cut for."""
    import torch

    from patchray.patches import PatchTaskConfig, training_patches

    torch.set_num_threads(1)  # one data task per CPU; intra-op threads would only fight each other
    task = PatchTaskConfig.from_dict(cut.task)
    good = np.array([not r for r in reasons], dtype=bool)
    k = task.patches_per_crop
    every = bool(good.all())
    cut_patches, cut_labels = training_patches(pixels if every else pixels[good],
                                               crop_ids if every else [c for c, g in zip(crop_ids, good) if g],
                                               task, cut.seed, epoch)
    rows_of_k = (int(good.sum()), k, *cut_patches.shape[1:])
    if every:  # the common block: the cut patches are the rows already (a zeroed copy cost a sixth of the cut)
        patches, labels = cut_patches.reshape(rows_of_k), cut_labels.reshape(len(crop_ids), k)
    else:
        patches = np.zeros((len(crop_ids), *rows_of_k[1:]), np.uint8)
        labels = np.zeros((len(crop_ids), k), np.int64)
        patches[good] = cut_patches.reshape(rows_of_k)
        labels[good] = cut_labels.reshape(rows_of_k[:2])
    return {"patches": _tensor_column(patches), "patch_labels": _tensor_column(labels),
            "epoch": pa.array(np.full(len(crop_ids), epoch, np.int64))}


def decode_batch(batch: pa.Table, width: int, height: int, exclude_ids: frozenset[str] = frozenset(),
                 include_ids: frozenset[str] | None = None, label_columns: tuple[str, ...] = (),
                 fit: str = "aspect", cut: CutSpec | None = None) -> pa.Table:
    """map_batches stage: encoded images -> ``pixels`` uint8 [H, W, 3], ``crop_id``, ``skip`` reason
    ("" for a good crop), and with ``label_columns`` a ``labels`` int16 [A] column. With ``cut``, the epoch's
    patches instead of the pixels (``cut_columns``).

    Rows in ``exclude_ids`` (held out for validation), or not in ``include_ids``
    (a label budget), are dropped before decoding.
    """
    batch = select_batch(batch, exclude_ids, include_ids, label_columns)
    crop_ids = batch.column(CROP_ID).to_pylist()
    pixels, reasons = decode_crops(batch.column(IMAGE).to_pylist(), width, height, fit)
    columns = {CROP_ID: pa.array(crop_ids, pa.string()), "skip": pa.array(reasons, pa.string())}
    if cut is None:
        columns["pixels"] = _tensor_column(pixels)
    else:
        columns |= cut_columns(pixels, crop_ids, reasons, cut, cut.epoch())
    if label_columns:
        labels = np.stack([batch.column(c).to_numpy(zero_copy_only=False) for c in label_columns], axis=1)
        columns["labels"] = _tensor_column(labels.astype(np.int16).reshape(len(crop_ids), len(label_columns)))
    return pa.table(columns)


def cut_decoded(batch: dict[str, np.ndarray], *, cut: CutSpec) -> pa.Table:
    """map_batches stage over decoded crops (``decode_batch``'s columns, as cached by ``pipeline.cache_decoded``):
    the epoch's patches instead of the pixels, the same columns ``decode_batch`` makes with ``cut``."""
    crop_ids = [str(c) for c in batch[CROP_ID]]
    reasons = [str(r) for r in batch["skip"]]
    columns = {CROP_ID: pa.array(crop_ids, pa.string()), "skip": pa.array(reasons, pa.string())}
    columns |= cut_columns(batch["pixels"], crop_ids, reasons, cut, cut.epoch())
    if "labels" in batch:
        columns["labels"] = _tensor_column(batch["labels"])
    return pa.table(columns)


def read_and_decode(units: dict[str, np.ndarray], *, filesystem, columns: list[str], decode: bool = True,
                    **decode_kwargs):
    """map_batches stage: read whole Parquet row groups (only ``columns``; ``units``: a path and a row group
    per row, or per row a task's lists of them, ``task_units``) and yield their decoded crops in blocks of
    ``DECODE_BATCH_ROWS`` (see ``decode_batch`` for the columns; with ``decode=False`` the rows stay encoded,
    see ``select_batch``).

    Reading and decoding in one task keeps a data CPU on useful work: a separate read stage takes CPU slots
    of its own, and Ray's Parquet reader lists every file's footer again on each epoch.
    """
    import pyarrow.parquet as pq

    for paths, groups in zip(units["path"], units["row_group"]):  # a row group, or a task's list of them
        for path, group in zip(np.atleast_1d(paths), np.atleast_1d(groups)):
            table = pq.ParquetFile(str(path), filesystem=filesystem).read_row_group(int(group), columns=columns)
            for start in range(0, table.num_rows, DECODE_BATCH_ROWS):
                yield (decode_batch if decode else select_batch)(table.slice(start, DECODE_BATCH_ROWS),
                                                                 **decode_kwargs)


def task_units(row_groups, seed: int, cpus: float, task_rows: int = TASK_ROWS) -> list[dict[str, list]]:
    """What each data task reads: ``row_groups`` ((file, group, rows); empty ones left out) in an order drawn
    from ``seed``, so that a task mixes files, cut into runs of about ``task_rows`` crops; but at least
    ``TASKS_PER_CPU`` tasks per CPU of ``cpus`` while there are row groups enough. Each task:
    ``{"path": [...], "row_group": [...]}``."""
    units = [(path, group, rows) for path, group, rows in row_groups if rows]
    random.Random(seed).shuffle(units)
    total = sum(rows for _, _, rows in units)
    tasks = max(math.ceil(total / task_rows), math.ceil(TASKS_PER_CPU * cpus))
    tasks = max(1, min(tasks, len(units)))
    runs: list[dict[str, list]] = [{"path": [], "row_group": []} for _ in range(tasks)]
    before = 0
    for path, group, rows in units:  # each task takes the row groups that start in its share of the crops
        run = runs[before * tasks // total]
        run["path"].append(path)
        run["row_group"].append(group)
        before += rows
    return [run for run in runs if run["path"]]
