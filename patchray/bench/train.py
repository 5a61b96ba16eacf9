"""Training benchmark: what Ray Train costs. The same model, the same in-memory crops, the same patch batches
and the same per-epoch checkpoint, stepped by a plain PyTorch loop in this process and by one Ray Train
worker. Data loading is left out on purpose (that is ``bench_ingest``): both sides cut their patches from
crops already in memory, so the ratio is Ray Train's overhead alone.

On a GPU (``device=cuda``, the default when there is one) it also reports patches/s per GPU with the
accelerator settings (bf16 autocast, channels-last, optional torch.compile).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from patchray import config as configlib
from patchray.bench.data import describe_machine, fit_json, load_jpegs, machine, report_json, start_bench
from patchray.patches import PatchTaskConfig, normalize_patches, training_patches
from patchray.accel import (as_input, autocast, channels_last_for, check_compile, check_device, maybe_compile,
                                  resolve_device, to_memory_format)
from patchray.train.config import OptimConfig, check_decode_on

GOAL_OVERHEAD = 0.10  # Ray Train at most 10% slower than the plain loop


@dataclass
class TrainBenchConfig:
    name: str = "bench_train"
    out: str = "runs"
    data: list[str] = field(default_factory=list)  # shard globs or folders; empty: the synthetic default
    model: str = "tiny"
    crops: int = 2048              # decoded once, held in memory by both contenders
    epochs: int = 4                # the first is warm-up; throughput is over the rest
    batch_size: int = 128          # patches per step, as pretraining
    # torch threads on each side, one comparison per entry (empty: all cores, then all but one, which leaves
    # Ray's own daemons a core of their own)
    threads: list[int] = field(default_factory=list)
    device: str = "auto"           # auto | cpu | cuda
    amp: bool = True               # bf16 autocast (GPU only)
    channels_last: bool | None = None
    compile: str = ""
    # Then pretraining itself for this many epochs (one worker, Ray Data feeding it): patches/s per worker (per
    # GPU) and the share of time its steps waited for data, the last epoch's. 0: skip.
    pipeline_epochs: int = 2
    decode_on: str = "data"        # that pretraining's decode_on (trainer: nvJPEG on the GPU)
    seed: int = 0
    task: PatchTaskConfig = field(default_factory=PatchTaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self):
        if self.crops < 1 or self.epochs < 2 or self.batch_size < 1:
            raise ValueError("need crops >= 1, epochs >= 2 (one is warm-up) and batch_size >= 1")
        if self.batch_size % self.task.patches_per_crop:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of task.patches_per_crop")
        check_device(self.device)
        check_compile(self.compile)
        check_decode_on(self.decode_on)
        if any(t < 1 for t in self.threads):
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def thread_counts(self) -> list[int]:
        cores = os.cpu_count() or 1
        return list(self.threads) or sorted({cores, max(cores - 1, 1)}, reverse=True)


def train_epochs(cfg: dict, crops: np.ndarray, crop_ids: list[str], device: torch.device, checkpoint) -> list[dict]:
    """The benchmark's work, identical on both sides: ``epochs`` passes over the crops in fixed batches, each
    step cutting its patches, then forward, backward, SGD; ``checkpoint(state_dict)`` after every epoch.
    Returns per epoch: patches, seconds, and seconds the step waited for its batch to reach the device."""
    from patchray.models import PretextNet, build_trunk
    from patchray.train.optim import build_optimizer

    bench = configlib.build(TrainBenchConfig, cfg)
    torch.manual_seed(bench.seed)
    task = bench.task
    net = PretextNet(build_trunk(bench.model), task.num_classes, patch_size=task.patch_size, pairwise=task.pairwise)
    channels_last = channels_last_for(bench.channels_last, device)
    net = to_memory_format(net.to(device), channels_last)
    model = maybe_compile(net, bench.compile)
    optimizer = build_optimizer(net.parameters(), bench.optim)
    per_step = bench.batch_size // task.patches_per_crop
    history = []
    for epoch in range(bench.epochs):
        count, wait, start = 0, 0.0, time.perf_counter()
        for first in range(0, len(crops) - per_step + 1, per_step):
            fetched = time.perf_counter()
            patches, labels = training_patches(crops[first:first + per_step], crop_ids[first:first + per_step],
                                               task, bench.seed, epoch)
            x = torch.from_numpy(patches).to(device, non_blocking=True)
            y = torch.from_numpy(labels).to(device, non_blocking=True)
            wait += time.perf_counter() - fetched
            x = as_input(normalize_patches(x, task.normalize), channels_last)
            with autocast(device, bench.amp):
                logits = model(x).float()
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            count += len(labels)
        loss.item()  # wait for the device before stopping the clock
        if device.type == "cuda":
            torch.cuda.synchronize()
        history.append({"patches": count, "seconds": time.perf_counter() - start, "wait_s": wait,
                        "loss": float(loss.item())})
        checkpoint(net.state_dict())
    return history


def plain_loop(cfg: dict, crops: np.ndarray, crop_ids: list[str], threads: int) -> tuple[list[dict], float]:
    """The baseline: the work in this process, saving each epoch's state_dict as a user would."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        history = train_epochs(cfg, crops, crop_ids, resolve_device(cfg["device"]),
                               lambda state: torch.save(state, Path(folder, "model.pt")))
    return history, time.perf_counter() - start


