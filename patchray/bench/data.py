"""Benchmark inputs: what every benchmark's config holds, the same shards repeated to any size, and the machine
they were measured on."""
from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from patchray.patches import PatchTaskConfig
from patchray.shards.reader import open_shards
from patchray.shards.schema import CROP_ID, IMAGE
from patchray.train.config import TASK_FOLLOWS_INPUT, InputConfig, task_for


@dataclass
class BenchConfig:
    """What every benchmark's config holds: where it writes, its shards, a seed, and the PatchTask on the same
    input section as pretraining's (so a benchmark is set up with the keys a pretraining is)."""
    name: str = "bench"
    out: str = "runs"
    data: list[str] = field(default_factory=list)  # shard globs or folders; empty: the synthetic default
    seed: int = 0
    input: InputConfig = field(default_factory=InputConfig)
    task: PatchTaskConfig = field(default_factory=PatchTaskConfig)

    DERIVED_KEYS = TASK_FOLLOWS_INPUT

    def __post_init__(self):
        self.task = task_for(self.task, self.input)


def repeated_shards(files: list[str], copies: int, folder: Path) -> list[str]:
    """``copies`` x the given Parquet files, as links under ``folder`` (no bytes copied).

    More of the same shards make a longer epoch (and a bigger dataset for the memory
    check) without rendering new data; crop ids repeat, which no benchmark depends on.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.parquet"):
        stale.unlink()
    out = []
    for copy in range(copies):
        for index, source in enumerate(files):
            link = folder / f"copy{copy:04d}-{index:04d}.parquet"
            os.symlink(os.path.abspath(source), link)
            out.append(str(link))
    return out


def load_jpegs(files: list[str], limit: int | None = None) -> tuple[list[bytes], list[str]]:
    """The encoded images and crop ids of the first ``limit`` rows (all when None)."""
    images: list[bytes] = []
    ids: list[str] = []
    for path in files:
        table = pq.read_table(path, columns=[IMAGE, CROP_ID])
        images += table.column(IMAGE).to_pylist()
        ids += table.column(CROP_ID).to_pylist()
        if limit is not None and len(images) >= limit:
            return images[:limit], ids[:limit]
    return images, ids


def shard_summary(files: list[str], images: list[bytes]) -> dict:
    """Files, crops (every file's schema checked), the mean encoded size of ``images`` and their median stored
    size, [width, height] from the JPEG headers (a detector's crops come in every size; the synthetic default's
    are all the training size)."""
    from patchray.shards.images import median_size

    shards = open_shards(files)
    median = median_size(images)
    return {"files": len(files), "crops": shards.num_rows,
            "mean_jpeg_bytes": round(sum(map(len, images)) / max(len(images), 1)),
            "median_size": list(median) if median else None}


def start_bench(cfg, log=print) -> tuple[Path, list[str]]:
    """A benchmark's output folder (OUT/NAME, with its resolved config.yaml) and its Parquet files: ``cfg.data``,
    or the synthetic default's unlabeled crops, rendered once and cached."""
    from patchray import config as configlib
    from patchray.shards.reader import resolve_paths
    from patchray.train.runner import run_dir

    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    configlib.dump_yaml(cfg, out / "config.yaml")
    sources = cfg.data
    if not sources:  # imported here only: a benchmark given its shards never renders the synthetic default
        from patchray.shards.default_data import SyntheticDataConfig, ensure_synthetic

        sources = [os.path.join(ensure_synthetic(SyntheticDataConfig(), log, tag=cfg.name), "unlabeled")]
    return out, resolve_paths(sources)[0]


def machine() -> dict:
    """What the numbers were measured on."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpus"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info


def describe_machine(info: dict) -> str:
    gpu = f", {info['gpus']} x {info['gpu']}" if info.get("gpu") else ", no GPU"
    return f"{info['cores']} cores ({info['cpu']}){gpu}"


RESULT_JSON = "result.json"


def report_json(result: dict) -> None:
    """From a Ray Train worker: hand a JSON result to the driver. Ray Train (V2) keeps only what comes
    with a checkpoint, so the result travels as one."""
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, RESULT_JSON).write_text(json.dumps(result))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(folder))


def fit_json(trainer) -> dict:
    """Run a TorchTrainer whose workers end with ``report_json``; return that result."""
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"the benchmark's training run failed: {result.error}")
    with result.checkpoint.as_directory() as folder:
        return json.loads(Path(folder, RESULT_JSON).read_text())
