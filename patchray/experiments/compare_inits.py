"""The paper's comparison on our data: fine-tune from random, PatchTask (and ImageNet where cached) inits
under equal budgets, over seeds and label budgets; write a table and plots, the low-shot curve (test mA by label
budget) among them.

Layer-wise transfer (``layers``): PatchTask runs that copy only the trunk's first k blocks and re-initialise the
rest (``FinetuneConfig.transfer_blocks``), fine-tuned or with those blocks frozen: how far up the trunk the
pretrained features help.

Every fine-tuning run is an ordinary ``run_finetune`` in its own folder, so a
comparison that is stopped and started again skips the runs that finished.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from patchray import config as configlib
from patchray.models.init import InitError, check_transfer_blocks, imagenet_cache_path, trunk_block_count
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
# Layer-wise transfer: "finetune" trains every block of the partly copied trunk as the comparison's other runs
# do, "frozen" keeps the k copied blocks fixed (freeze_blocks=k).
LayerMode = Literal["finetune", "frozen"]


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
    # Layer-wise transfer: for each k, one patchtask run per budget and seed that copies the trunk's first k blocks
    # (Trunk.blocks; tiny has 4) and re-initialises the rest (finetune.transfer_blocks=k), in each of layer_modes.
    # Empty: none.
    layers: list[int] = field(default_factory=list)
    layer_modes: list[LayerMode] = field(default_factory=lambda: ["finetune", "frozen"])

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
        if self.finetune.transfer_blocks is not None:
            raise ValueError("finetune.transfer_blocks would cut every init's transfer (and refuse random): the "
                             "layer-wise runs take theirs from layers: [k, ...]")
        if len(set(self.layers)) != len(self.layers) or len(set(self.layer_modes)) != len(self.layer_modes):
            raise ValueError(f"layers {self.layers} and layer_modes {self.layer_modes} take each value once")
        if self.layers and not self.layer_modes:
            raise ValueError("layers without layer_modes: give at least one of 'finetune', 'frozen'")
        for blocks in self.layers:  # a k the trunk lacks stops the job here, not after hours of runs
            check_transfer_blocks(blocks, self.finetune.model)


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
    block_count = trunk_block_count(cfg.finetune.model)
    plan = plan_layer_runs(cfg.layers, cfg.layer_modes, block_count, cfg.finetune.freeze_blocks)
    own_folders = len(dict.fromkeys(point.suffix for point in plan if point.suffix))
    counter = RunCounter(len(cfg.budgets) * len(cfg.seeds) * (len(inits) + own_folders))

    def finetune(name: str, **settings) -> tuple[dict, Path]:
        """The summary and folder of the comparison's fine-tuning run ``name``: reused when it finished with
        these settings, else run (resumed from its last checkpoint where it has one)."""
        ft = dataclasses.replace(cfg.finetune, name=name, out=str(out / "runs"), **settings)
        prepared = prepare_finetune(ft, log)
        summary = reusable(prepared.out, prepared.identity, name, log)
        if summary is not None:
            log(f"[compare] {counter.next()} {name}: done earlier with these settings, reused")
            return summary, prepared.out
        log(f"[compare] {counter.next()} {name}")
        return run_finetune(ft, log, prepared=prepared), prepared.out

    runs = []
    for budget in cfg.budgets:
        for seed in cfg.seeds:
            for init in inits:
                summary, folder = finetune(f"labels{budget}-seed{seed}-{init_label(init)}", init=init, seed=seed,
                                           labels=budget)
                history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
                runs.append({"budget": budget, "seed": seed, "init": init_label(init), "test": summary["test"],
                             "curve": [(h["epoch"] + 1, h.get("val_mA")) for h in history
                                       if h.get("val_mA") is not None],
                             "wall_s": summary["wall_s"]})
    result = aggregate(runs, [init_label(i) for i in inits], cfg.budgets)
    result["wall_s"] = round(time.time() - t0, 1)
    result["pretrained"] = pretext
    write_outputs(out, result, runs)  # the comparison stands before the layer-wise runs begin
    layer_runs = []
    if plan:
        def from_pretext(name: str, **settings) -> dict:
            return finetune(name, init=f"patchtask:{pretext}", **settings)[0]

        for budget in cfg.budgets:
            for seed in cfg.seeds:
                layer_runs += layer_points(plan, budget, seed, runs, from_pretext)
        result["layerwise"] = {"block_count": block_count, "model": cfg.finetune.model,
                               "table": aggregate_layers(layer_runs, cfg.budgets, cfg.layer_modes, cfg.layers)}
        result["wall_s"] = round(time.time() - t0, 1)
        write_outputs(out, result, runs, layer_runs)
    log(format_result(result, out))
    return result


class RunCounter:
    """``3/12``-style progress through the comparison's fine-tuning runs."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def next(self) -> str:
        self.done += 1
        return f"{self.done}/{self.total}"


