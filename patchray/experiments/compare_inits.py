"""The paper's comparison on our data: fine-tune from random, PatchTask (and ImageNet where cached) inits
under equal budgets, over seeds and label budgets; write a table and plots.

Every fine-tuning run is an ordinary ``run_finetune`` in its own folder, so a
comparison that is stopped and started again skips the runs that finished.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patchray import config as configlib
from patchray.models.init import InitError, imagenet_cache_path
from patchray.train.config import FinetuneConfig, PretrainConfig
from patchray.train.identity import differences

# Test scores per run (keys of the fine-tuning summary's "test"): protocol balanced (patchray's), then protocol
# parse27k (the authors' evaluation, comparable with the paper's tables). A column no run defines (mAP without a
# binary attribute, orientation without Orientation, parse27k in runs finished before it existed) is left out.
METRICS = (("mA", "mA"), ("mAP", "mAP"), ("mBER", "mBER"), ("orientation_accuracy", "Orientation acc."),
           ("parse27k_mAP", "mAP (parse27k)"), ("parse27k_mBER", "mBER (parse27k)"))
PROTOCOL_NOTE = ("mA, mAP, mBER, Orientation acc.: protocol balanced (N/A excluded, non-interpolated AP). "
                 "(parse27k) columns: the authors' protocol (11-point AP of yes / male / standing; BER with N/A "
                 "as a class), the one comparable with the paper's tables.")


@dataclass
class CompareConfig:
    name: str = "compare_inits"
    out: str = "runs"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budgets: list[int] = field(default_factory=lambda: [250, 1000])
    # random and patchtask always; imagenet joins when its weights are in the local torch cache
    imagenet: bool = True
    # A finished pretraining run (folder or pretext.pt) to reuse; None: pretrain here first.
    pretrained: str | None = None
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(name="pretrain"))
    # Validation every 5 epochs on 600 crops keeps 12 fine-tuning runs affordable on 2 CPU cores;
    # the test split is scored whole.
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(eval_every=5, val_limit=600))

    def __post_init__(self):
        if not self.seeds or not self.budgets:
            raise ValueError("need at least one seed and one budget")
        if any(b < 1 for b in self.budgets):
            raise ValueError(f"budgets must be >= 1, got {self.budgets}")
        if not self.finetune.evaluate_test:
            raise ValueError("finetune.evaluate_test: false leaves the comparison without its numbers: the inits "
                             "are compared on the test split")
        if self.pretrained is None and self.pretrain.model != self.finetune.model:
            # Transfer copies the trunk it pretrained; a comparison across two trunks compares nothing.
            raise ValueError(f"pretrain.model {self.pretrain.model!r} and finetune.model {self.finetune.model!r} "
                             "differ: PatchTask init transfers the pretrained trunk, so both must name one trunk")


def available_inits(cfg: CompareConfig, pretext: str) -> list[str]:
    inits = ["random", f"patchtask:{pretext}"]
    if cfg.imagenet:
        try:
            if imagenet_cache_path(cfg.finetune.model).is_file():
                inits.append("imagenet")
        except InitError:
            pass  # no ImageNet weights exist for this trunk
    return inits


def init_label(init: str) -> str:
    return init.split(":", 1)[0]


def reusable(folder: Path, identity: dict, what: str, log) -> dict | None:
    """The summary of a finished run in ``folder`` if it is the run asked for now (same identity: resolved
    config, data, init weights, workers), else None; a finished run with other settings is moved aside (kept,
    never deleted) so that the new run starts clean."""
    path = folder / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    changed = differences(summary.get("identity"), identity)
    if not changed:
        return summary
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = folder.with_name(f"{folder.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{folder.name}.replaced-{stamp}-{n}")
    folder.rename(aside)
    log(f"[compare] {what}: the finished run has other settings ({'; '.join(changed[:3])}"
        + (f"; {len(changed) - 3} more" if len(changed) > 3 else "") + f"); kept as {aside.name}, running again")
    return None


def run_compare(cfg: CompareConfig, log=print) -> dict:
    from patchray.train.finetune import prepare_finetune, run_finetune
    from patchray.train.pretrain import prepare_pretrain, run_pretrain
    from patchray.train.runner import run_dir

    t0 = time.time()
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    configlib.dump_yaml(cfg, out / "config.yaml")
    if cfg.pretrained:
        pretext = str(Path(cfg.pretrained).expanduser().resolve())
    else:
        pretrain = dataclasses.replace(cfg.pretrain, out=str(out))
        prepared = prepare_pretrain(pretrain, log)
        if reusable(prepared.out, prepared.identity, "pretraining", log) is None:
            log(f"[compare] pretraining once: {prepared.out}")
            run_pretrain(pretrain, log, prepared=prepared)
        pretext = str(prepared.out)
    inits = available_inits(cfg, pretext)
    runs = []
    total = len(cfg.budgets) * len(cfg.seeds) * len(inits)
    for budget in cfg.budgets:
        for seed in cfg.seeds:
            for init in inits:
                name = f"labels{budget}-seed{seed}-{init_label(init)}"
                ft = dataclasses.replace(cfg.finetune, name=name, out=str(out / "runs"), init=init, seed=seed,
                                         labels=budget)
                prepared = prepare_finetune(ft, log)
                folder = prepared.out
                summary = reusable(folder, prepared.identity, name, log)
                if summary is not None:
                    log(f"[compare] {len(runs) + 1}/{total} {name}: done earlier with these settings, reused")
                else:
                    log(f"[compare] {len(runs) + 1}/{total} {name}")
                    summary = run_finetune(ft, log, prepared=prepared)
                history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
                runs.append({"budget": budget, "seed": seed, "init": init_label(init), "test": summary["test"],
                             "curve": [(h["epoch"] + 1, h.get("val_mA")) for h in history
                                       if h.get("val_mA") is not None],
                             "wall_s": summary["wall_s"]})
    result = aggregate(runs, [init_label(i) for i in inits], cfg.budgets)
    result["wall_s"] = round(time.time() - t0, 1)
    result["pretrained"] = pretext
    write_outputs(out, result, runs)
    log(format_result(result, out))
    return result


def aggregate(runs: list[dict], inits: list[str], budgets: list[int]) -> dict:
    table = []
    for budget in budgets:
        for init in inits:
            chosen = [r for r in runs if r["budget"] == budget and r["init"] == init]
            row = {"budget": budget, "init": init, "seeds": len(chosen)}
            for key, _ in METRICS:
                values = np.array([r["test"][key] for r in chosen if r["test"].get(key) is not None], dtype=float)
                row[key] = {"mean": float(values.mean()) if len(values) else None,
                            "std": float(values.std()) if len(values) else None}
            table.append(row)
    smallest = min(budgets)
    gain = None
    by_seed = {}
    for r in runs:
        if r["budget"] == smallest and r["test"].get("mA") is not None:
            by_seed.setdefault(r["seed"], {})[r["init"]] = r["test"]["mA"]
    diffs = [v["patchtask"] - v["random"] for v in by_seed.values() if "patchtask" in v and "random" in v]
    if diffs:
        gain = float(np.mean(diffs))
    return {"table": table, "smallest_budget": smallest, "patchtask_minus_random_mA": gain,
            "patchtask_minus_random_mA_per_seed": diffs}


def shown_metrics(table: list[dict]) -> list[tuple[str, str]]:
    """The METRICS some row of the table defines (mA always)."""
    return [(key, label) for key, label in METRICS
            if key == "mA" or any((row.get(key) or {}).get("mean") is not None for row in table)]


def table_markdown(result: dict) -> str:
    metrics = shown_metrics(result["table"])
    header = "| labels | init | " + " | ".join(label for _, label in metrics) + " | seeds |"
    lines = [header, "|" + " --- |" * (len(metrics) + 3)]
    for row in result["table"]:
        cells = []
        for key, _ in metrics:
            m = row.get(key) or {"mean": None}
            cells.append("–" if m["mean"] is None else f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}")
        lines.append(f"| {row['budget']} | {row['init']} | " + " | ".join(cells) + f" | {row['seeds']} |")
    return "\n".join(lines)


def write_outputs(out: Path, result: dict, runs: list[dict]) -> None:
    from patchray.report.plots import plot_init_bars, plot_init_curves

    (out / "comparison.json").write_text(json.dumps({"result": result, "runs": runs}, indent=2) + "\n")
    gain = result["patchtask_minus_random_mA"]
    text = (f"# Fine-tuning from different inits (test split, mean ± std over seeds)\n\n{table_markdown(result)}\n\n"
            f"{PROTOCOL_NOTE}\n\n"
            f"PatchTask minus random, mA at {result['smallest_budget']} labels, mean over seeds: "
            + ("n/a" if gain is None else f"{100 * gain:+.1f} points") + "\n")
    (out / "comparison.md").write_text(text)
    plot_init_bars(result["table"], out / "comparison.png")
    plot_init_curves(runs, out / "learning_curves.png")


def format_result(result: dict, out: Path) -> str:
    gain = result["patchtask_minus_random_mA"]
    return "\n".join([
        f"[compare] done in {result['wall_s'] / 60:.1f} min",
        table_markdown(result),
        f"  PatchTask - random at {result['smallest_budget']} labels: "
        + ("n/a" if gain is None else f"{100 * gain:+.1f} mA points (per seed: "
           + ", ".join(f"{100 * d:+.1f}" for d in result["patchtask_minus_random_mA_per_seed"]) + ")"),
        f"  outputs in {out}: comparison.md, comparison.json, comparison.png, learning_curves.png, runs/",
    ])