def _ray_train_loop(loop_config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch

    torch.set_num_threads(loop_config["threads"])
    crops, crop_ids = ray.get(loop_config["crops_ref"])

    def checkpoint(state):
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder, "model.pt"))
            ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(folder))

    history = train_epochs(loop_config["config"], crops, crop_ids, ray.train.torch.get_device(), checkpoint)
    report_json({"history": history})


def ray_train(cfg: dict, crops: np.ndarray, crop_ids: list[str], threads: int, storage: Path) -> tuple[list[dict], float]:
    """The same work in one Ray Train worker holding ``threads`` CPUs (and a GPU when the device is CUDA)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    use_gpu = resolve_device(cfg["device"]).type == "cuda"
    resources = {"CPU": threads} | ({"GPU": 1} if use_gpu else {})
    start = time.perf_counter()
    trainer = TorchTrainer(
        _ray_train_loop,
        train_loop_config={"config": cfg, "threads": threads, "crops_ref": ray.put((crops, crop_ids))},
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(storage_path=str(storage), name="train",
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)))
    history = fit_json(trainer)["history"]
    return history, time.perf_counter() - start


def steady_rate(history: list[dict]) -> float:
    """Patches per second over every epoch but the first (compilation, allocator and cache warm-up)."""
    rest = history[1:]
    return sum(h["patches"] for h in rest) / sum(h["seconds"] for h in rest)


def run_train_bench(cfg: TrainBenchConfig, log=print) -> dict:
    from patchray.report.plots import plot_throughput
    from patchray.shards.decode import decode_crops
    from patchray.train.runner import init_ray

    out, files = start_bench(cfg, log)
    images, crop_ids = load_jpegs(files, cfg.crops)
    crops, _ = decode_crops(images, cfg.task.crop_width, cfg.task.crop_height)
    device = resolve_device(cfg.device)
    plain_cfg = configlib.to_dict(cfg) | {"device": device.type}
    log(f"[bench_train] {cfg.model} net, {len(crops)} crops x {cfg.epochs} epochs, batch {cfg.batch_size} patches, "
        f"device {device.type}")
    # Every plain loop first, before this process starts or joins Ray: the baseline is a user without Ray, and
    # a Ray driver's own threads in this process (and Ray's daemons on the machine) would slow it.
    plain = {}
    for threads in cfg.thread_counts():
        plain[threads] = plain_loop(plain_cfg, crops, crop_ids, threads)
        log(f"[bench_train] {threads} thread(s), plain PyTorch loop: {steady_rate(plain[threads][0]):.0f} patches/s "
            f"({plain[threads][1]:.1f} s)")
    init_ray()
    rows = []
    for threads, (history, wall) in plain.items():
        ray_history, ray_wall = ray_train(plain_cfg, crops, crop_ids, threads, out / "ray")
        log(f"[bench_train] {threads} thread(s), Ray Train, 1 worker: {steady_rate(ray_history):.0f} patches/s "
            f"({ray_wall:.1f} s with start-up)")
        rows.append(compare(threads, history, wall, ray_history, ray_wall))
    result = {"machine": machine(), "model": cfg.model, "device": device.type, "crops": len(crops),
              "epochs": cfg.epochs, "batch_size": cfg.batch_size, "amp": cfg.amp and device.type == "cuda",
              "channels_last": channels_last_for(cfg.channels_last, device), "compile": cfg.compile,
              "goal_overhead": GOAL_OVERHEAD, "runs": rows}
    if cfg.pipeline_epochs:
        result["pipeline"] = pipeline_pretraining(cfg, out, log)
    (out / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "train.md").write_text(format_markdown(result))
    plot_throughput({f"{name}, {r['threads']} thread(s)": r[key] for r in rows
                     for name, key in (("plain PyTorch", "plain_patches_per_s"), ("Ray Train", "ray_train_patches_per_s"))},
                    out / "train.png", f"Training, {cfg.model} net on {device.type}, {describe_machine(result['machine'])}")
    log(format_markdown(result))
    log(f"[bench_train] outputs in {out}: train.json, train.md, train.png, config.yaml")
    return result


def pipeline_pretraining(cfg: TrainBenchConfig, out: Path, log) -> dict:
    """A short real pretraining on one worker: how fast a worker trains when Ray Data feeds it, and how much
    of its time it waits for data."""
    from patchray.train.config import PretrainConfig
    from patchray.train.pretrain import run_pretrain

    pretrain = configlib.build(PretrainConfig, {
        "name": "pretrain", "out": str(out), "data": list(cfg.data), "model": cfg.model, "seed": cfg.seed,
        "epochs": cfg.pipeline_epochs, "batch_size": cfg.batch_size, "amp": cfg.amp, "channels_last": cfg.channels_last,
        "compile": cfg.compile, "decode_on": cfg.decode_on, "task": cfg.task.to_dict(),
        "optim": configlib.to_dict(cfg.optim),
        "resources": {"num_workers": 1}})
    # A measurement, not a run to resume: the last benchmark's pretraining (its checkpoints) goes first.
    shutil.rmtree(out / pretrain.name, ignore_errors=True)
    summary = run_pretrain(pretrain, log=log)
    return {"epochs": summary["epochs"], "decode_on": cfg.decode_on,
            "patches_per_s_per_worker": round(summary["patches_per_s_per_worker"]),
            "data_wait_frac": round(summary["data_wait_frac"], 3), "resources": summary["resources"],
            "output": summary["output"]}


def compare(threads: int, plain: list[dict], plain_wall: float, ray_history: list[dict], ray_wall: float) -> dict:
    """One thread count's verdict from the two contenders' per-epoch histories."""
    plain_rate, ray_rate = steady_rate(plain), steady_rate(ray_history)
    overhead = 1 - ray_rate / plain_rate
    wait = sum(h["wait_s"] for h in ray_history[1:]) / sum(h["seconds"] for h in ray_history[1:])
    return {"threads": threads, "plain_patches_per_s": round(plain_rate), "ray_train_patches_per_s": round(ray_rate),
            "ratio": round(ray_rate / plain_rate, 3), "overhead": round(overhead, 3), "met": overhead <= GOAL_OVERHEAD,
            "ray_data_wait_frac": round(wait, 3), "plain_wall_s": round(plain_wall, 1),
            "ray_train_wall_s": round(ray_wall, 1), "plain_by_epoch": plain, "ray_train_by_epoch": ray_history}


def format_markdown(r: dict) -> str:
    per = " per GPU" if r["device"] == "cuda" else ""
    lines = [
        f"Training on {describe_machine(r['machine'])}: {r['model']} net, device {r['device']}, batch "
        f"{r['batch_size']} patches, bf16 {'on' if r['amp'] else 'off'}, channels-last "
        f"{'on' if r['channels_last'] else 'off'}, compile {r['compile'] or 'off'}",
        "",
        f"| threads | plain PyTorch, patches/s{per} | Ray Train (1 worker), patches/s{per} | Ray Train / plain | "
        "overhead goal | step time cutting + copying its batch |",
        "|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        lines.append(f"| {run['threads']} | {run['plain_patches_per_s']:,} | {run['ray_train_patches_per_s']:,} | "
                     f"{run['ratio']:.3f} | <= {100 * r['goal_overhead']:.0f}%: {'met' if run['met'] else 'not met'} | "
                     f"{100 * run['ray_data_wait_frac']:.0f}% |")
    if r.get("pipeline"):
        p = r["pipeline"]
        lines += ["", f"Pretraining fed by Ray Data ({p['resources']}; decoded on {p['decode_on']}): "
                      f"{p['patches_per_s_per_worker']:,} patches/s "
                      f"per worker{per}, waiting for data {100 * p['data_wait_frac']:.0f}% of the time"]
    return "\n".join([*lines, ""])