@dataclass(frozen=True)
class LayerRun:
    """One point of the layer-wise curves: ``blocks`` (k) trunk blocks copied from the pretraining, the rest
    re-initialised, trained in ``mode`` with ``freeze_blocks`` fixed. ``suffix`` names its run folder
    (``labels250-seed0-patchtask-<suffix>``); None: the comparison's own patchtask run is this run (every
    block copied and trained as that run trains them)."""
    blocks: int
    mode: str
    freeze_blocks: int
    suffix: str | None


def plan_layer_runs(layers: list[int], modes: list[str], block_count: int, freeze_blocks: int = 0) -> list[LayerRun]:
    """The layer-wise points per budget and seed, k ascending. ``freeze_blocks``: the comparison's own
    (finetune.freeze_blocks), which mode finetune keeps; frozen freezes the k copied blocks instead."""
    plan = []
    for k in sorted(layers):
        for mode in modes:
            freeze = k if mode == "frozen" else freeze_blocks
            if k == block_count and freeze == freeze_blocks:
                suffix = None
            else:
                # Named by what the run does, not by the mode asked for, so that two modes that make one run
                # (k=0 frozen freezes nothing) share its folder and train it once.
                suffix = f"k{k}-{'finetune' if freeze == freeze_blocks else 'frozen'}"
            plan.append(LayerRun(k, mode, freeze, suffix))
    return plan


def layer_points(plan: list[LayerRun], budget: int, seed: int, runs: list[dict], finetune) -> list[dict]:
    """The layer-wise records of one budget and seed. ``finetune(name, **FinetuneConfig keys)`` returns the summary
    of the PatchTask run ``name`` with those settings; a folder two points share is asked for once, and the point
    that is the comparison's own patchtask run takes that run's scores from ``runs``."""
    records, summaries = [], {}
    for point in plan:
        if point.suffix is None:
            full = next(r for r in runs if r["budget"] == budget and r["seed"] == seed and r["init"] == "patchtask")
            name, summary = f"labels{budget}-seed{seed}-patchtask", full
        else:
            name = f"labels{budget}-seed{seed}-patchtask-{point.suffix}"
            if name not in summaries:
                summaries[name] = finetune(name, seed=seed, labels=budget, transfer_blocks=point.blocks,
                                           freeze_blocks=point.freeze_blocks)
            summary = summaries[name]
        records.append({"budget": budget, "seed": seed, "blocks": point.blocks, "mode": point.mode, "run": name,
                        "test": summary["test"], "wall_s": summary["wall_s"]})
    return records


def score_stats(chosen: list[dict]) -> dict:
    """Per METRICS key: mean and (population) std over the runs that define it; None for both where none does."""
    stats = {}
    for key, _ in METRICS:
        values = np.array([r["test"][key] for r in chosen if r["test"].get(key) is not None], dtype=float)
        stats[key] = {"mean": float(values.mean()) if len(values) else None,
                      "std": float(values.std()) if len(values) else None}
    return stats


def aggregate(runs: list[dict], inits: list[str], budgets: list[int]) -> dict:
    table = []
    for budget in budgets:
        for init in inits:
            chosen = [r for r in runs if r["budget"] == budget and r["init"] == init]
            table.append({"budget": budget, "init": init, "seeds": len(chosen)} | score_stats(chosen))
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


def aggregate_layers(layer_runs: list[dict], budgets: list[int], modes: list[str], layers: list[int]) -> list[dict]:
    """One row per budget, mode and k (ascending): the seeds run and the mean ± std of every test score."""
    table = []
    for budget in budgets:
        for mode in modes:
            for k in sorted(layers):
                chosen = [r for r in layer_runs if (r["budget"], r["mode"], r["blocks"]) == (budget, mode, k)]
                table.append({"budget": budget, "mode": mode, "blocks": k, "seeds": len(chosen)}
                             | score_stats(chosen))
    return table


def shown_metrics(table: list[dict]) -> list[tuple[str, str]]:
    """The METRICS some row of the table defines (mA always)."""
    return [(key, label) for key, label in METRICS
            if key == "mA" or any((row.get(key) or {}).get("mean") is not None for row in table)]


def score_cells(row: dict, metrics: list[tuple[str, str]]) -> str:
    """``row``'s scores as table cells, in points: mean ± std, "–" where undefined."""
    cells = []
    for key, _ in metrics:
        m = row.get(key) or {"mean": None}
        cells.append("–" if m["mean"] is None else f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}")
    return " | ".join(cells)


def table_markdown(result: dict) -> str:
    metrics = shown_metrics(result["table"])
    header = "| labels | init | " + " | ".join(label for _, label in metrics) + " | seeds |"
    lines = [header, "|" + " --- |" * (len(metrics) + 3)]
    for row in result["table"]:
        lines.append(f"| {row['budget']} | {row['init']} | {score_cells(row, metrics)} | {row['seeds']} |")
    return "\n".join(lines)


