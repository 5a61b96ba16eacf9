"""What every training job shares at the Ray edge: joining a cluster, sizing, building and running a trainer."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from patchray.train.checkpoint import load_checkpoint
from patchray.train.resources import ResourcePlan, ResourcesConfig, plan_resources


def init_ray():
    """Join the cluster named by RAY_ADDRESS (as under ``ray job submit``), else start a local one."""
    import ray

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray(\.|$)")
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False  # our own per-epoch lines say more, in less space
    return ray


def plan_for_cluster(requested: ResourcesConfig) -> ResourcePlan:
    import ray

    # Planned on the cluster's totals (free resources flicker while a previous trainer shuts down), less what
    # the caller already holds: inside a Tune trial, the trial's own sliver of CPU would otherwise leave Ray
    # Data just under the one CPU a data task needs, and the job would hang.
    resources = ray.cluster_resources()
    return plan_resources(resources.get("CPU", 0) - requested.reserved_cpus, resources.get("GPU", 0), requested)


def fit(loop, loop_config: dict, plan: ResourcePlan, *, location: tuple[str, str], max_failures: int,
        datasets: dict, datasets_to_split="all", callbacks=()) -> tuple[dict, list[dict]]:
    """Run a TorchTrainer to the end; return the last checkpoint's state and metric history.

    ``callbacks``: Ray Train callbacks, e.g. Tune's TuneReportCallback when run inside a trial.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config | {"torch_threads": plan.torch_threads},
        scaling_config=ray.train.ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.use_gpu,
                                               resources_per_worker=plan.resources_per_worker),
        run_config=ray.train.RunConfig(storage_path=location[0], name=location[1],
                                       failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       callbacks=list(callbacks)),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=datasets_to_split),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training ended without a checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as folder:
        return load_checkpoint(folder)


# A cluster's default for every job's --storage (the cluster YAMLs export it on each node).
STORAGE_ENV = "PATCHRAY_STORAGE"


def default_storage(storage: str | None) -> str | None:
    return storage or os.environ.get(STORAGE_ENV) or None


def train_location(out: Path, storage: str | None, kind: str) -> tuple[str, str]:
    """(storage_path, run name) of a job's Ray Train run. Locally it lives in the job's folder; in shared storage
    (S3, GCS, NFS; ``storage`` or else $PATCHRAY_STORAGE) it is named after the job too, so that two runs never
    resume each other's checkpoints."""
    storage = default_storage(storage)
    if storage:
        return storage, f"{kind}-{out.name}"
    return str(out / "ray"), kind


def run_dir(cfg) -> Path:
    """Where a job with ``out`` and ``name`` writes: OUT/NAME, absolute."""
    return Path(cfg.out).expanduser().resolve() / cfg.name
