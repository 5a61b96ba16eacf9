"""Accelerator benchmark: what one GPU sustains, and what it takes to feed it. Needs no Ray, so it runs on a
bare GPU machine as well as inside a cluster node.

1. Decode: patchray's CPU JPEG decoder (simplejpeg, ``decode_crops``) on one core against nvJPEG batched on the
   GPU (``decode_crops_on``), and the CPU cores it would take to match one GPU.
2. Cut: the NumPy sampler on one core against the same patches cut on the GPU (``task_patches_on``).
3. Train steps: patches/s per GPU for each net and batch size, fp32 then bf16 autocast, then channels-last,
   then ``torch.compile``, from patches already on the GPU (the accelerator's own ceiling).
4. End to end, in one process: encoded crops in host memory -> nvJPEG -> patches cut on the GPU -> train step,
   one after the other (the share of the time decoding and cutting cost), then with batches prepared in threads
   ahead of the step as in pretraining (patches/s per GPU and the data-wait fraction).

``device=cpu`` runs the same measurements on the CPU (small; for tests and for comparison).
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from patchray.accel import CompileBackend, Device, produce_for_default_stream, resolve_device, tune_for
from patchray.bench.data import BenchConfig, describe_machine, load_jpegs, machine, start_bench
from patchray.patches import task_patches_on, training_patches
from patchray.shards.decode import decode_crops
from patchray.shards.device_decode import decode_crops_on
from patchray.train.config import OptimConfig
from patchray.train.epoch import PretextStep, pretext_step, synchronize

COLLATE_THREADS = 4  # batches prepared ahead of the step, as Ray's format/collate pool (prefetch_batches=4)
# Each step of the ladder adds one setting to the one before; after it, what each of pretraining's defaults gains,
# each taken away alone from bf16 + channels-last ("-fused": torch's per-list SGD; "+sync_each_step": the loss
# read on the host after every step), and CUDA graphs ("+graphs": compile=reduce-overhead).
VARIANTS = ("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile", "bf16+channels_last-fused",
            "bf16+channels_last+sync_each_step", "bf16+channels_last+graphs")
LADDER = VARIANTS[:4]


@dataclass
class GpuBenchConfig(BenchConfig):
    name: str = "bench_gpu"
    device: Device = "auto"        # auto | cuda | cpu
    crops: int = 4096              # encoded crops held in host memory
    decode_batch: int = 256        # crops per nvJPEG call (as a data block)
    models: list[str] = field(default_factory=lambda: ["tiny", "resnet18"])
    patches_per_step: list[int] = field(default_factory=lambda: [128, 1024])  # each tried in turn
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))   # LADDER for the four of 2026-11-25
    compile: CompileBackend = "inductor"  # the backend of the "+compile" variant
    warmup_steps: int = 5
    steps: int = 30                # timed steps per variant
    optim: OptimConfig = field(default_factory=OptimConfig)

    RENAMED_KEYS = {"batch_sizes": "patches_per_step"}

    def __post_init__(self):
        super().__post_init__()
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
        if not self.compile:
            raise ValueError("compile names the backend of the +compile variant; it cannot be ''")
        if min(self.crops, self.decode_batch, self.steps, self.warmup_steps + 1) < 1 or not self.patches_per_step:
            raise ValueError("crops, decode_batch and steps must be >= 1, warmup_steps >= 0, patches_per_step "
                             "non-empty")
        if any(b % self.task.patches_per_crop for b in self.patches_per_step):
            raise ValueError(f"patches_per_step {self.patches_per_step} must be multiples of task.patches_per_crop")


def _rate(work, count: int, device: torch.device, repeats: int = 1) -> float:
    """``count`` items per call of ``work``, per second, after one warm-up call (the device drained each time)."""
    work()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    synchronize(device)
    return count * repeats / (time.perf_counter() - start)


def _one_core(fn):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def decode_and_cut(images: list[bytes], crop_ids: list[str], cfg: GpuBenchConfig, device: torch.device) -> dict:
    """Crops/s decoding, and patches/s cutting, on one CPU core and on ``device``."""
    width, height, k = cfg.task.crop_width, cfg.task.crop_height, cfg.task.patches_per_crop
    batches = [(images[i:i + cfg.decode_batch], crop_ids[i:i + cfg.decode_batch])
               for i in range(0, len(images) - cfg.decode_batch + 1, cfg.decode_batch)]

    def cpu_decode():
        for encoded, _ in batches:
            decode_crops(encoded, width, height)

    def device_decode():
        for encoded, _ in batches:
            decode_crops_on(encoded, width, height, device)

    crops = sum(len(e) for e, _ in batches)
    cpu_crops, _ = decode_crops(batches[0][0], width, height)
    on_device = torch.from_numpy(cpu_crops).to(device)
    ids = batches[0][1]
    result = {
        "cpu_decode_crops_per_s_per_core": _one_core(lambda: _rate(cpu_decode, crops, torch.device("cpu"))),
        "device_decode_crops_per_s": _rate(device_decode, crops, device),
        "cpu_cut_patches_per_s_per_core": _one_core(lambda: _rate(
            lambda: training_patches(cpu_crops, ids, cfg.task, cfg.seed, 0), len(ids) * k, torch.device("cpu"), 5)),
        "device_cut_patches_per_s": _rate(lambda: task_patches_on(on_device, ids, cfg.task, cfg.seed, 0),
                                          len(ids) * k, device, 5),
    }
    result["cpu_cores_to_match_device_decode"] = round(
        result["device_decode_crops_per_s"] / result["cpu_decode_crops_per_s_per_core"], 1)
    return {key: round(value) if isinstance(value, float) and value > 100 else value for key, value in result.items()}


def _step(model: str, variant: str, cfg: GpuBenchConfig, device: torch.device) -> PretextStep:
    """Pretraining's own step (``patchray.train.epoch``) for one net under one variant: normalise, forward, loss,
    backward, SGD."""
    compile = cfg.compile if variant.endswith("+compile") else "reduce-overhead" if variant.endswith("+graphs") else ""
    optim = dataclasses.replace(cfg.optim, fused=cfg.optim.fused and not variant.endswith("-fused"))
    return pretext_step(model, cfg.task, optim, seed=cfg.seed, device=device, amp=variant != "fp32",
                        channels_last="channels_last" in variant, compile=compile,
                        check_every=1 if variant.endswith("+sync_each_step") else None)


def _batch(patches: torch.Tensor, labels: torch.Tensor) -> dict:
    return {"patches": patches, "labels": labels}


def train_steps(crops: torch.Tensor, crop_ids: list[str], cfg: GpuBenchConfig, device: torch.device, log) -> list[dict]:
    """Patches/s per device for every (net, batch size, variant), from patches already on the device."""
    rows = []
    per_crop = cfg.task.patches_per_crop
    for model in cfg.models:
        for per_step in cfg.patches_per_step:
            n = per_step // per_crop
            batches = [_batch(*task_patches_on(crops[i:i + n], crop_ids[i:i + n], cfg.task, cfg.seed, 0))
                       for i in range(0, min(len(crop_ids), 8 * n) - n + 1, n)]
            for variant in cfg.variants:
                if device.type == "cpu" and variant not in ("fp32", LADDER[-1]):
                    continue  # bf16 autocast is a GPU setting (a no-op on the CPU), and so are the ablations
                step = _step(model, variant, cfg, device)
                started = time.perf_counter()
                for i in range(cfg.warmup_steps + 1):
                    step(batches[i % len(batches)])
                synchronize(device)
                warm_s = time.perf_counter() - started
                start = time.perf_counter()
                for i in range(cfg.steps):
                    final = step(batches[i % len(batches)]).loss
                synchronize(device)
                seconds = time.perf_counter() - start
                rows.append({"model": model, "patches_per_step": per_step, "variant": variant,
                             "patches_per_s": round(per_step * cfg.steps / seconds), "warmup_s": round(warm_s, 1),
                             "loss": round(float(final), 3)})
                log(f"[bench_gpu] {model}, batch {per_step}, {variant}: {rows[-1]['patches_per_s']:,} patches/s "
                    f"(warm-up {warm_s:.1f} s)")
    return rows


def end_to_end(images: list[bytes], crop_ids: list[str], cfg: GpuBenchConfig, device: torch.device,
               model: str, per_step: int, variant: str) -> dict:
    """Encoded crops -> decode on the device -> cut -> step, twice: one after the other (the share of the time
    the data costs), then with batches prepared by ``COLLATE_THREADS`` threads ahead of the step, as Ray's
    format/collate pool does in pretraining (patches/s and the share of time the step waited for its batch)."""
    step = _step(model, variant, cfg, device)
    n = per_step // cfg.task.patches_per_crop
    width, height = cfg.task.crop_width, cfg.task.crop_height
    steps = min(cfg.steps, len(images) // n)

    def prepare(i: int):
        first = (i * n) % (len(images) - n + 1)

        def produce():
            pixels, _ = decode_crops_on(images[first:first + n], width, height, device)
            return _batch(*task_patches_on(pixels, crop_ids[first:first + n], cfg.task, cfg.seed, 1))

        return produce_for_default_stream(device, produce)

    data_s = step_s = 0.0
    for i in range(cfg.warmup_steps + 1 + steps):
        synchronize(device)
        t0 = time.perf_counter()
        batch = prepare(i)
        synchronize(device)
        t1 = time.perf_counter()
        step(batch)
        synchronize(device)
        if i > cfg.warmup_steps:
            data_s, step_s = data_s + t1 - t0, step_s + time.perf_counter() - t1

    wait_s = 0.0
    with ThreadPoolExecutor(COLLATE_THREADS) as pool:
        pending = deque(pool.submit(prepare, i) for i in range(COLLATE_THREADS))
        for i in range(cfg.warmup_steps + 1 + steps):
            if i == cfg.warmup_steps + 1:
                synchronize(device)
                start, wait_s = time.perf_counter(), 0.0
            t0 = time.perf_counter()
            batch = pending.popleft().result()
            wait_s += time.perf_counter() - t0
            pending.append(pool.submit(prepare, i + COLLATE_THREADS))
            step(batch)
        synchronize(device)
        overlapped_s = time.perf_counter() - start
    return {"model": model, "patches_per_step": per_step, "variant": variant,
            "serial_patches_per_s": round(per_step * steps / (data_s + step_s)),
            "serial_data_frac": round(data_s / (data_s + step_s), 3),
            "patches_per_s": round(per_step * steps / overlapped_s), "data_wait_frac": round(wait_s / overlapped_s, 3)}


def run_gpu_bench(cfg: GpuBenchConfig, log=print) -> dict:
    from patchray.report.plots import plot_throughput

    out, files = start_bench(cfg, log)
    device = resolve_device(cfg.device)
    tune_for(device)
    images, crop_ids = load_jpegs(files, cfg.crops)
    info = machine()
    log(f"[bench_gpu] {len(images)} crops on {device.type} ({describe_machine(info)})")
    result = {"machine": info, "device": device.type, "crops": len(images),
              "patches_per_crop": cfg.task.patches_per_crop}

    def save():
        (out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")  # after each part: a cut-off run keeps it

    result["decode"] = decode_and_cut(images, crop_ids, cfg, device)
    log(f"[bench_gpu] decode and cut: {result['decode']}")
    save()
    crops, _ = decode_crops_on(images, cfg.task.crop_width, cfg.task.crop_height, device)
    result["train"] = train_steps(crops, crop_ids, cfg, device, log)
    save()
    best = max(result["train"], key=lambda r: r["patches_per_s"])
    result["end_to_end"] = [end_to_end(images, crop_ids, cfg, device, row["model"], row["patches_per_step"],
                                       row["variant"])
                            for row in _best_per_model_and_batch(result["train"])]
    for row in result["end_to_end"]:
        log(f"[bench_gpu] end to end, {row['model']}, batch {row['patches_per_step']}, {row['variant']}: "
            f"{row['patches_per_s']:,} patches/s waiting for data {100 * row['data_wait_frac']:.0f}% of the time "
            f"(one after the other: {row['serial_patches_per_s']:,}, decoding and cutting "
            f"{100 * row['serial_data_frac']:.0f}%)")
    save()
    (out / "gpu.md").write_text(format_markdown(result))
    plot_throughput({f"{r['model']}, batch {r['patches_per_step']}, {r['variant']}": r["patches_per_s"]
                     for r in result["train"]}, out / "gpu.png",
                    f"Training steps per {device.type} device, {describe_machine(info)}")
    log(format_markdown(result))
    log(f"[bench_gpu] best training rate: {best['patches_per_s']:,} patches/s ({best['model']}, batch "
        f"{best['patches_per_step']}, {best['variant']}); outputs in {out}: gpu.json, gpu.md, gpu.png, config.yaml")
    return result


def _best_per_model_and_batch(rows: list[dict]) -> list[dict]:
    best: dict[tuple, dict] = {}
    for row in rows:
        key = (row["model"], row["patches_per_step"])
        if key not in best or row["patches_per_s"] > best[key]["patches_per_s"]:
            best[key] = row
    return list(best.values())


def format_markdown(r: dict) -> str:
    d, unit = r["decode"], "GPU" if r["device"] == "cuda" else "CPU device"
    lines = [
        f"On {describe_machine(r['machine'])}, device {r['device']}, K={r['patches_per_crop']}",
        "",
        "| stage | one CPU core | one " + unit + " | " + unit + " / core |",
        "|---|---|---|---|",
        f"| JPEG decode, crops/s | {d['cpu_decode_crops_per_s_per_core']:,} | {d['device_decode_crops_per_s']:,} | "
        f"{d['cpu_cores_to_match_device_decode']:g} |",
        f"| patch cutting, patches/s | {d['cpu_cut_patches_per_s_per_core']:,} | {d['device_cut_patches_per_s']:,} | "
        f"{d['device_cut_patches_per_s'] / d['cpu_cut_patches_per_s_per_core']:.1f} |",
        "",
        f"| net | batch (patches) | settings | train patches/s per {unit} | warm-up s |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {t['model']} | {t['patches_per_step']} | {t['variant']} | {t['patches_per_s']:,} | {t['warmup_s']} |"
              for t in r["train"]]
    lines += ["", f"| end to end: encoded crops -> decode and cut on the {unit} -> step | batch | settings | "
                  f"patches/s, {COLLATE_THREADS} collate threads | waiting for data | patches/s, one after the other | "
                  "decoding + cutting |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {e['model']} | {e['patches_per_step']} | {e['variant']} | {e['patches_per_s']:,} | "
              f"{100 * e['data_wait_frac']:.0f}% | {e['serial_patches_per_s']:,} | {100 * e['serial_data_frac']:.0f}% |"
              for e in r["end_to_end"]]
    return "\n".join([*lines, ""])