def layerwise_markdown(result: dict) -> str:
    """Per budget: the random run, the layer-wise rows (mode, then k ascending) and the full patchtask run."""
    layer = result["layerwise"]
    n = layer["block_count"]
    references = {(row["budget"], row["init"]): row for row in result["table"]}
    metrics = shown_metrics(layer["table"] + [row for row in result["table"] if row["init"] in ("random", "patchtask")])
    lines = ["| labels | blocks copied (k) | mode | " + " | ".join(label for _, label in metrics) + " | seeds |",
             "|" + " --- |" * (len(metrics) + 4)]
    for budget in dict.fromkeys(row["budget"] for row in layer["table"]):
        rows = [(references.get((budget, "random")), "none: random init", "reference")]
        rows += [(row, str(row["blocks"]), row["mode"]) for row in layer["table"] if row["budget"] == budget]
        rows += [(references.get((budget, "patchtask")), f"all {n}: patchtask init", "reference")]
        lines += [f"| {budget} | {blocks} | {mode} | {score_cells(row, metrics)} | {row['seeds']} |"
                  for row, blocks, mode in rows if row is not None]
    return (f"# Layer-wise transfer (test split, mean ± std over seeds)\n\n"
            f"Each run copies the first k of the {layer['model']} trunk's {n} blocks from the PatchTask pretraining "
            "and re-initialises the rest (He, with the run's seed), then fine-tunes as the comparison's other runs: "
            "*finetune* trains every block, *frozen* keeps the k copied blocks fixed (freeze_blocks=k). The "
            "reference rows are the comparison's random and patchtask runs at the same budget. Plot: "
            f"layerwise.png.\n\n" + "\n".join(lines) + f"\n\n{PROTOCOL_NOTE}\n")


def output_files(result: dict) -> list[str]:
    """What write_outputs writes for ``result``, runs/ besides."""
    files = ["comparison.md", "comparison.json", "comparison.png", "learning_curves.png"]
    if len({row["budget"] for row in result["table"]}) >= 2:
        files.append("low_shot.png")
    if result.get("layerwise"):
        files += ["layerwise.md", "layerwise.png"]
    return files


def write_outputs(out: Path, result: dict, runs: list[dict], layer_runs: list[dict] | None = None) -> None:
    from patchray.report.compare_plots import plot_layerwise, plot_low_shot
    from patchray.report.plots import plot_init_bars, plot_init_curves

    files = output_files(result)
    (out / "comparison.json").write_text(json.dumps({"result": result, "runs": runs,
                                                     "layerwise_runs": layer_runs or []}, indent=2) + "\n")
    gain = result["patchtask_minus_random_mA"]
    analyses = [f"{name}: {what}" for name, what in (("low_shot.png", "test mA by label budget, per init"),
                                                    ("layerwise.md", "layer-wise transfer (plot: layerwise.png)"))
                if name in files]
    text = (f"# Fine-tuning from different inits (test split, mean ± std over seeds)\n\n{table_markdown(result)}\n\n"
            f"{PROTOCOL_NOTE}\n\n"
            f"PatchTask minus random, mA at {result['smallest_budget']} labels, mean over seeds: "
            + ("n/a" if gain is None else f"{100 * gain:+.1f} points") + "\n"
            + "".join(f"\n- {line}" for line in analyses) + ("\n" if analyses else ""))
    (out / "comparison.md").write_text(text)
    plot_init_bars(result["table"], out / "comparison.png")
    plot_init_curves(runs, out / "learning_curves.png")
    if "low_shot.png" in files:
        plot_low_shot(result["table"], out / "low_shot.png")
    if "layerwise.md" in files:
        (out / "layerwise.md").write_text(layerwise_markdown(result))
        layer = result["layerwise"]
        plot_layerwise(layer["table"], result["table"], layer["block_count"], out / "layerwise.png")
    # An analysis this comparison no longer makes (fewer budgets, no layers now) must not look like one of its
    # outputs: its files, derived from runs that stay in runs/, are removed.
    for stale in {"low_shot.png", "layerwise.md", "layerwise.png"} - set(files):
        (out / stale).unlink(missing_ok=True)


def format_result(result: dict, out: Path) -> str:
    gain = result["patchtask_minus_random_mA"]
    return "\n".join([
        f"[compare] done in {result['wall_s'] / 60:.1f} min",
        table_markdown(result),
        f"  PatchTask - random at {result['smallest_budget']} labels: "
        + ("n/a" if gain is None else f"{100 * gain:+.1f} mA points (per seed: "
           + ", ".join(f"{100 * d:+.1f}" for d in result["patchtask_minus_random_mA_per_seed"]) + ")"),
        *(["  layer-wise transfer (test mA; layerwise.md has every score):", layer_summary(result)]
          if result.get("layerwise") else []),
        f"  outputs in {out}: {', '.join(output_files(result))}, runs/",
    ])


def layer_summary(result: dict) -> str:
    """One line per budget and mode: test mA at each k, in points."""
    lines = []
    for row in result["layerwise"]["table"]:
        key = (row["budget"], row["mode"])
        if not lines or lines[-1][0] != key:
            lines.append((key, []))
        m = row["mA"]
        lines[-1][1].append(f"k={row['blocks']} " + ("–" if m["mean"] is None else f"{100 * m['mean']:.1f}"))
    return "\n".join(f"    {budget} labels, {mode}: " + ", ".join(points) for (budget, mode), points in lines)
