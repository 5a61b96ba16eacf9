"""Sizing training workers against the cluster so that Ray Data always keeps CPUs.

Ray Train reserves its workers' resources first and Ray Data gets what is left;
with nothing left, the data stage never runs and the job hangs without an
error (seen with Ray 2.60: 2 workers x 1 CPU on 2 CPUs). Every plan made here leaves Data at least one
CPU, and a request that would not is refused with a message saying so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# CPU-only clusters: half the CPUs (at least one) decode crops, the rest train.
DATA_CPU_SHARE = 0.5
DEFAULT_CPU_WORKERS = 2
MIN_DATA_CPUS = 1.0


@dataclass
class ResourcesConfig:
    num_workers: int | None = None        # None: one per GPU, or 2 on a CPU-only cluster
    use_gpu: bool | None = None           # None: use GPUs when the cluster has any
    cpus_per_worker: float | None = None  # None: sized so that Ray Data keeps its share
    trainer_resources: dict[str, float] | None = None  # custom resources each worker must land on
    data_resources: dict[str, float] | None = None     # custom resources each Ray Data task must land on
    reserved_cpus: float = 0.0            # CPUs the caller already holds (a Tune trial's driver), not ours to plan
    # GPUs each worker takes: a fraction lets concurrent Tune trials share a GPU (0.5: two trials per GPU).
    gpus_per_worker: float = 1.0
    reserved_gpus: float = 0.0            # GPUs other trials of the same search hold, not ours to plan
    # The share of the cluster's object store this run's cache_decoded may plan on: concurrent runs each hold a
    # cache of their own (Tune sets 1/max_concurrent_trials).
    object_store_share: float = 1.0

    def __post_init__(self):
        if not 0 < self.gpus_per_worker <= 1 and not float(self.gpus_per_worker).is_integer():
            raise ValueError(f"gpus_per_worker must be a fraction of one GPU or a whole number, got "
                             f"{self.gpus_per_worker}")
        if self.gpus_per_worker <= 0 or self.reserved_gpus < 0:
            raise ValueError("gpus_per_worker must be > 0 and reserved_gpus >= 0")
        if not 0 < self.object_store_share <= 1:
            raise ValueError(f"object_store_share must be in (0, 1], got {self.object_store_share}")


@dataclass(frozen=True)
class ResourcePlan:
    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    data_cpus: float
    torch_threads: int
    resources_per_worker: dict

    def describe(self) -> str:
        device = "GPU" if self.use_gpu else "CPU"
        return (f"{self.num_workers} training worker(s) on {device}, {self.cpus_per_worker:g} CPU each; "
                f"{self.data_cpus:g} CPU(s) left for Ray Data")


class ResourceError(ValueError):
    pass


def plan_resources(cluster_cpus: float, cluster_gpus: float, requested: ResourcesConfig) -> ResourcePlan:
    if cluster_cpus < MIN_DATA_CPUS + 0.5:
        # Data tasks take a whole CPU each; below this, training would squeeze them out and hang.
        raise ResourceError(f"the cluster has {cluster_cpus:g} CPU(s); at least 2 are needed "
                            "(Ray Data decodes on one while the trainers use the rest)")
    per_worker = requested.gpus_per_worker
    use_gpu = requested.use_gpu if requested.use_gpu is not None else cluster_gpus >= min(1.0, per_worker) - 1e-9
    if requested.num_workers is not None and requested.num_workers < 1:
        raise ResourceError(f"num_workers must be >= 1, got {requested.num_workers}")
    # Workers and data pinned to node types of their own (trainer_resources, data_resources) need not fit
    # the nodes up now: an autoscaling cluster launches them when the trainer asks, and the workers take no
    # CPU from the nodes Ray Data runs on.
    dedicated = bool(requested.trainer_resources and requested.data_resources) and requested.num_workers is not None
    if use_gpu and cluster_gpus < min(1.0, per_worker) - 1e-9 and not dedicated:
        raise ResourceError("use_gpu=true but the cluster has no GPU (on an autoscaling cluster, give num_workers, "
                            "trainer_resources and data_resources naming the node types' resources)")
    if use_gpu:
        num_workers = requested.num_workers or max(1, int(cluster_gpus / per_worker + 1e-9))
        if num_workers * per_worker > cluster_gpus + 1e-9 and not dedicated:
            raise ResourceError(f"{num_workers} GPU workers x {per_worker:g} GPU asked for, the cluster has "
                                f"{cluster_gpus:g} GPUs")
        default_cpus = max(min(1.0, (cluster_cpus - MIN_DATA_CPUS) / num_workers), 0.1)
    else:
        num_workers = requested.num_workers or DEFAULT_CPU_WORKERS
        data_share = max(MIN_DATA_CPUS, math.ceil(cluster_cpus * DATA_CPU_SHARE))
        default_cpus = (cluster_cpus - data_share) / num_workers
        if default_cpus <= 0:
            default_cpus = (cluster_cpus - MIN_DATA_CPUS) / num_workers
    cpus_per_worker = requested.cpus_per_worker if requested.cpus_per_worker is not None else round(default_cpus, 3)
    if cpus_per_worker <= 0:
        raise ResourceError(
            f"{num_workers} training worker(s) on {cluster_cpus:g} CPUs leave no CPU for Ray Data; "
            "lower num_workers")
    data_cpus = cluster_cpus - (0 if dedicated else num_workers * cpus_per_worker)
    if data_cpus < MIN_DATA_CPUS - 1e-9:
        raise ResourceError(
            f"{num_workers} worker(s) x {cpus_per_worker:g} CPU leave {data_cpus:g} of {cluster_cpus:g} CPUs for "
            f"Ray Data (at least {MIN_DATA_CPUS:g} needed, else the data stage never runs and the job hangs); "
            "lower num_workers or cpus_per_worker")
    resources = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = per_worker
    resources.update(requested.trainer_resources or {})
    return ResourcePlan(num_workers=num_workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker,
                        data_cpus=data_cpus, torch_threads=max(1, int(cpus_per_worker)),
                        resources_per_worker=resources)


def plan_around_other_jobs(cluster_cpus: float, cluster_gpus: float, others: list[tuple[str, dict[str, float]]],
                           requested: ResourcesConfig) -> ResourcePlan:
    """``plan_resources`` on what other jobs leave: their trainers' placement groups (``others``: job id and
    resources held) and one data CPU for each such job, which its own Ray Data needs to make progress.
    Refused, naming the other jobs, when what is left is too little."""
    held: dict[str, dict[str, float]] = {}
    for job, resources in others:
        total = held.setdefault(job, {})
        for key, value in resources.items():
            total[key] = total.get(key, 0.0) + value
    cpus = cluster_cpus - sum(r.get("CPU", 0.0) + MIN_DATA_CPUS for r in held.values())
    gpus = cluster_gpus - sum(r.get("GPU", 0.0) for r in held.values())
    try:
        return plan_resources(cpus, gpus, requested)
    except ResourceError as e:
        if not held:
            raise
        busy = "; ".join(f"job {job}: {r.get('CPU', 0):g} CPU" + (f", {r['GPU']:g} GPU" if r.get("GPU") else "")
                         + f" for training, {MIN_DATA_CPUS:g} CPU kept for its data" for job, r in held.items())
        raise ResourceError(f"other jobs are training on this cluster ({busy}); of {cluster_cpus:g} CPU(s) "
                            f"{max(cpus, 0):g} are left for this one: {e}. Wait for them to finish, or add "
                            "nodes") from None
