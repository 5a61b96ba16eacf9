"""Every job's command line, from one table.

A job is one entry of ``JOBS``: its config class, its run function and the flags it adds to the common ones.
``jobs/<name>.py`` calls :func:`main` with the job's name. The config is resolved in one order for every job:
the config class's defaults, then ``--config FILE``, then the flags, then ``key=value`` overrides: the last
one wins, so ``--name a name=b`` runs ``b``.

Config classes and run functions are named by import path and imported only when their job runs: this
module sits above every layer (train, tune, bench, experiments) without importing any of them, and
``jobs/bench_gpu.py`` runs where Ray is not installed.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field

from patchray import config as configlib

OVERRIDES_HELP = ("Extra arguments are key=value overrides of the config (dotted keys for sections); "
                  "they win over flags.")


@dataclass(frozen=True)
class Flag:
    """A flag that sets one config key: ``--data x`` is ``data=x`` given before the overrides."""
    name: str
    key: str
    help: str
    nargs: str | None = None
    type: type = str


@dataclass(frozen=True)
class Job:
    prog: str
    description: str
    config: str  # "module:Class"
    run: str     # "module:function", called with the resolved config
    flags: tuple[Flag, ...] = field(default=())

    def config_class(self) -> type:
        return _resolve(self.config)


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# Every job has these: where it writes, under which name, and Ray Train's storage.
COMMON_FLAGS = (
    Flag("--out", "out", "output root; the run goes to OUT/NAME"),
    Flag("--name", "name", "run name; re-running with the same name resumes"),
    Flag("--storage", "storage", "Ray Train storage (a shared URI on multi-node clusters)"),
)
SHARD_DATA = Flag("--data", "data", "shard globs, folders or URIs (default: synthetic data)", nargs="+")

JOBS: dict[str, Job] = {
    "pretrain": Job(
        "pretrain.py", "PatchTask pretraining on Ray.",
        "patchray.train.config:PretrainConfig", "patchray.train.pretrain:run_pretrain", (SHARD_DATA,)),
    "finetune": Job(
        "finetune.py", "Attribute fine-tuning on Ray.",
        "patchray.train.config:FinetuneConfig", "patchray.train.finetune:run_finetune",
        (Flag("--data", "data", "folder of labeled shards (*-train-*, *-val-*, *-test-*); "
                                "default: the synthetic data's labeled part"),
         Flag("--init", "init", "random | patchtask:<checkpoint or pretraining run folder> | imagenet"))),
    "evaluate": Job(
        "evaluate.py", "Linear probe of frozen trunks (random, PatchTask checkpoints, ImageNet) over label budgets "
                       "and seeds, without Ray.",
        "patchray.experiments.linear_eval:LinearEvalConfig", "patchray.experiments.linear_eval:run_linear_eval",
        (Flag("--inits", "inits", "random | patchtask:<checkpoint or pretraining run folder> | imagenet, one or more",
              nargs="+"),
         Flag("--data", "data", "folders of labeled shards (*-train-*, *-val-*, *-test-*); default: the synthetic "
                                "data's labeled part", nargs="+"))),
    "compare_inits": Job(
        "compare_inits.py", "Fine-tune from random vs PatchTask inits over seeds and label budgets.",
        "patchray.experiments.compare_inits:CompareConfig", "patchray.experiments.compare_inits:run_compare"),
    "tune_finetune": Job(
        "tune_finetune.py", "Search pretext and fine-tuning settings with Optuna + ASHA, scored by fine-tuned "
                            "validation mA.",
        "patchray.tune.tuner:TuneConfig", "patchray.tune.tuner:run_tune",
        (Flag("--samples", "num_samples", "number of trials (num_samples)", type=int),
         Flag("--time-budget", "time_budget_s", "stop after this many seconds (time_budget_s)", type=float))),
    "bench_tune": Job(
        "bench_tune.py", "Grid vs random + ASHA vs TPE + ASHA vs TPE, replayed over a recorded grid.",
        "patchray.tune.bench:TuneBenchConfig", "patchray.tune.bench:run_bench"),
    "bench_ingest": Job(
        "bench_ingest.py", "Patches/s: decode limit vs a torch DataLoader vs patchray's Ray Data pipeline.",
        "patchray.bench.ingest:IngestBenchConfig", "patchray.bench.ingest:run_ingest_bench", (SHARD_DATA,)),
    "bench_memory": Job(
        "bench_memory.py", "Peak memory streaming N vs 10N shard copies through the pretraining ingest.",
        "patchray.bench.memory:MemoryBenchConfig", "patchray.bench.memory:run_memory_bench", (SHARD_DATA,)),
    "bench_train": Job(
        "bench_train.py", "The same training through a plain PyTorch loop and through Ray Train.",
        "patchray.bench.train:TrainBenchConfig", "patchray.bench.train:run_train_bench", (SHARD_DATA,)),
    "bench_gpu": Job(
        "bench_gpu.py", "One GPU: nvJPEG decode and patch cutting vs a CPU core, training-step settings, "
                        "end to end.",
        "patchray.bench.gpu:GpuBenchConfig", "patchray.bench.gpu:run_gpu_bench", (SHARD_DATA,)),
}


def parser_for(job: Job) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=job.prog, description=f"{job.description} {OVERRIDES_HELP}")
    parser.add_argument("--config", help="YAML config file")
    for flag in COMMON_FLAGS + job.flags:
        parser.add_argument(flag.name, dest=flag.key, help=flag.help, nargs=flag.nargs, type=flag.type)
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own logs and progress too (also: PATCHRAY_VERBOSE=1)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def parse(name: str, argv: list[str] | None = None):
    """The resolved config of job ``name`` for command line ``argv`` (default: ``sys.argv[1:]``)."""
    return _parse(JOBS[name], argv)[0]


def overrides_first(job: Job, argv: list[str]) -> list[str]:
    """The ``key=value`` words whose key (before its first dot) is one of the job's config keys, moved in front
    of everything else, their order kept (the last still wins): a flag with several values (``--data a b``)
    would otherwise take every word up to the next flag, ``--data a b epochs=3`` reading ``epochs=3`` as a
    folder. A path that merely contains ``=`` stays where it is."""
    import dataclasses

    keys = {f.name for f in dataclasses.fields(job.config_class())}

    def is_override(word: str) -> bool:
        return "=" in word and not word.startswith("-") and word.split("=", 1)[0].split(".", 1)[0] in keys

    return [w for w in argv if is_override(w)] + [w for w in argv if not is_override(w)]


def _parse(job: Job, argv: list[str] | None):
    argv = overrides_first(job, list(sys.argv[1:] if argv is None else argv))
    args = parser_for(job).parse_intermixed_args(argv)  # key=value may stand before, between or after flags
    flags = {flag.key: getattr(args, flag.key) for flag in COMMON_FLAGS + job.flags
             if getattr(args, flag.key) is not None}
    return configlib.load(job.config_class(), args.config, args.overrides, flags=flags), args


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors a user fixes by changing the command line, config or data: said in one line, exit 2."""
    from patchray.models.init import InitError
    from patchray.shards.reader import NoShardsError
    from patchray.shards.schema import ShardSchemaError

    errors = [configlib.ConfigError, ShardSchemaError, NoShardsError, InitError]
    try:  # the training layer needs Ray; the GPU benchmark runs without it and raises none of these
        from patchray.train.identity import RunMismatchError
        from patchray.train.pretrain import DatasetTooSmallError
        from patchray.train.resources import ResourceError
    except ImportError:
        return tuple(errors)
    return tuple(errors + [RunMismatchError, DatasetTooSmallError, ResourceError])


def main(name: str, argv: list[str] | None = None) -> int:
    """Run job ``name``; errors a user can fix become one clear line and exit code 2, a training failure
    (after Ray Train's retries) one line and exit code 1, rather than a driver traceback."""
    from patchray import console

    job = JOBS[name]
    try:
        cfg, args = _parse(job, argv)
    except configlib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    console.configure_output(args.verbose or console.verbose_from_env())
    user_errors = _user_errors()
    try:
        from patchray.train.runner import TrainingError
    except ImportError:
        TrainingError = ()  # no Ray, no trainer to fail
    try:
        _resolve(job.run)(cfg)
    except user_errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
