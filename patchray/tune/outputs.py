"""What a search writes: Tune's results as plain records (``results.TrialRecord``), the chosen configuration,
the tables, plots and ``best_*.yaml`` files, ``summary.json``, and the lines the job prints at the end."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from patchray import config as configlib
from patchray.ray_compat import trial_statuses
from patchray.tune import results as res
from patchray.tune.space import build_section
from patchray.tune.trial import run_trial, trial_params


def _trial_id_and_index(result) -> tuple[str, int]:
    """Tune names a trial's folder "<trainable>_<trial id>_<launch index>_<params>_<date>"."""
    parts = Path(result.path).name.removeprefix(f"{run_trial.__name__}_").split("_")
    trial_id = (result.metrics or {}).get("trial_id") or parts[0]
    return trial_id, int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def records_from(result_grid, cfg, trials_dir: Path, rung_log: Path) -> list:
    """Tune's results as plain records, in launch order (a restored ResultGrid comes in another order)."""
    from patchray.tune.search_alg import DIVERGED, EPOCHS_DONE, INFEASIBLE, stopped_by_asha

    space, metric = cfg.search_space(), f"val_{cfg.metric}"
    states = trial_statuses(result_grid)  # an interrupted experiment leaves some RUNNING / PENDING
    stopped = stopped_by_asha(rung_log)
    records = []
    for result in sorted(result_grid, key=lambda r: _trial_id_and_index(r)[1]):
        frame = result.metrics_dataframe
        metrics = result.metrics or {}
        epochs_run = 0 if frame is None or "epoch" not in frame else int(frame["epoch"].dropna().nunique())
        trial_id, _ = _trial_id_and_index(result)
        params = trial_params(result.config or {}, space)
        infeasible = bool(metrics.get(INFEASIBLE))
        ended = states.get(trial_id, "TERMINATED") in ("TERMINATED", "ERROR")
        status = res.trial_status(epochs_run, cfg.trial_epochs(params, space), result.error is not None, infeasible,
                                  ended, diverged=bool(metrics.get(DIVERGED)), asha_stopped=trial_id in stopped)
        at_grace = None
        if frame is not None and metric in frame and EPOCHS_DONE in frame and not infeasible:
            rung = frame[frame[EPOCHS_DONE] == cfg.grace_period][metric].dropna()
            at_grace = float(rung.iloc[-1]) if len(rung) else None
        records.append(res.TrialRecord(
            trial_id=trial_id, params=params, status=status, epochs=epochs_run, at_grace=at_grace,
            objective=None if infeasible else metrics.get(metric),
            metrics={k: v for k, v in metrics.items() if k.startswith("val_") and v is not None},
            folder=str(trials_dir / trial_id)))
    return records


def _best_entry(cfg, records: list, confirmations: list) -> tuple[dict | None, res.TrialRecord | None]:
    """The chosen configuration for summary.json, and its search trial: the best mean over seeds when the top
    configurations were confirmed, else the best single trial (then without test numbers: none were made)."""
    metric = f"val_{cfg.metric}"
    chosen = res.confirmed_best(confirmations)
    if chosen is None:
        best = res.best_record(records)
        if best is None:
            return None, None
        return {"trial": best.trial_id, "params": best.params, metric: best.objective, "seeds": 1,
                "test": "not evaluated (confirm_top_k=0 or confirm_seeds=1: no confirmation runs)"}, best
    trial = next(r for r in records if r.trial_id == chosen.trial_id)
    entry = {"trial": chosen.trial_id, "params": chosen.params, metric: chosen.mean, f"{metric}_std": chosen.std,
             "seeds": len(chosen.val), "per_seed": chosen.val, "search_trial_value": trial.objective}
    for key, values in sorted(chosen.test.items()):
        stats = res.mean_std(values)
        entry[key], entry[f"{key}_std"] = stats["mean"], stats["std"]
    entry["test_runs"] = max((len(v) for v in chosen.test.values()), default=0)
    return entry, trial


