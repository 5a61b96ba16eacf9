"""Ray Data: stream crops from Parquet shards, decode and resize them on CPU workers (the data tasks' own code
is ``patchray.data_tasks``), and the training workers' side of the stream: its batches and collate steps.

The stream carries decoded crops; each training worker cuts the epoch's patches
from them in its batch collate step (see ``PatchCollate``): patches must be a
function of (seed, epoch, crop id), and the training worker knows the epoch.
Cutting is vectorised, a small fraction of the cost of decoding (about a
fifth), which stays on the data workers.

With ``cut`` (``CutSpec``) the data tasks cut the patches themselves, so the
stream carries a crop's K patches (24.6 kB for 8 of 32 px) instead of its
pixels (60 kB): a Ray Data stage is re-run each epoch without being told which,
so the task reads the epoch from Ray Data's own execution counter
(``ray_compat.data_execution_index``), offset to the epoch the stream was
created for, and stamps it on each row. The training worker checks the stamp
(``CutPatchCollate``): a stream restarted inside a run (a worker failure) counts
its epochs from its creation again, and its patches are then those of another
epoch's draw, said once in the log.

With ``cache_decoded`` the decoded crops are materialized in the object store once, before training, and each
epoch streams them from there (``cache_decoded``): the decode is paid once a run, the cache's memory for the
whole of it.

With ``decode=False`` the stream carries the encoded crops instead (a few kB, not
60 kB) and the training worker decodes them where it trains: nvJPEG on a GPU
(``EncodedPatchCollate``), for nodes whose CPUs cannot keep their GPU fed.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from patchray.accel import produce_for_default_stream
from patchray.data_tasks import CutSpec, read_and_decode, task_units
from patchray.patches import PatchTaskConfig, crop_seed, task_patches_on, training_patches
from patchray.shards.attributes import AttributeSet
from patchray.shards.decode import decode_crops
from patchray.shards.device_decode import decode_crops_on
from patchray.shards.reader import ShardSet
from patchray.shards.schema import CROP_ID, IMAGE

# Upper bound Ray Data may grow a block to; a decoded batch of larger crops is split to fit.
DECODED_BLOCK_BYTES = 16 * 2**20
# Object store a crop stream may fill, a dozen blocks: enough to keep the trainers fed, and the bound that keeps
# memory flat however many shards there are (without it Ray Data decodes ahead into its whole default budget,
# gigabytes, when decoding outpaces training).
STREAM_BUFFER_BYTES = 192 * 2**20
# Training steps' crops a worker asks Ray's batch iterator for at a time (``patch_batches``).
STEPS_PER_FETCH = 4
# Fetches' crops in a worker's local shuffle buffer: 256, a decoded block, mixed (a smaller buffer measured
# slower, Ray then cuts more short batches).
SHUFFLE_FETCHES = 4


def crop_dataset(shards: ShardSet, width: int, height: int, exclude_ids=frozenset(), include_ids=None,
                 label_columns: tuple[str, ...] = (), seed: int = 0, data_resources: dict[str, float] | None = None,
                 decode: bool = True, fit: str = "aspect", cut: CutSpec | None = None):
    """A Ray Dataset of decoded crops (see ``data_tasks.decode_batch`` for the columns), or with ``decode=False``
    of the encoded crops that training workers decode themselves (see ``data_tasks.select_batch``), or with
    ``cut`` of each epoch's patches cut by the data tasks (``CutSpec.starting_at``, created right before the
    stream is).

    It streams: a data task reads and decodes a few Parquet row groups (``task_units``), one at a time, and
    the only all-to-all step orders the (tiny) list of tasks, never the crops. Each execution (epoch) runs the
    tasks in a new order, seeded; workers shuffle further within a small buffer. ``data_resources`` (e.g.
    ``{"data_node": 1}``) pins the data tasks to the nodes that offer those custom resources.
    """
    import ray.data
    from ray.data import DataContext, RandomSeedConfig

    if not shards.row_groups:
        raise ValueError(f"{list(shards.files)}: no row groups to read")
    from patchray.data_scheduler import PauseWhenIdle

    context = DataContext.get_current()  # read when the dataset is created and when Ray Train ingests it
    context.target_max_block_size = DECODED_BLOCK_BYTES
    if PauseWhenIdle not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(PauseWhenIdle)
    context.execution_options.resource_limits = context.execution_options.resource_limits.copy(
        object_store_memory=STREAM_BUFFER_BYTES)
    cpus = ray.cluster_resources().get("CPU", 1.0) if ray.is_initialized() else os.cpu_count() or 1
    # One row and one block per task (with batch_size=1 below, a task is one block). from_items, not from_arrow:
    # a process's first from_arrow costs a second or two, and every Tune trial is a new process.
    runs = task_units(shards.row_groups, seed, cpus)
    ds = ray.data.from_items(runs, override_num_blocks=len(runs))
    ds = ds.randomize_block_order(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))
    kwargs = {"filesystem": shards.filesystem, "columns": [IMAGE, CROP_ID, *label_columns], "decode": decode,
              "exclude_ids": frozenset(exclude_ids),
              "include_ids": frozenset(include_ids) if include_ids is not None else None,
              "label_columns": tuple(label_columns)}
    if decode:
        kwargs |= {"width": width, "height": height, "fit": fit, "cut": cut}
    elif cut is not None:
        raise ValueError("cutting patches in the data tasks needs them to decode (decode_on=data)")
    placement = {"resources": dict(data_resources)} if data_resources else {}
    return ds.map_batches(read_and_decode, fn_kwargs=kwargs, batch_size=1, batch_format="numpy",
                          **placement)


# The share of the cluster's object store the decoded crops of ``cache_decoded`` may fill: the rest is the running
# stream's buffer and everything else a job keeps there (past it Ray would spill the cache to disk).
CACHE_STORE_SHARE = 0.7


def decoded_bytes(rows: int, width: int, height: int) -> int:
    """The object store a cache of ``rows`` decoded ``width x height`` crops fills (uint8 RGB pixels)."""
    return rows * width * height * 3


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def check_cache_fits(rows: int, width: int, height: int, object_store_bytes: float, share: float = 1.0) -> int:
    """The bytes ``cache_decoded`` will hold for ``rows`` crops; ValueError, naming both sizes, when they exceed
    ``CACHE_STORE_SHARE`` of this run's ``share`` of the cluster's object store (a Tune trial's is
    1/max_concurrent_trials: each concurrent trial holds a cache of its own)."""
    needed = decoded_bytes(rows, width, height)
    if needed > CACHE_STORE_SHARE * share * object_store_bytes:
        store = f"the cluster's object store ({_size(object_store_bytes)})"
        larger = "give Ray a larger object store (ray start --object-store-memory=...)"
        if share < 1:  # concurrent runs each hold a cache of their own
            store = f"this run's share of the cluster's object store ({share:.3g} of {_size(object_store_bytes)})"
            larger = "run fewer at once (max_concurrent_trials), or " + larger
        raise ValueError(
            f"cache_decoded: {rows} crops of {width}x{height} decode to {_size(needed)}, more than "
            f"{CACHE_STORE_SHARE:.0%} of {store}; Ray would spill them to disk. Set cache_decoded=false (the crops "
            f"are then decoded every epoch), or {larger}")
    return needed


def cache_decoded(decoded, seed: int, cut: CutSpec | None = None):
    """The crop stream ``decoded`` (``crop_dataset`` without ``cut``) decoded once, now, into Ray's object store,
    and streamed from there every epoch: in a new block order each epoch (seeded), and with ``cut`` as the
    epoch's patches cut by data tasks from the cached pixels (``data_tasks.cut_decoded``), the same patches
    ``crop_dataset(cut=...)`` would cut. What it saves is the JPEG decode, most of a data CPU's work, for every
    epoch after the first; what it costs is the decoded crops' memory (``check_cache_fits``) for the whole run.
    Bad rows are cached as they were decoded, zeros with their reason, and counted again each epoch."""
    from ray.data import RandomSeedConfig

    from patchray.data_tasks import cut_decoded

    # The stream's object-store bound (STREAM_BUFFER_BYTES) is for a stream its consumer drains. Held against a
    # build that keeps every block, it let one decode task run at a time (a task's crops, ~100 MB, are half of
    # it): 48,000 crops on 2 CPUs took 6.5-7.0 s from cold pages, 4.5-5.4 s warm; 5.4-5.6 and 3.4-4.4 s unbounded.
    # check_cache_fits has bounded the whole cache; the stream from it, whose cut blocks are new objects, gets
    # the bound back.
    options = decoded.context.execution_options
    bounded = options.resource_limits
    options.resource_limits = bounded.copy(object_store_memory=float("inf"))
    try:
        cached = decoded.materialize()
    finally:
        options.resource_limits = bounded
    cached.context.execution_options.resource_limits = bounded
    stream = cached.randomize_block_order(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))
    if cut is None:
        return stream
    return stream.map_batches(cut_decoded, fn_kwargs={"cut": cut.on(stream)}, batch_size=None,
                              batch_format="numpy")


def on_device(batch: dict, device) -> dict:
    """``batch``'s tensors on ``device``. On a GPU they are pinned and copied here, in Ray's collate thread, on
    the thread's own stream (``produce_for_default_stream``), so the copy overlaps the step and the step's own
    ``.to(device)`` finds them there. Ray would not do it for us: a batch that holds a ``Counter`` (the bad rows)
    is not a tensor batch to Ray, which then neither pins nor moves it, and the step's ``non_blocking`` copy
    from pageable memory blocks. Elsewhere (CPU, None): ``batch`` as it is."""
    if device is None or torch.device(device).type != "cuda":
        return batch

    def copy() -> dict:
        return {key: value.pin_memory().to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                for key, value in batch.items()}

    return produce_for_default_stream(torch.device(device), copy)


def _good_rows(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, Counter]:
    reasons = batch["skip"]
    return np.array([not r for r in reasons], dtype=bool), Counter(r for r in reasons if r)


class PatchCollate(NumpyBatchCollateFn):
    """Training-worker collate: drop (and count) bad rows, cut the epoch's patches.

    Returns ``{"patches": uint8 [B*K, P, P, 3] (pairwise [B*K, 2, P, P, 3]),
    "labels": int64 [B*K]}``, a good crop's K patches together and the crops in the order received, plus
    ``skipped``: a Counter of bad rows in this batch, ``rows``: the rows it received, good and bad
    (``patchray.train.rows`` accounts for every row of an epoch), and ``reasons``: each row's skip reason ("" for
    a good one), by which ``split_steps`` cuts it into steps. ``device``: the training device, where the tensors
    are copied (``on_device``).
    """

    def __init__(self, task: PatchTaskConfig, seed: int, epoch: int, device=None):
        self.task, self.seed, self.epoch, self.device = task, seed, epoch, device

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        good, skipped = _good_rows(batch)
        pixels = batch["pixels"][good]
        crop_ids = [str(c) for c in batch[CROP_ID][good]]
        patches, labels = training_patches(pixels, crop_ids, self.task, self.seed, self.epoch)
        return on_device({"patches": torch.from_numpy(patches), "labels": torch.from_numpy(labels),
                          "skipped": skipped, "rows": len(good), "reasons": list(batch["skip"])}, self.device)


class CutPatchCollate(NumpyBatchCollateFn):
    """Training-worker collate for a stream of patches cut by the data tasks (``CutSpec``): drop (and count) bad
    rows, lay the rows' K patches end to end. Returns what ``PatchCollate`` returns, and for the same crops the
    same patches. A row cut for another epoch than this one (a stream restarted inside the run) is trained on,
    and said once. ``device`` as ``PatchCollate``'s."""

    def __init__(self, epoch: int, rank: int = 0, device=None):
        self.epoch, self.rank, self.device = epoch, rank, device
        self.told = False

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        good, skipped = _good_rows(batch)
        patches, labels = batch["patches"][good], batch["patch_labels"][good]
        cut_for = set(batch["epoch"][good].tolist())
        if cut_for - {self.epoch} and not self.told:
            self.told = True
            print(f"[pretrain] worker {self.rank}: the stream's patches were cut for epoch(s) "
                  f"{sorted(e + 1 for e in cut_for)} while training epoch {self.epoch + 1} (the stream restarted "
                  "inside the run): training goes on, on another epoch's draw of patches", flush=True)
        return on_device({"patches": torch.from_numpy(patches.reshape(-1, *patches.shape[2:])),
                          "labels": torch.from_numpy(labels.reshape(-1)), "skipped": skipped, "rows": len(good),
                          "reasons": list(batch["skip"]), "cut_for": sorted(cut_for)}, self.device)


