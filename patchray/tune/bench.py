"""Is ASHA + Optuna worth it? The same small space searched twice: the full grid (every point run out, FIFO)
and Optuna (TPE) with ASHA stopping weak fine-tuning early. Reported: the best validation objective each
found and the fine-tuning epochs each spent. Both searches share one pretraining cache, so each pretext
configuration is pretrained once and the comparison is of fine-tuning work alone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from patchray import config as configlib
from patchray.tune.tuner import TuneConfig, run_tune

GOAL_POINTS = 1.0       # ASHA's best within this many mA points of the grid's best...
GOAL_EPOCH_SHARE = 0.4  # ...spending at most this share of the grid's fine-tuning epochs


@dataclass
class TuneBenchConfig:
    name: str = "bench_tune"
    out: str = "runs"
    metric: str = "mA"
    seed: int = 0
    num_samples: int = 8            # ASHA + Optuna trials (the grid runs all of its points)
    grace_period: int = 1
    reduction_factor: int = 3
    max_concurrent_trials: int = 1
    space: dict[str, Any] = field(default_factory=lambda: {
        "pretrain": {"task.patch_size": {"choice": [24, 32]}, "task.grid": {"choice": ["2x4", "3x6"]}},
        "finetune": {"optim.lr": {"choice": [0.001, 0.002, 0.004]}},
    })
    pretrain: dict[str, Any] = field(default_factory=lambda: {"epochs": 2, "max_crops": 3000})
    finetune: dict[str, Any] = field(default_factory=lambda: {"epochs": 6, "labels": 250, "val_limit": 400})

    def tune_config(self, search: str) -> TuneConfig:
        from patchray.train.runner import run_dir

        common = {"out": str(run_dir(self)), "metric": self.metric, "seed": self.seed,
                  "time_budget_s": None, "max_concurrent_trials": self.max_concurrent_trials,
                  "space": self.space, "pretrain": self.pretrain, "finetune": self.finetune}
        if search == "grid":
            return configlib.build(TuneConfig, common | {"name": "grid", "search": "grid", "scheduler": "fifo"})
        return configlib.build(TuneConfig, common | {
            "name": "asha", "search": "optuna", "scheduler": "asha", "num_samples": self.num_samples,
            "grace_period": self.grace_period, "reduction_factor": self.reduction_factor})


def compare(grid: dict, asha: dict) -> dict:
    """The benchmark's verdict from two run_tune summaries."""
    metric = grid["metric"]
    unfinished = grid["status"].get("unfinished", 0) + asha["status"].get("unfinished", 0)
    best_grid = grid["best"][metric] if grid["best"] else None
    best_asha = asha["best"][metric] if asha["best"] else None
    gap = None if best_grid is None or best_asha is None else round(100 * (best_grid - best_asha), 2)
    share = asha["epochs_spent"] / grid["epochs_spent"] if grid["epochs_spent"] else None
    return {
        "metric": metric,
        "grid": {"trials": grid["trials"], "epochs": grid["epochs_spent"], "best": best_grid,
                 "best_params": grid["best"] and grid["best"]["params"], "wall_s": grid["wall_s"]},
        "asha_optuna": {"trials": asha["trials"], "epochs": asha["epochs_spent"], "best": best_asha,
                        "best_params": asha["best"] and asha["best"]["params"], "wall_s": asha["wall_s"],
                        "status": asha["status"]},
        "gap_points": gap, "epoch_share": None if share is None else round(share, 3),
        "goal": {"within_points": GOAL_POINTS, "max_epoch_share": GOAL_EPOCH_SHARE,
                 "met": not unfinished and gap is not None and share is not None and gap <= GOAL_POINTS
                 and share <= GOAL_EPOCH_SHARE},
        "unfinished_trials": unfinished,
    }


def markdown(result: dict) -> str:
    m = result["metric"]
    g, a = result["grid"], result["asha_optuna"]
    return "\n".join([
        f"| search | trials | fine-tuning epochs | best {m} | wall |",
        "|---|---|---|---|---|",
        f"| full grid, FIFO | {g['trials']} | {g['epochs']} | {100 * g['best']:.2f} | {g['wall_s'] / 60:.1f} min |",
        f"| Optuna TPE + ASHA | {a['trials']} | {a['epochs']} ({100 * result['epoch_share']:.0f}%) | "
        f"{100 * a['best']:.2f} ({-result['gap_points']:+.2f}) | {a['wall_s'] / 60:.1f} min |",
        "",
        f"Goal: within {GOAL_POINTS:g} point of the grid's best at no more than {GOAL_EPOCH_SHARE:.0%} of its "
        f"epochs: {'met' if result['goal']['met'] else 'not met'}."
        + (f" {result['unfinished_trials']} trial(s) unfinished: re-run to complete the benchmark."
           if result["unfinished_trials"] else ""),
    ]) + "\n"


def run_bench(cfg: TuneBenchConfig, log=print) -> dict:
    from patchray.report.plots import plot_tune_bench
    from patchray.train.runner import run_dir

    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    configlib.dump_yaml(cfg, out / "config.yaml")
    log("[bench_tune] 1/2: the full grid, every point fine-tuned to the end")
    grid = run_tune(cfg.tune_config("grid"), log)
    log("[bench_tune] 2/2: Optuna + ASHA on the same space (pretrainings come from the shared cache)")
    asha = run_tune(cfg.tune_config("asha"), log)
    result = compare(grid, asha)
    (out / "bench_tune.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "bench_tune.md").write_text(markdown(result))
    plot_tune_bench(result, out / "bench_tune.png")
    log(markdown(result))
    log(f"[bench_tune] outputs in {out}: bench_tune.json, bench_tune.md, bench_tune.png, grid/, asha/")
    return result
