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
    import ray.train.torch

    from patchray.pipeline import patch_batches

    task = PatchTaskConfig.from_dict(loop_config["task"])
    shard = ray.train.get_dataset_shard("train")
    decode_device = ray.train.torch.get_device() if loop_config["decode_on"] == "trainer" else None
    epochs = []
    for epoch in range(loop_config["epochs"]):
        count, start = 0, time.perf_counter()
        for batch in patch_batches(shard, task, loop_config["seed"], epoch, loop_config["crops_per_batch"], rank=0,
                                   decode_device=decode_device):
            count += len(batch["labels"])
        epochs.append({"patches": count, "crops": count // task.patches_per_crop,
                       "seconds": time.perf_counter() - start})
    report_json({"epochs": epochs})


def stream_to_one_worker(shards: ShardSet, task: PatchTaskConfig, epochs: int, crops_per_batch: int, seed: int,
                         storage: Path, name: str, decode_on: str = "data") -> tuple[list[dict], str]:
    """Per epoch {patches, crops, seconds} at one training worker sized as pretraining sizes it; and that plan.
    ``decode_on`` as in ``PretrainConfig``: the data tasks decode, or the training worker does."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from patchray.pipeline import crop_dataset
    from patchray.train.resources import ResourcesConfig
    from patchray.train.runner import plan_for_cluster

    shutil.rmtree(storage / name, ignore_errors=True)  # a fresh run, not the last benchmark's snapshot
    plan = plan_for_cluster(ResourcesConfig(num_workers=1))
    trainer = TorchTrainer(
        _stream_loop,
        train_loop_config={"task": task.to_dict(), "epochs": epochs, "seed": seed, "crops_per_batch": crops_per_batch,
                           "decode_on": decode_on},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker=plan.resources_per_worker),
        run_config=ray.train.RunConfig(storage_path=str(storage), name=name),
        datasets={"train": crop_dataset(shards, task.crop_width, task.crop_height, seed=seed,
                                        decode=decode_on == "data")})
    return fit_json(trainer)["epochs"], plan.describe()