class EncodedPatchCollate(NumpyBatchCollateFn):
    """Training-worker collate for an encoded stream: decode where the worker trains, drop (and count) bad
    rows, cut the epoch's patches. On a GPU both run there (nvJPEG, ``task_patches_on``) and ``patches`` and
    ``labels`` come back on it; on the CPU it is ``decode_crops`` then ``PatchCollate`` (splitting a batch of
    16 crops over threads measured slower than one thread).

    Returns what ``PatchCollate`` returns, and the same patches for the same pixels. Ray runs collate functions
    in its format/collate thread pool, so decoding overlaps the training step: the GPU work runs on the collate
    thread's own stream and is handed to the step's (``produce_for_default_stream``).
    """

    def __init__(self, task: PatchTaskConfig, seed: int, epoch: int, device, fit: str = "aspect"):
        self.task, self.seed, self.epoch, self.device = task, seed, epoch, torch.device(device)
        self.fit = fit
        self.cut = PatchCollate(task, seed, epoch)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        images = list(batch[IMAGE])
        if self.device.type == "cpu":
            pixels, reasons = decode_crops(images, self.task.crop_width, self.task.crop_height, self.fit)
            return self.cut({"pixels": pixels, CROP_ID: batch[CROP_ID], "skip": np.array(reasons, dtype=object)})
        return produce_for_default_stream(self.device, lambda: self._on_device(images, batch[CROP_ID]))

    def _on_device(self, images: list, crop_ids: np.ndarray) -> dict:
        pixels, reasons = decode_crops_on(images, self.task.crop_width, self.task.crop_height, self.device, self.fit)
        good = [i for i, reason in enumerate(reasons) if not reason]
        patches, labels = task_patches_on(pixels[good], [str(crop_ids[i]) for i in good], self.task, self.seed,
                                          self.epoch)
        return {"patches": patches, "labels": labels, "skipped": Counter(r for r in reasons if r),
                "rows": len(reasons), "reasons": list(reasons)}


