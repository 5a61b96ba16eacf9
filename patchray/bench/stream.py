"""The pretraining ingest, measured at its end: Ray Data's crop stream into one Ray Train worker's patch batches,
iterated exactly as pretraining does (``patch_batches``), counted and timed per epoch. Shared by the ingest and
memory benchmarks."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from patchray.bench.data import fit_json, report_json
from patchray.patches import PatchTaskConfig
from patchray.shards.reader import ShardSet


def _stream_loop(loop_config: dict) -> None:
    """Ray Train worker: ``epochs`` epochs of pretraining's patch batches, counted and timed."""
    import ray.train

    from patchray.pipeline import patch_batches
    from patchray.train.worker import start_worker

    _, _, device = start_worker(loop_config)  # threads and device as a pretraining worker's
    task = PatchTaskConfig.from_dict(loop_config["task"])
    shard = ray.train.get_dataset_shard("train")
    decode_device = device if loop_config["decode_on"] == "trainer" else None
    epochs = []
    for epoch in range(loop_config["epochs"]):
        count, start, started_at, cut_for = 0, time.perf_counter(), time.time(), set()
        for batch in patch_batches(shard, task, loop_config["seed"], epoch, loop_config["crops_per_step"], rank=0,
                                   decode_device=decode_device, fit=loop_config["fit"],
                                   cut_in_data=loop_config["cut_on"] == "data"):
            count += len(batch["labels"])
            cut_for.update(batch.get("cut_for", ()))
        # wall-clock stamps too: the CPU clock of the ingest benchmark (patchray.bench.cpu) reads the epoch by them
        epochs.append({"patches": count, "crops": count // task.patches_per_crop,
                       "seconds": time.perf_counter() - start, "started_at": started_at, "ended_at": time.time(),
                       "cut_for": sorted(cut_for)})
    report_json({"epochs": epochs})


def stream_to_one_worker(shards: ShardSet, task: PatchTaskConfig, epochs: int, crops_per_step: int, seed: int,
                         storage: Path, name: str, decode_on: str = "data", cut_on: str = "worker",
                         cache: bool = False, split: bool = True, fit: str = "aspect"
                         ) -> tuple[list[dict], str, dict | None]:
    """Per epoch {patches, crops, seconds} at one training worker sized as pretraining sizes it; that plan; and
    with ``cache`` the one-off decode into the object store ({started_at, ended_at}), else None.
    ``decode_on``, ``cut_on`` and ``cache`` (``cache_decoded``) as in ``PretrainConfig``: the data tasks decode
    (and cut), or the training worker does. ``split=False``: the worker runs the stream's executor itself, as a
    lone fine-tuning worker does (``runner.unsplit_when_alone``), not a split coordinator. ``fit``: how crops of
    another size become the training size (``input.crop_fit``)."""
    from patchray.data_tasks import CutSpec
    from patchray.pipeline import cache_decoded, crop_dataset
    from patchray.train.resources import ResourcesConfig
    from patchray.train.runner import make_trainer, plan_for_cluster

    shutil.rmtree(storage / name, ignore_errors=True)  # a fresh run, not the last benchmark's snapshot
    plan = plan_for_cluster(ResourcesConfig(num_workers=1))
    cut = CutSpec.starting_at(task, seed, 0) if cut_on == "data" else None
    dataset = crop_dataset(shards, task.crop_width, task.crop_height, seed=seed, decode=decode_on == "data",
                           fit=fit, cut=None if cache else cut)
    built = None
    if cache:
        started_at = time.time()
        dataset = cache_decoded(dataset, seed, cut)
        built = {"started_at": started_at, "ended_at": time.time()}
    trainer = make_trainer(
        _stream_loop,
        {"task": task.to_dict(), "epochs": epochs, "seed": seed, "crops_per_step": crops_per_step,
         "decode_on": decode_on, "cut_on": cut_on, "fit": fit},
        plan, location=(str(storage), name), datasets={"train": dataset}, datasets_to_split="all" if split else [])
    return fit_json(trainer)["epochs"], plan.describe(), built