def write_outputs(out: Path, cfg, records: list, wall_s: float, confirmations: list | None = None,
                  extra: dict | None = None) -> dict:
    from patchray.report import plots

    confirmations = confirmations or []
    space = cfg.search_space()
    metric = f"val_{cfg.metric}"
    res.write_csv(records, space, metric, out / "trials.csv")
    (out / "trials.md").write_text(f"# Trials of {cfg.name}\n\n" + res.table_markdown(records, space, metric))
    plots.plot_tune_objective([dataclasses.asdict(r) for r in records], cfg.metric, out / "objective.png")
    written = ["trials.csv", "trials.md", "objective.png"]
    if confirmations:
        (out / "confirmation.md").write_text(
            f"# The top {len(confirmations)} configurations of {cfg.name}, over seeds\n\n"
            + res.confirmation_markdown(confirmations, metric, space))
        written.append("confirmation.md")
    importances, basis = res.importances(records, space, cfg.seed)
    if importances:
        plots.plot_importances(importances, out / "importances.png", basis)
        written.append("importances.png")
    cells = res.heatmap(records)
    if cells:
        plots.plot_heatmap(*cells, cfg.metric, out / "heatmap.png")
        written.append("heatmap.png")
    best, trial = _best_entry(cfg, records, confirmations)
    if best is not None:
        pre, fine = space.split(best["params"])
        configlib.dump_yaml(build_section("pretrain", cfg.pretrain, pre), out / "best_pretrain.yaml")
        best_fine = build_section("finetune", cfg.finetune, fine)
        # jobs/finetune.py --init patchtask:<this> reuses the pretraining the best trial started from.
        best_fine = dataclasses.replace(best_fine, init=_trial_init(trial.folder) or best_fine.init)
        configlib.dump_yaml(best_fine, out / "best_finetune.yaml")
        written += ["best_pretrain.yaml", "best_finetune.yaml"]
    summary = {
        "name": cfg.name, "metric": metric, "search": cfg.search, "scheduler": cfg.scheduler,
        "trials": len(records), "epochs_spent": res.epochs_spent(records),
        "status": {s: sum(r.status == s for r in records) for s in res.STATUSES},
        "best": best,
        "confirmation": [{"trial": c.trial_id, "params": c.params, "mean": c.mean, "std": c.std, "per_seed": c.val,
                          "seeds": c.seeds} for c in confirmations],
        "importances": importances, "importances_on": basis, "wall_s": round(wall_s, 1), "outputs": written,
        "folder": str(out), **(extra or {}),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _trial_init(folder: str | None) -> str | None:
    config = Path(folder or "") / "config.yaml"
    if not config.exists():
        return None
    from patchray.train.config import FinetuneConfig

    return configlib.load(FinetuneConfig, config).init


def format_summary(summary: dict) -> str:
    metric = summary["metric"]
    test = metric.replace("val_", "test_")
    lines = [f"[tune] {summary['trials']} trial(s) in {summary['wall_s']:.0f} s, {summary['epochs_spent']} "
             f"fine-tuning epochs; " + ", ".join(f"{n} {s}" for s, n in summary["status"].items() if n)]
    best = summary["best"]
    if best and best.get("seeds", 1) > 1:
        lines.append(f"[tune] chosen: {metric} {best[metric]:.4f} +- {best[f'{metric}_std']:.4f} over "
                     f"{best['seeds']} seeds (test {test} {best.get(test, float('nan')):.4f} +- "
                     f"{best.get(f'{test}_std', float('nan')):.4f} over {best.get('test_runs', 0)} confirmation "
                     f"run(s)) with {best['params']}")
    elif best:
        lines.append(f"[tune] best {metric} {best[metric]:.4f} (one seed; no test numbers) with {best['params']}")
    else:
        lines.append("[tune] no trial completed: no best configuration written")
    lines.append(f"[tune] outputs in {summary['folder']}: {', '.join(summary['outputs'])}, summary.json")
    return "\n".join(lines)