def local_shuffle_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a training worker's local shuffle buffer: a new order each epoch, another on each worker."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**31


def _rows(batch: dict, start: int, end: int, per_row: dict[str, int]) -> dict:
    """Rows ``start:end`` of a collate's output: its ``reasons`` say which rows are good, and ``per_row`` how
    many entries of each tensor a good row has (a crop's K patches; one image). Slices, not copies."""
    reasons = batch["reasons"]
    first = sum(1 for r in reasons[:start] if not r)
    last = first + sum(1 for r in reasons[start:end] if not r)
    return batch | {key: batch[key][first * n:last * n] for key, n in per_row.items()} | {
        "reasons": reasons[start:end]}


def _joined(head: dict, tail: dict, per_row: dict[str, int]) -> dict:
    joined = tail | {key: torch.cat([head[key], tail[key]]) for key in per_row}
    joined["reasons"] = head["reasons"] + tail["reasons"]
    if "cut_for" in tail:
        joined["cut_for"] = sorted(set(head["cut_for"]) | set(tail["cut_for"]))
    return joined


def _step(batch: dict) -> dict:
    reasons = batch.pop("reasons")
    return batch | {"skipped": Counter(r for r in reasons if r), "rows": len(reasons)}


def split_steps(fetches, crops_per_step: int, per_row: dict[str, int]):
    """Steps of exactly ``crops_per_step`` received rows (the last one of the stream shorter) from collate
    outputs of any size (with ``reasons``, one per row): each with the ``per_row`` tensors of its good rows (see
    ``_rows``), its own ``skipped`` and ``rows``. Ray's local shuffle yields a short batch now and then; re-cut
    here, a worker with N rows takes ceil(N / crops_per_step) steps whatever Ray's batches were, which DDP needs
    of every worker (the same step count on each)."""
    pending = None
    for fetched in fetches:
        batch = fetched if pending is None else _joined(pending, fetched, per_row)
        rows = len(batch["reasons"])
        whole = rows - rows % crops_per_step
        for start in range(0, whole, crops_per_step):
            yield _step(_rows(batch, start, start + crops_per_step, per_row))
        pending = _rows(batch, whole, rows, per_row) if whole < rows else None
    if pending is not None:
        yield _step(pending)


