"""Is TPE + ASHA worth it? A benchmark that can fail: record the whole grid once, replay the searches 100 times.

1. **Record.** Every configuration of a small space is fine-tuned to the end with ``seeds`` seeds (a grid
   search with the seed as one more dimension, FIFO: one pretraining per pretext configuration, from the shared
   cache). Each run's per-epoch validation curve goes to ``curves.jsonl``.
2. **Replay** (``patchray.tune.replay``, pure): grid, random + ASHA, TPE + ASHA and TPE alone, 100 times each
   over those curves at equal budgets (40% of the grid's epochs), each trial drawing one seed's curve: the noise
   a real search meets. Reported: the regret (true best minus the true value of what was chosen, in points) and
   the epochs spent; the goal is TPE + ASHA's median regret at most 1 point at no more than 40% of the grid's
   epochs, and below random + ASHA's.

The seed noise of a configuration (std over seeds of its final value) and the spread of the true values are
reported beside it: a space whose configurations differ by less than the noise has nothing to find.
``curves=<curves.jsonl>`` replays an earlier recording without training anything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchray import config as configlib
from patchray.tune import replay
from patchray.tune.tuner import TRIAL_FINETUNE, TRIAL_PRETRAIN, TuneConfig, run_tune

SEED_KEY = "finetune.seed"
CURVES = "curves.jsonl"


@dataclass
class TuneBenchConfig:
    name: str = "bench_tune"
    out: str = "runs"
    metric: str = "mA"
    seed: int = 0                   # of the replays
    seeds: int = 3                  # fine-tuning seeds recorded per configuration
    repeats: int = 100              # replays of each strategy
    budget_share: float = replay.GOAL_EPOCH_SHARE  # every strategy but the grid gets this share of its epochs
    grace_period: int = 1
    reduction_factor: int = 2
    max_concurrent_trials: int = 1
    curves: str | None = None       # an earlier recording (curves.jsonl) to replay instead of recording
    # objective probe against fine-tuning: probe each recorded pretraining (probe_train_crops + probe_val_crops
    # labeled crops of the fine-tuning data) and compare its ranking of the pretext configurations with the
    # recorded fine-tuning's (patchray.tune.probe_agreement). Needs the recording's trial folders (grid/trials).
    probe: bool = True
    probe_train_crops: int = 200
    probe_val_crops: int = 200
    # A discretisation of the default search's space (lr loguniform 0.001..0.01): 12 configurations.
    space: dict[str, Any] = field(default_factory=lambda: {
        "pretrain": {"task.patch_size": {"choice": [24, 32]}, "task.grid": {"choice": ["2x4", "3x6"]}},
        "finetune": {"optim.lr": {"choice": [0.001, 0.0025, 0.006]}},
    })
    pretrain: dict[str, Any] = field(default_factory=lambda: dict(TRIAL_PRETRAIN))   # the default search's
    finetune: dict[str, Any] = field(default_factory=lambda: dict(TRIAL_FINETUNE))

    def __post_init__(self):
        if self.seeds < 1 or self.repeats < 1:
            raise ValueError("seeds and repeats must be >= 1")
        if not 0 < self.budget_share <= 1:
            raise ValueError(f"budget_share must be in (0, 1], got {self.budget_share}")
        if "seed" in self.space.get("finetune", {}):
            raise ValueError(f"space: {SEED_KEY} is the benchmark's own dimension (set `seeds`)")

    def grid_config(self) -> TuneConfig:
        from patchray.train.runner import run_dir

        space = {section: dict(entries) for section, entries in self.space.items()}
        space.setdefault("finetune", {})["seed"] = {"choice": list(range(self.seeds))}
        return configlib.build(TuneConfig, {
            "name": "grid", "out": str(run_dir(self)), "metric": self.metric, "search": "grid", "scheduler": "fifo",
            "time_budget_s": None, "max_concurrent_trials": self.max_concurrent_trials, "confirm_top_k": 0,
            "space": space, "pretrain": self.pretrain, "finetune": self.finetune})


def curve_of(folder: Path, metric: str) -> list[float]:
    """The validation objective after each epoch of a fine-tuning run, from its metrics.jsonl."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [float(r[f"val_{metric}"]) for r in sorted(rows, key=lambda r: r["epoch"]) if f"val_{metric}" in r]


def record(cfg: TuneBenchConfig, out: Path, log=print) -> Path:
    """Fine-tune every configuration with every seed to the end; their curves to ``out/curves.jsonl``."""
    import csv

    from patchray.tune.results import COMPLETED

    summary = run_tune(cfg.grid_config(), log)
    lines = []
    for row in csv.DictReader(open(Path(summary["folder"]) / "trials.csv")):
        if row["status"] != COMPLETED:
            raise RuntimeError(f"trial {row['trial']} of the recording is {row['status']}: re-run the same command "
                               "to finish the recording (finished trials are kept)")
        params = {k: v for k, v in row.items() if k.startswith(("pretrain.", "finetune.")) and k != SEED_KEY}
        lines.append({"params": _typed(params, cfg), "seed": int(row[SEED_KEY]),
                      "curve": curve_of(Path(row["folder"]), cfg.metric)})
    path = out / CURVES
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _typed(params: dict[str, str], cfg: TuneBenchConfig) -> dict:
    """The CSV's strings back as the space's own values (24, not "24")."""
    choices = {f"{section}.{key}": spec["choice"] for section, entries in cfg.space.items()
               for key, spec in entries.items() if "choice" in spec}
    return {k: next((c for c in choices.get(k, []) if str(c) == v), v) for k, v in params.items()}


