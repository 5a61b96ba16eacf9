"""A cost model for clusters: how many data CPUs keep a GPU busy, and what an epoch costs.

Pure arithmetic over measured rates (docs/performance.md): a GPU trains ``gpu_patches_per_s`` when it never
waits; the data pipeline delivers ``pipeline_patches_per_cpu_s`` patches for each CPU-second it spends, every
process included (Ray's own too); each training worker also keeps ``trainer_cpus`` busy launching kernels and
running its collate step. To keep the GPU ``busy`` (a share, 0.9 = 90%) the pipeline must deliver
``busy x gpu_patches_per_s``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# The measured rates the model is read with (docs/performance.md, "A cost model for clusters").
# Whole-pipeline patches per CPU-second on 2 cores (bench_ingest, 2026-12-01 08:56, one run), every process counted:
PIPELINE_PATCHES_PER_CPU_S = {"data": 49_433, "data+cut": 59_647,
                              # decode_on=trainer on a GPU: the CPU part only (read, ship, Ray), the GPU decodes:
                              # the CPU run's total less its training worker's decoding and cutting
                              "trainer": 263_221,
                              # cache_decoded: the epochs after the first, the worker's cutting included (its
                              # first epoch decodes everything once, as "data" does, and is left out)
                              "cached": 186_123}
# Training patches/s of one H200 at each net's best setting, from patches already on the GPU (bench_gpu,
# 2026-11-25); decode_on=trainer also decodes on the GPU and reaches the share measured end to end.
H200_PATCHES_PER_S = {"tiny, batch 128": 39_685, "tiny, batch 1024": 243_756, "resnet18, batch 128": 16_108,
                      "resnet18, batch 1024": 66_445}
H200_FED_FROM_JPEGS = {"tiny, batch 128": 23_061, "tiny, batch 1024": 122_308, "resnet18, batch 128": 11_482,
                       "resnet18, batch 1024": 59_758}


@dataclass(frozen=True)
class NodeNeed:
    gpu_patches_per_s: float  # what the GPU trains at the target busy share
    data_cpus: float          # CPUs the pipeline spends to deliver it
    cpus_per_gpu: float       # data CPUs and the training worker's own
    cores_to_provision: int   # whole cores, rounded up


def cpus_per_gpu(gpu_patches_per_s: float, pipeline_patches_per_cpu_s: float, busy: float = 0.9,
                 trainer_cpus: float = 1.0) -> NodeNeed:
    """The CPUs one GPU needs to be ``busy`` of the time, fed by a pipeline of the given efficiency."""
    if not 0 < busy <= 1 or gpu_patches_per_s <= 0 or pipeline_patches_per_cpu_s <= 0 or trainer_cpus < 0:
        raise ValueError("need 0 < busy <= 1, positive rates and trainer_cpus >= 0")
    demand = busy * gpu_patches_per_s
    data = demand / pipeline_patches_per_cpu_s
    return NodeNeed(demand, data, data + trainer_cpus, math.ceil(data + trainer_cpus))


@dataclass(frozen=True)
class EpochCost:
    gpu_hours: float
    cpu_hours: float
    wall_hours_per_gpu: float


def epoch_cost(crops: int, patches_per_crop: int, need: NodeNeed) -> EpochCost:
    """GPU-hours and CPU-hours of one pretraining epoch over ``crops`` crops at ``need``'s rate (one GPU's
    wall time; N GPUs take 1/N of it at the same GPU- and CPU-hours)."""
    seconds = crops * patches_per_crop / need.gpu_patches_per_s
    hours = seconds / 3600
    return EpochCost(gpu_hours=hours, cpu_hours=hours * need.cpus_per_gpu, wall_hours_per_gpu=hours)


def cost_table(crops: int = 10_000_000, patches_per_crop: int = 8, busy: float = 0.9) -> list[dict]:
    """Per net and pipeline (``decode_on=data``, with ``cut_on=data`` too, ``decode_on=trainer``, or
    ``cache_decoded``): CPUs per GPU for ``busy``, and an epoch over ``crops`` crops on H200s."""
    rows = []
    for net, rate in H200_PATCHES_PER_S.items():
        for mode, efficiency in PIPELINE_PATCHES_PER_CPU_S.items():
            gpu_rate = rate
            if mode == "trainer":  # the GPU also decodes: at most what it reached fed from JPEGs
                gpu_rate = min(rate, H200_FED_FROM_JPEGS[net] / busy)
            need = cpus_per_gpu(gpu_rate, efficiency, busy)
            cost = epoch_cost(crops, patches_per_crop, need)
            rows.append({"net": net, "pipeline": mode, "gpu_patches_per_s": round(need.gpu_patches_per_s),
                         "reaches_busy": mode != "trainer" or H200_FED_FROM_JPEGS[net] >= busy * rate,
                         "cpus_per_gpu": round(need.cpus_per_gpu, 1), "cores": need.cores_to_provision,
                         "gpu_hours": round(cost.gpu_hours, 3), "cpu_hours": round(cost.cpu_hours, 2)})
    return rows
