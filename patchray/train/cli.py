"""Command lines of the training jobs: config file, then flags, then ``key=value`` overrides."""
from __future__ import annotations

import argparse
import sys

from patchray import config as configlib
from patchray.train.config import FinetuneConfig, PretrainConfig

_OVERRIDES_HELP = "Extra arguments are key=value overrides of the config (dotted keys for sections)."


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=f"{description} {_OVERRIDES_HELP}")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--out", help="output root; the run goes to OUT/NAME")
    parser.add_argument("--name", help="run name; re-running with the same name resumes")
    parser.add_argument("--storage", help="Ray Train storage (a shared URI on multi-node clusters)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def _load(cls, args, extra: dict) -> object:
    overrides = list(args.overrides)
    for flag in ("out", "name", "storage"):
        if getattr(args, flag) is not None:
            overrides.append(f"{flag}={getattr(args, flag)}")
    cfg = configlib.load(cls, args.config, overrides)
    extra = {k: v for k, v in extra.items() if v is not None}
    return configlib.build(cls, configlib.to_dict(cfg) | extra) if extra else cfg


def parse_pretrain(argv: list[str] | None = None) -> PretrainConfig:
    parser = _parser("pretrain.py", "PatchTask pretraining on Ray.")
    parser.add_argument("--data", nargs="+", help="shard globs, folders or URIs (default: synthetic data)")
    args = parser.parse_args(argv)
    return _load(PretrainConfig, args, {"data": args.data})


def parse_finetune(argv: list[str] | None = None) -> FinetuneConfig:
    parser = _parser("finetune.py", "Attribute fine-tuning on Ray.")
    parser.add_argument("--data", help="folder of labeled shards (*-train-*, *-val-*, *-test-*); "
                                       "default: the synthetic data's labeled part")
    parser.add_argument("--init", help="random | patchtask:<checkpoint or pretraining run folder> | imagenet")
    args = parser.parse_args(argv)
    return _load(FinetuneConfig, args, {"data": args.data, "init": args.init})


def run_job(parse, run, argv=None) -> int:
    """Parse, run, and turn the errors a user can fix into one clear line and exit code 2."""
    from patchray.models.init import InitError
    from patchray.shards.reader import NoShardsError
    from patchray.shards.schema import ShardSchemaError
    from patchray.train.identity import RunMismatchError
    from patchray.train.pretrain import DatasetTooSmallError
    from patchray.train.resources import ResourceError
    from patchray.train.runner import TrainingError

    try:
        run(parse(argv))
    except (configlib.ConfigError, ShardSchemaError, NoShardsError, ResourceError, InitError, RunMismatchError,
            DatasetTooSmallError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:  # the workers failed (after Ray Train's retries): say why, not a driver traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def pretrain_main(argv: list[str] | None = None) -> int:
    from patchray.train.pretrain import run_pretrain

    return run_job(parse_pretrain, run_pretrain, argv)


def finetune_main(argv: list[str] | None = None) -> int:
    from patchray.train.finetune import run_finetune

    return run_job(parse_finetune, run_finetune, argv)


def parse_compare(argv: list[str] | None = None):
    from patchray.experiments.compare_inits import CompareConfig

    args = _parser("compare_inits.py", "Fine-tune from random vs PatchTask inits over seeds and label budgets.")
    args = args.parse_args(argv)
    return _load(CompareConfig, args, {})


def compare_main(argv: list[str] | None = None) -> int:
    from patchray.experiments.compare_inits import run_compare

    return run_job(parse_compare, run_compare, argv)


def parse_tune(argv: list[str] | None = None):
    from patchray.tune.tuner import TuneConfig

    parser = _parser("tune_finetune.py", "Search pretext and fine-tuning settings with Optuna + ASHA, "
                                         "scored by fine-tuned validation mA.")
    parser.add_argument("--samples", type=int, help="number of trials (num_samples)")
    parser.add_argument("--time-budget", type=float, help="stop after this many seconds (time_budget_s)")
    args = parser.parse_args(argv)
    return _load(TuneConfig, args, {"num_samples": args.samples, "time_budget_s": args.time_budget})


def tune_main(argv: list[str] | None = None) -> int:
    from patchray.tune.tuner import run_tune

    return run_job(parse_tune, run_tune, argv)


def parse_bench_tune(argv: list[str] | None = None):
    from patchray.tune.bench import TuneBenchConfig

    args = _parser("bench_tune.py", "Full grid vs Optuna + ASHA on one small space.").parse_args(argv)
    return _load(TuneBenchConfig, args, {})


def bench_tune_main(argv: list[str] | None = None) -> int:
    from patchray.tune.bench import run_bench

    return run_job(parse_bench_tune, run_bench, argv)


def _parse_bench(cls, prog: str, description: str, argv: list[str] | None):
    parser = _parser(prog, description)
    parser.add_argument("--data", nargs="+", help="shard globs or folders (default: synthetic data)")
    args = parser.parse_args(argv)
    return _load(cls, args, {"data": args.data})


def parse_bench_ingest(argv: list[str] | None = None):
    from patchray.bench.ingest import IngestBenchConfig

    return _parse_bench(IngestBenchConfig, "bench_ingest.py",
                        "Patches/s: decode limit vs a torch DataLoader vs patchray's Ray Data pipeline.", argv)


def bench_ingest_main(argv: list[str] | None = None) -> int:
    from patchray.bench.ingest import run_ingest_bench

    return run_job(parse_bench_ingest, run_ingest_bench, argv)


def parse_bench_memory(argv: list[str] | None = None):
    from patchray.bench.memory import MemoryBenchConfig

    return _parse_bench(MemoryBenchConfig, "bench_memory.py",
                        "Peak memory streaming N vs 10N shard copies through the pretraining ingest.", argv)


def bench_memory_main(argv: list[str] | None = None) -> int:
    from patchray.bench.memory import run_memory_bench

    return run_job(parse_bench_memory, run_memory_bench, argv)


def parse_bench_train(argv: list[str] | None = None):
    from patchray.bench.train import TrainBenchConfig

    return _parse_bench(TrainBenchConfig, "bench_train.py",
                        "The same training through a plain PyTorch loop and through Ray Train.", argv)


def bench_train_main(argv: list[str] | None = None) -> int:
    from patchray.bench.train import run_train_bench

    return run_job(parse_bench_train, run_train_bench, argv)


def parse_bench_gpu(argv: list[str] | None = None):
    from patchray.bench.gpu import GpuBenchConfig

    return _parse_bench(GpuBenchConfig, "bench_gpu.py",
                        "One GPU: nvJPEG decode and patch cutting vs a CPU core, training-step settings, end to end.",
                        argv)


def bench_gpu_main(argv: list[str] | None = None) -> int:
    from patchray.bench.gpu import run_gpu_bench

    return run_job(parse_bench_gpu, run_gpu_bench, argv)