def recorded_runs(trials: Path, metric: str) -> tuple[list[dict], dict[tuple, str], float]:
    """The recording's fine-tuning runs read from their folders: (``probe_agreement`` runs, pretext key ->
    pretraining folder, seconds the fine-tuning took in all). A run is keyed by its pretraining's patch size and
    grid and its learning rate: the benchmark's space."""
    from patchray.train.config import FinetuneConfig, PretrainConfig

    runs, pretrainings, seconds = [], {}, 0.0
    for folder in sorted(p for p in trials.iterdir() if (p / "summary.json").exists()):
        fine = configlib.load(FinetuneConfig, folder / "config.yaml")
        pretrained = fine.init.split(":", 1)[1]
        task = configlib.load(PretrainConfig, Path(pretrained) / "config.yaml").task
        key = (("pretrain.task.grid", f"{task.cols}x{task.rows}"), ("pretrain.task.patch_size", task.patch_size))
        pretrainings[key] = pretrained
        runs.append({"pretext": key, "setting": (("finetune.optim.lr", fine.optim.lr),),
                     "value": curve_of(folder, metric)[-1]})
        seconds += json.loads((folder / "summary.json").read_text())["wall_s"]
    return runs, pretrainings, seconds


def measure_probe_agreement(cfg: TuneBenchConfig, out: Path, log=print) -> dict | None:
    """``objective: probe`` against the recorded fine-tuning, on the recording's own pretrainings."""
    from patchray.probe import ProbeConfig
    from patchray.train.finetune import labeled_folders
    from patchray.train.probe_set import probe_pretraining
    from patchray.tune import probe_agreement
    from patchray.tune.space import build_section

    trials = out / "grid" / "trials"
    if not trials.is_dir():
        log(f"[bench_tune] probe agreement: no recorded trial folders in {trials}; skipped")
        return None
    runs, pretrainings, finetune_s = recorded_runs(trials, cfg.metric)
    finetune = build_section("finetune", cfg.finetune, {})
    folders = labeled_folders(finetune, log)
    probe_cfg = ProbeConfig(train_crops=cfg.probe_train_crops, val_crops=cfg.probe_val_crops)
    scores, probe_s = {}, 0.0
    for key, folder in sorted(pretrainings.items()):
        found = probe_pretraining(folder, probe_cfg, folders, finetune.val_seed)
        scores[key] = found[f"probe_{cfg.metric}"]
        probe_s += found["probe_s"]
        log(f"[bench_tune] probe of {dict(key)}: {found[f'probe_{cfg.metric}']:.4f} ({found['probe_s']:.0f} s)")
    result = probe_agreement.agreement(probe_agreement.finetune_objective(runs), scores)
    return result | {"probe_s": probe_s, "finetune_s": finetune_s, "finetune_runs": len(runs),
                     "probe_crops": [cfg.probe_train_crops, cfg.probe_val_crops]}


def load_curves(path: str | Path) -> replay.Curves:
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return replay.Curves.from_records(lines)


def run_bench(cfg: TuneBenchConfig, log=print) -> dict:
    from patchray.report.plots import plot_replay
    from patchray.train.runner import run_dir

    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    configlib.dump_yaml(cfg, out / "config.yaml")
    if cfg.curves:
        path = Path(cfg.curves)
        log(f"[bench_tune] replaying the recorded curves of {path}")
    else:
        log(f"[bench_tune] 1/2: recording the grid, every configuration fine-tuned to the end with {cfg.seeds} "
            "seed(s)")
        path = record(cfg, out, log)
    curves = load_curves(path)
    log(f"[bench_tune] 2/2: replaying grid, random+ASHA (with and without repeats), TPE+ASHA and TPE "
        f"{cfg.repeats} times each over {curves.n_configs} configurations x {curves.epochs} epochs")
    result = replay.compare(curves, budget_share=cfg.budget_share, repeats=cfg.repeats, seed=cfg.seed,
                            grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor)
    result["curves"] = str(path)
    (out / "bench_tune.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = replay.markdown(result) + "\n\n" + (
        f"Seed noise (std over seeds of a configuration's final value, mean over configurations): "
        f"{result['seed_noise_points']:.2f} points; spread of the configurations' true values: "
        f"{result['spread_points']:.2f} points.\n")
    if cfg.probe:
        agreement = measure_probe_agreement(cfg, out, log)
        if agreement is not None:
            from patchray.report.plots import plot_probe_agreement
            from patchray.tune import probe_agreement

            result["probe_agreement"] = agreement
            (out / "bench_tune.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
            text += "\n## objective: probe against fine-tuning\n\n" + probe_agreement.markdown(agreement)
            plot_probe_agreement(agreement, cfg.metric, out / "probe_agreement.png")
    (out / "bench_tune.md").write_text(text)
    plot_replay(result, out / "bench_tune.png")
    log(text)
    recorded = "" if cfg.curves else f", {CURVES}, grid/"
    probed = ", probe_agreement.png" if "probe_agreement" in result else ""
    log(f"[bench_tune] outputs in {out}: bench_tune.json, bench_tune.md, bench_tune.png{probed}{recorded}")
    return result
