"""Memory benchmark: streaming 10x more shards must not need more memory.

The same pretraining ingest (Ray Data -> one Ray Train worker's patch batches) runs over N and then 10N
copies of the shards while a sampler records, every ``sample_s``: the driver's RSS, the training worker's
RSS, the largest data task's RSS, and the object store's use (Ray's own memory summary). A pipeline that
materialised its dataset would hold every decoded crop at once, ~60 kB each, and the peaks would grow 10x.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from patchray.bench.data import BenchConfig, describe_machine, machine, repeated_shards, start_bench
from patchray.patches import PatchTaskConfig
from patchray.ray_compat import object_store_used_mib

GOAL_RATIO = 1.2  # peak at 10x the shards over peak at 1x, for each thing measured
MEASURES = ("driver_rss_mib", "train_worker_rss_mib", "data_task_rss_mib", "object_store_mib")


@dataclass
class MemoryBenchConfig(BenchConfig):
    name: str = "bench_memory"
    copies: int = 2          # the small run streams the shards this many times over (to reach steady state)...
    scale: int = 10          # ...the big run ``scale`` times as many
    sample_s: float = 0.25
    crops_per_step: int = 16

    RENAMED_KEYS = {"crops_per_batch": "crops_per_step"}

    def __post_init__(self):
        super().__post_init__()
        if self.copies < 1 or self.scale < 2 or self.sample_s <= 0 or self.crops_per_step < 1:
            raise ValueError("need copies >= 1, scale >= 2, sample_s > 0 and crops_per_step >= 1")


def _process_rss_mib() -> dict[str, float]:
    """Largest RSS (MiB) of the training worker and of any data task process on this node right now."""
    peaks = {"train_worker_rss_mib": 0.0, "data_task_rss_mib": 0.0}
    for process in psutil.process_iter(["cmdline", "memory_info"]):
        try:
            title = " ".join(process.info["cmdline"] or [])
            rss = process.info["memory_info"].rss / 2**20
        except (psutil.Error, TypeError, AttributeError):
            continue
        if title.startswith("ray::RayTrainWorker"):
            peaks["train_worker_rss_mib"] = max(peaks["train_worker_rss_mib"], rss)
        elif title.startswith("ray::") and "read_and_decode" in title:
            peaks["data_task_rss_mib"] = max(peaks["data_task_rss_mib"], rss)
    return peaks


class MemorySampler:
    """Samples memory on a background thread while a run streams; ``series`` maps measure -> [(s, MiB)]."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self.series: dict[str, list[tuple[float, float]]] = {m: [] for m in MEASURES}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._driver = psutil.Process()

    def __enter__(self) -> MemorySampler:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter() - self._start
            values = {"driver_rss_mib": self._driver.memory_info().rss / 2**20,
                      "object_store_mib": object_store_used_mib()}
            values |= _process_rss_mib()
            for measure, value in values.items():
                self.series[measure].append((round(now, 2), round(value, 1)))
            self._stop.wait(self.every_s)

    def peaks(self) -> dict[str, float]:
        return {m: max((v for _, v in points), default=0.0) for m, points in self.series.items()}


def stream_and_sample(files: list[str], task: PatchTaskConfig, crops_per_step: int, seed: int, storage: Path,
                      sample_s: float = 0.25) -> dict:
    """Stream ``files`` once through the pretraining ingest into one Ray Train worker, sampling memory."""
    from patchray.bench.stream import stream_to_one_worker
    from patchray.pipeline import decoded_bytes
    from patchray.shards.reader import open_shards

    shards = open_shards(files)
    start = time.perf_counter()
    with MemorySampler(sample_s) as sampler:
        epochs, _, _ = stream_to_one_worker(shards, task, 1, crops_per_step, seed, storage, f"stream-{len(files)}")
    decoded_mib = decoded_bytes(shards.num_rows, task.crop_width, task.crop_height) / 2**20
    return {"files": len(files), "crops": shards.num_rows, "crops_streamed": epochs[0]["crops"],
            "decoded_mib": round(decoded_mib, 1), "seconds": round(time.perf_counter() - start, 1),
            "peaks": sampler.peaks(), "series": sampler.series}


def run_memory_bench(cfg: MemoryBenchConfig, log=print) -> dict:
    from patchray.report.plots import plot_memory
    from patchray.train.runner import init_ray

    out, base = start_bench(cfg, log)
    init_ray()
    runs = {}
    for label, copies in (("small", cfg.copies), ("large", cfg.copies * cfg.scale)):
        files = repeated_shards(base, copies, out / f"shards-{label}")
        log(f"[bench_memory] streaming {len(files)} shard files ({label}) ...")
        runs[label] = stream_and_sample(files, cfg.task, cfg.crops_per_step, cfg.seed, out / "ray", cfg.sample_s)
        log(f"[bench_memory]   {runs[label]['crops_streamed']} crops in {runs[label]['seconds']} s; peaks (MiB): "
            + ", ".join(f"{k} {v:.0f}" for k, v in runs[label]["peaks"].items()))
    ratios = {m: round(runs["large"]["peaks"][m] / max(runs["small"]["peaks"][m], 1e-9), 3) for m in MEASURES}
    result = {"machine": machine(), "scale": cfg.scale, "goal_ratio": GOAL_RATIO,
              "small": {k: v for k, v in runs["small"].items() if k != "series"},
              "large": {k: v for k, v in runs["large"].items() if k != "series"},
              "ratios": ratios, "met": all(r <= GOAL_RATIO for r in ratios.values())}
    (out / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "memory_samples.json").write_text(json.dumps({k: r["series"] for k, r in runs.items()}) + "\n")
    (out / "memory.md").write_text(format_markdown(result))
    plot_memory({f"{label}: {m.removesuffix('_mib')}": r["series"][m] for label, r in runs.items() for m in MEASURES},
                out / "memory.png", f"Memory while streaming 1x and {cfg.scale}x the shards")
    log(format_markdown(result))
    log(f"[bench_memory] outputs in {out}: memory.json, memory.md, memory.png, memory_samples.json, config.yaml")
    return result


def format_markdown(r: dict) -> str:
    small, large = r["small"], r["large"]
    lines = [f"Memory on {describe_machine(r['machine'])}: {small['crops']:,} crops ({small['decoded_mib']:,.0f} MiB "
             f"decoded) vs {large['crops']:,} ({large['decoded_mib']:,.0f} MiB decoded)", "",
             f"| peak (MiB) | 1x | {r['scale']}x | ratio |", "|---|---|---|---|"]
    for measure in MEASURES:
        lines.append(f"| {measure.removesuffix('_mib').replace('_', ' ')} | {small['peaks'][measure]:,.0f} | "
                     f"{large['peaks'][measure]:,.0f} | {r['ratios'][measure]:.2f} |")
    lines += ["", f"Goal: every ratio at most {r['goal_ratio']:g}: {'met' if r['met'] else 'not met'}", ""]
    return "\n".join(lines)
