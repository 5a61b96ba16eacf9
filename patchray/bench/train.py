"""Training benchmark: what Ray Train costs. The same model, the same in-memory crops, the same patch batches
and the same per-epoch checkpoint, stepped by pretraining's own step and epoch (``patchray.train.epoch``) in
this process without Ray and in one Ray Train worker. Data loading is left out on purpose (that is
``bench_ingest``): both sides cut their patches from crops already in memory, so the ratio is Ray Train's
overhead alone.

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

from patchray import config as configlib
from patchray.accel import CompileBackend, Device, channels_last_for, resolve_device, tune_for
from patchray.bench.data import BenchConfig, describe_machine, fit_json, load_jpegs, machine, report_json, start_bench
from patchray.patches import PatchTaskConfig, training_patches
from patchray.train.config import DecodeOn, OptimConfig
from patchray.train.epoch import pretext_step, train_epoch

GOAL_OVERHEAD = 0.10  # Ray Train at most 10% slower than the plain loop


@dataclass
class TrainBenchConfig(BenchConfig):
    name: str = "bench_train"
    model: str = "tiny"
    crops: int = 2048              # decoded once, held in memory by both contenders
    epochs: int = 4                # the first is warm-up; throughput is over the rest
    patches_per_step: int = 128    # as pretraining
    # torch threads on each side, one comparison per entry (empty: all cores, then all but one, which leaves
    # Ray's own daemons a core of their own)
    threads: list[int] = field(default_factory=list)
    device: Device = "auto"        # auto | cpu | cuda
    amp: bool = True               # bf16 autocast (GPU only)
    channels_last: bool | None = None
    compile: CompileBackend = ""
    # Then pretraining itself for this many epochs (one worker, Ray Data feeding it): patches/s per worker (per
    # GPU) and the share of time its steps waited for data, the last epoch's. 0: skip.
    pipeline_epochs: int = 2
    decode_on: DecodeOn = "data"   # that pretraining's decode_on (trainer: nvJPEG on the GPU)
    optim: OptimConfig = field(default_factory=OptimConfig)

    RENAMED_KEYS = {"batch_size": "patches_per_step"}

    def __post_init__(self):
        super().__post_init__()
        if self.crops < 1 or self.epochs < 2 or self.patches_per_step < 1:
            raise ValueError("need crops >= 1, epochs >= 2 (one is warm-up) and patches_per_step >= 1")
        if self.patches_per_step % self.task.patches_per_crop:
            raise ValueError(f"patches_per_step {self.patches_per_step} must be a multiple of task.patches_per_crop")
        if any(t < 1 for t in self.threads):
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def thread_counts(self) -> list[int]:
        cores = os.cpu_count() or 1
        return list(self.threads) or sorted({cores, max(cores - 1, 1)}, reverse=True)


def _patch_batches(crops: np.ndarray, crop_ids: list[str], task: PatchTaskConfig, seed: int, epoch: int,
                   per_step: int, device: torch.device):
    """An epoch's batches, cut as pretraining's collate cuts them (``training_patches``) and copied to ``device``:
    what the step waits for."""
    for first in range(0, len(crops) - per_step + 1, per_step):
        patches, labels = training_patches(crops[first:first + per_step], crop_ids[first:first + per_step],
                                           task, seed, epoch)
        yield {"patches": torch.from_numpy(patches).to(device, non_blocking=True),
               "labels": torch.from_numpy(labels).to(device, non_blocking=True)}


def train_epochs(cfg: dict, crops: np.ndarray, crop_ids: list[str], device: torch.device, checkpoint) -> list[dict]:
    """The benchmark's work, identical on both sides: ``epochs`` passes over the crops in fixed batches, each
    stepped by pretraining's own step and epoch (``patchray.train.epoch``: normalise, forward, loss, backward,
    SGD); ``checkpoint(state_dict)`` after every epoch. Returns per epoch: patches, seconds, and seconds the step
    waited for its batch (cut and copied to the device)."""
    bench = configlib.build(TrainBenchConfig, cfg)
    tune_for(device)
    step = pretext_step(bench.model, bench.task, bench.optim, seed=bench.seed, device=device, amp=bench.amp,
                        channels_last=bench.channels_last, compile=bench.compile, rows=bench.patches_per_step)
    per_step = bench.patches_per_step // bench.task.patches_per_crop
    history = []
    for epoch in range(bench.epochs):
        batches = _patch_batches(crops, crop_ids, bench.task, bench.seed, epoch, per_step, device)
        totals = train_epoch(batches, step, epoch, device)
        history.append({"patches": int(totals.count), "seconds": totals.elapsed, "wait_s": totals.wait_s,
                        "loss": float(totals.last_loss)})
        checkpoint(step.net.state_dict())
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

    from patchray.train.worker import start_worker

    _, _, device = start_worker(loop_config)
    crops, crop_ids = ray.get(loop_config["crops_ref"])

    def checkpoint(state):
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder, "model.pt"))
            ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(folder))

    history = train_epochs(loop_config["config"], crops, crop_ids, device, checkpoint)
    report_json({"history": history})


def ray_train(cfg: dict, crops: np.ndarray, crop_ids: list[str], threads: int,
              storage: Path) -> tuple[list[dict], float]:
    """The same work in one Ray Train worker holding ``threads`` CPUs (and a GPU when the device is CUDA)."""
    import ray

    from patchray.train.resources import ResourcePlan
    from patchray.train.runner import make_trainer

    use_gpu = resolve_device(cfg["device"]).type == "cuda"
    plan = ResourcePlan(num_workers=1, use_gpu=use_gpu, cpus_per_worker=threads, data_cpus=0.0, torch_threads=threads,
                        resources_per_worker={"CPU": threads} | ({"GPU": 1} if use_gpu else {}))
    start = time.perf_counter()
    trainer = make_trainer(_ray_train_loop, {"config": cfg, "crops_ref": ray.put((crops, crop_ids))}, plan,
                           location=(str(storage), "train"))
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
    log(f"[bench_train] {cfg.model} net, {len(crops)} crops x {cfg.epochs} epochs, "
        f"{cfg.patches_per_step} patches a step, device {device.type}")
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
              "epochs": cfg.epochs, "patches_per_step": cfg.patches_per_step, "amp": cfg.amp and device.type == "cuda",
              "channels_last": channels_last_for(cfg.channels_last, device), "compile": cfg.compile,
              "goal_overhead": GOAL_OVERHEAD, "runs": rows}
    if cfg.pipeline_epochs:
        result["pipeline"] = against_plain(pipeline_pretraining(cfg, out, log), rows)
    (out / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "train.md").write_text(format_markdown(result))
    plot_throughput({f"{name}, {r['threads']} thread(s)": r[key] for r in rows
                     for name, key in (("plain PyTorch", "plain_patches_per_s"),
                                       ("Ray Train", "ray_train_patches_per_s"))},
                    out / "train.png",
                    f"Training, {cfg.model} net on {device.type}, {describe_machine(result['machine'])}")
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
        "epochs": cfg.pipeline_epochs, "patches_per_step": cfg.patches_per_step, "amp": cfg.amp,
        "channels_last": cfg.channels_last, "compile": cfg.compile, "decode_on": cfg.decode_on,
        "input": configlib.to_dict(cfg.input), "task": configlib.to_dict(cfg)["task"],
        "optim": configlib.to_dict(cfg.optim),
        "resources": {"num_workers": 1}})
    # A measurement, not a run to resume: the last benchmark's pretraining (its checkpoints) goes first.
    shutil.rmtree(out / pretrain.name, ignore_errors=True)
    summary = run_pretrain(pretrain, log=log)
    return {"epochs": summary["epochs"], "decode_on": cfg.decode_on,
            "patches_per_s_per_worker": round(summary["patches_per_s_per_worker"]),
            "data_wait_frac": round(summary["data_wait_frac"], 3), "resources": summary["resources"],
            "torch_threads": summary["torch_threads_per_worker"],
            "output": summary["output"]}


def against_plain(pipeline: dict, runs: list[dict]) -> dict:
    """The pretraining fed by Ray Data against the plain loop on crops already in memory, at the worker's own
    torch threads where that was run (else the fastest): Ray's whole overhead (Train and Data together, the wait
    for data included), the figure that matters on a GPU, where the step, not the host, should set the pace. The
    plain loop decodes nothing, so with ``decode_on=trainer`` the ratio also counts nvJPEG's decode beside the
    step."""
    same = [run for run in runs if run["threads"] == pipeline.get("torch_threads")]
    plain = max(run["plain_patches_per_s"] for run in same or runs)
    ratio = pipeline["patches_per_s_per_worker"] / plain
    return pipeline | {"plain_patches_per_s": plain, "vs_plain": round(ratio, 3), "overhead": round(1 - ratio, 3),
                       "met": 1 - ratio <= GOAL_OVERHEAD}


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
        f"{r['patches_per_step']} patches, bf16 {'on' if r['amp'] else 'off'}, channels-last "
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
        if "vs_plain" in p:
            # faster than the plain loop happens on short CPU runs (noise, and the worker's threads): no cost seen
            cost = f"{100 * p['overhead']:.0f}%" if p["overhead"] > 0 else "nothing measurable"
            lines += ["", f"Against the plain loop on crops in memory ({p['plain_patches_per_s']:,} "
                          f"patches/s): {p['vs_plain']:.3f}x, Ray Train and Ray Data together cost {cost} "
                          f"(goal <= {100 * r['goal_overhead']:.0f}%: {'met' if p['met'] else 'not met'})"]
    return "\n".join([*lines, ""])