def _fetches(shard, collate, crops_per_step: int, seed: int, epoch: int, rank: int):
    """A worker's epoch from Ray's batch iterator, ``STEPS_PER_FETCH`` steps' crops at a time, collated."""
    return shard.iter_torch_batches(
        # Not drop_last: the rows of a last, short batch are trained on, and a bad one among them is counted.
        batch_size=crops_per_step * STEPS_PER_FETCH, collate_fn=collate, drop_last=False,
        # The shuffle buffer mixes crops of neighbouring frames (the task order already changes every epoch).
        prefetch_batches=2, local_shuffle_buffer_size=crops_per_step * STEPS_PER_FETCH * SHUFFLE_FETCHES,
        local_shuffle_seed=local_shuffle_seed(seed, epoch, rank))


def patch_batches(shard, task: PatchTaskConfig, seed: int, epoch: int, crops_per_step: int, rank: int,
                  decode_device=None, fit: str = "aspect", cut_in_data: bool = False, device=None):
    """One epoch of a training worker's patch batches, one a step, from its Ray Data shard: from decoded crops
    (``PatchCollate``), given ``decode_device`` from encoded ones decoded there (``EncodedPatchCollate``), or
    with ``cut_in_data`` from patches the data tasks cut (``CutPatchCollate``); copied to ``device`` (the
    training device) in the collate thread.

    Ray's batch iterator is asked for ``STEPS_PER_FETCH`` steps' crops at a time, which ``split_steps`` cuts
    back into steps: the iterator costs nearly as much per batch at 16 crops as at 64, and at 16 it was most
    of a training worker's ingest CPU (about 90 us a crop, against 45-60 now; docs/performance.md, "Ingest").
    Every ``crops_per_step`` received rows make one step, the last one of an epoch shorter."""
    if cut_in_data:
        collate = CutPatchCollate(epoch, rank, device)
    elif decode_device is None:
        collate = PatchCollate(task, seed, epoch, device)
    else:
        collate = EncodedPatchCollate(task, seed, epoch, decode_device, fit)
    k = task.patches_per_crop
    yield from split_steps(_fetches(shard, collate, crops_per_step, seed, epoch, rank), crops_per_step,
                           {"patches": k, "labels": k})


