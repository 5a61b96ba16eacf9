"""Command line of ``jobs/pretrain.py``: config file, then flags, then ``key=value`` overrides."""
from __future__ import annotations

import argparse
import sys

from patchray import config as configlib
from patchray.train.config import PretrainConfig


def parse(argv: list[str] | None = None) -> PretrainConfig:
    parser = argparse.ArgumentParser(
        prog="pretrain.py", description="PatchTask pretraining on Ray. Extra arguments are key=value overrides "
                                        "of the config (e.g. epochs=5 task.preset=pt8 optim.lr=0.02).")
    parser.add_argument("--config", help="YAML config file (see configs/pretrain.yaml)")
    parser.add_argument("--data", nargs="+", help="shard globs, folders or URIs (default: synthetic data)")
    parser.add_argument("--out", help="output root; the run goes to OUT/NAME")
    parser.add_argument("--name", help="run name; re-running with the same name resumes")
    parser.add_argument("--storage", help="Ray Train storage (shared URI on multi-node clusters)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    for flag in ("out", "name", "storage"):
        if getattr(args, flag) is not None:
            overrides.append(f"{flag}={getattr(args, flag)}")
    cfg = configlib.load(PretrainConfig, args.config, overrides)
    if args.data:
        cfg = configlib.build(PretrainConfig, configlib.to_dict(cfg) | {"data": args.data})
    return cfg


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse(argv)
    except configlib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from patchray.shards.reader import NoShardsError
    from patchray.shards.schema import ShardSchemaError
    from patchray.train.pretrain import run_pretrain
    from patchray.train.resources import ResourceError

    try:
        run_pretrain(cfg)
    except (ShardSchemaError, NoShardsError, ResourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
