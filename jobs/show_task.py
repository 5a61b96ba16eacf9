"""The task sheet of a pretraining config: `python jobs/show_task.py [--config FILE] [--data GLOB ...] [key=value ...]`.

Draws, on a few crops of the data, the PatchTask grid, each cell's jitter range and the patches one training epoch
cuts (patchray.report.task_sheet), to OUT/NAME/task_sheet.png, and prints where. Takes the pretraining's config
(configs/pretrain.yaml, its key=value overrides and defaults) and data (default: the synthetic default dataset,
rendered once), so the sheet shows what `jobs/pretrain.py` with the same arguments would train on. Runs without
Ray: it reads the first crops of the first shards directly.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from patchray import config as configlib
from patchray.cli import OVERRIDES_HELP
from patchray.shards.reader import NoShardsError, open_shards
from patchray.shards.schema import ShardSchemaError
from patchray.train.config import PretrainConfig
from patchray.train.pretrain import read_validation_crops, resolve_data

SHEET_FILE = "task_sheet.png"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="show_task.py", description=f"Draw the PatchTask of a pretraining config on a "
                                f"few crops. {OVERRIDES_HELP}")
    p.add_argument("--config", help="pretraining YAML config file (e.g. configs/pretrain.yaml)")
    p.add_argument("--out", help="output root; the sheet goes to OUT/NAME/" + SHEET_FILE)
    p.add_argument("--name", help="run name (default: the config's, as the pretraining run it previews)")
    p.add_argument("--data", nargs="+", help="shard globs, folders or URIs (default: synthetic data)")
    p.add_argument("--crops", type=int, default=4, help="crops shown (default 4)")
    p.add_argument("--epoch", type=int, default=0, help="training epoch whose patches are shown, from 0 (default 0)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    flags = {key: getattr(args, key) for key in ("out", "name", "data") if getattr(args, key) is not None}
    try:
        cfg = configlib.load(PretrainConfig, args.config, args.overrides, flags=flags)
        if args.crops < 1:
            raise configlib.ConfigError(f"--crops must be >= 1, got {args.crops}")
        if args.epoch < 0:
            raise configlib.ConfigError(f"--epoch must be >= 0 (training epochs start at 0), got {args.epoch}")
        if "://" in cfg.out:
            raise configlib.ConfigError(f"out: {cfg.out!r} is a URI; the sheet is written to a local folder")
        from patchray.report.task_sheet import plot_task_sheet  # matplotlib loads only once the config is good

        # The pretraining's own readers (Ray-free): its data, or the synthetic default rendered once (progress to
        # stderr: stdout is the one line saying where the sheet is), and its first decodable crops.
        data = resolve_data(cfg, log=lambda line: print(line, file=sys.stderr))
        pixels, ids = read_validation_crops(open_shards(data), args.crops, cfg.task.crop_width,
                                            cfg.task.crop_height, cfg.input.crop_fit)
        folder = Path(cfg.out).expanduser().resolve() / cfg.name
        folder.mkdir(parents=True, exist_ok=True)
        sheet = plot_task_sheet(pixels, list(ids), cfg.task, cfg.seed, args.epoch, folder / SHEET_FILE)
    except (configlib.ConfigError, ShardSchemaError, NoShardsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[show_task] task sheet of {len(ids)} crop(s), epoch {args.epoch}: {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