class AttributeCollate(NumpyBatchCollateFn):
    """Fine-tuning collate: drop (and count) bad rows; mirror crops at random with their labels.

    Whether a crop is mirrored is a function of (seed, epoch, crop id); mirrored
    labels come from the dataset's own swap table (``AttributeSet.mirror``).
    Returns ``{"images": uint8 [B, H, W, 3], "labels": int64 [B, A], "skipped": Counter, "rows": received,
    "reasons": one per row}``, its tensors on ``device`` (``on_device``).
    """

    def __init__(self, attributes: AttributeSet, seed: int, epoch: int, mirror: bool = True, device=None):
        self.attributes, self.seed, self.epoch, self.mirror, self.device = attributes, seed, epoch, mirror, device

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
        return on_device({"images": torch.from_numpy(np.ascontiguousarray(images)), "labels": torch.from_numpy(labels),
                          "skipped": skipped, "rows": len(good), "reasons": list(batch["skip"])}, self.device)


def attribute_batches(shard, attributes: AttributeSet, seed: int, epoch: int, crops_per_step: int, rank: int,
                      mirror: bool = True, device=None):
    """One epoch of a fine-tuning worker's batches, one a step (``AttributeCollate``), fetched and re-cut as
    ``patch_batches``'s."""
    fetches = _fetches(shard, AttributeCollate(attributes, seed, epoch, mirror, device), crops_per_step, seed, epoch,
                       rank)
    yield from split_steps(fetches, crops_per_step, {"images": 1, "labels": 1})
