"""What a search found, as plain records: tables, the best trial, epochs spent, parameter importances.

Pure (no Ray): the tuner turns Tune's ResultGrid into ``TrialRecord``s and
everything here works on those, so it is tested on hand-made records.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from patchray.tune.space import GRID_KEY, Param, SearchSpace

COMPLETED, STOPPED, ERROR, INFEASIBLE = "completed", "stopped early", "error", "infeasible"
UNFINISHED = "unfinished"  # the experiment was interrupted while it ran or waited: resume to finish it
STATUSES = (COMPLETED, STOPPED, ERROR, INFEASIBLE, UNFINISHED)


@dataclass
class TrialRecord:
    trial_id: str
    params: dict                # Param.name -> sampled value
    status: str                 # one of STATUSES
    epochs: int                 # fine-tuning epochs this trial ran
    objective: float | None     # the validation objective after its last epoch
    metrics: dict = field(default_factory=dict)  # last reported val_* / test_* numbers
    folder: str | None = None   # the trial's fine-tuning run folder
    at_grace: float | None = None  # the objective after ASHA's grace period: every trial that ran has one


def trial_status(epochs_run: int, epochs_planned: int, errored: bool, infeasible: bool = False,
                 ended: bool = True) -> str:
    if errored:
        return ERROR
    if not ended:
        return UNFINISHED
    if infeasible:
        return INFEASIBLE
    return COMPLETED if epochs_run >= epochs_planned else STOPPED


def epochs_spent(records: list[TrialRecord]) -> int:
    return sum(r.epochs for r in records)


def best_record(records: list[TrialRecord]) -> TrialRecord | None:
    """The completed trial with the highest objective (early-stopped trials were judged on fewer epochs);
    ties go to the earliest launched, so the answer does not depend on the order results come back in."""
    scored = [r for r in records if r.status == COMPLETED and r.objective is not None]
    return max(scored, key=lambda r: r.objective) if scored else None  # max keeps the first of equals


def _short(name: str) -> str:
    return name.split(".", 1)[1]  # "pretrain.task.patch_size" -> "task.patch_size"


def rows(records: list[TrialRecord], space: SearchSpace, metric: str) -> list[dict]:
    out = []
    for r in records:
        row = {"trial": r.trial_id, "status": r.status, "epochs": r.epochs, metric: r.objective}
        row.update({p.name: r.params.get(p.name) for p in space.params})
        row.update({k: v for k, v in sorted(r.metrics.items()) if k != metric})
        row["folder"] = r.folder
        out.append(row)
    return out


def write_csv(records: list[TrialRecord], space: SearchSpace, metric: str, path: Path) -> None:
    table = rows(records, space, metric)
    columns: list[str] = []
    for row in table:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 0.01 or abs(value) >= 1000 else f"{value:.3f}"
    return str(value)


def table_markdown(records: list[TrialRecord], space: SearchSpace, metric: str) -> str:
    best = best_record(records)
    params = [p.name for p in space.params]
    header = ["trial", "status", "epochs", metric, *(_short(n) for n in params)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(records, key=lambda r: (r.objective is None, -(r.objective or 0))):
        mark = " (best)" if best is not None and r.trial_id == best.trial_id else ""
        cells = [r.trial_id + mark, r.status, str(r.epochs), _cell(r.objective),
                 *(_cell(r.params.get(n)) for n in params)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{len(records)} trial(s), {epochs_spent(records)} fine-tuning epochs in all; "
                 f"{sum(r.status == COMPLETED for r in records)} completed, "
                 f"{sum(r.status == STOPPED for r in records)} stopped early by ASHA, "
                 f"{sum(r.status == ERROR for r in records)} failed, "
                 f"{sum(r.status == INFEASIBLE for r in records)} infeasible (a patch and grid that do not fit)"
                 + (f", {unfinished} unfinished (re-run the same command to resume)." if (unfinished := sum(
                     r.status == UNFINISHED for r in records)) else "."))
    return "\n".join(lines) + "\n"


def _distribution(param: Param):
    import optuna.distributions as d

    if param.kind == "choice":
        return d.CategoricalDistribution(list(param.values))
    if param.kind == "randint":
        return d.IntDistribution(int(param.low), int(param.high) - 1)
    return d.FloatDistribution(param.low, param.high, log=param.kind == "loguniform")


def importances(records: list[TrialRecord], space: SearchSpace, seed: int = 0) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importance of each searched parameter, and what it was computed on.

    On completed trials, as Optuna does, when there are 3 or more; else (ASHA stopped most trials) on every
    trial's objective after the grace period, the one epoch count at which all trials were judged alike.
    Empty when there is too little to tell."""
    import optuna

    done = [(r, r.objective) for r in records if r.status == COMPLETED and r.objective is not None]
    basis = "completed trials, final objective"
    if len(done) < 3:
        done = [(r, r.at_grace) for r in records if r.at_grace is not None]
        basis = "all trials, objective after the grace period"
    varying = [p for p in space.params if len({repr(r.params.get(p.name)) for r, _ in done}) > 1]
    if len(done) < 3 or not varying or len({v for _, v in done}) < 2:
        return {}, ""  # nothing varied, or nothing it changed: no ranking to give
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for r, value in done:
        study.add_trial(optuna.trial.create_trial(
            params={p.name: r.params[p.name] for p in varying},
            distributions={p.name: _distribution(p) for p in varying}, value=value))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {name: float(v) for name, v in scores.items()}, f"{basis} ({len(done)})"


PATCH_SIZE_KEY = "pretrain.task.patch_size"
GRID_NAME = f"pretrain.{GRID_KEY}"


def heatmap(records: list[TrialRecord]) -> tuple[list, list, list[list[float]]] | None:
    """Best objective per (patch size, grid) cell: (patch sizes, grids, matrix[patch][grid], NaN where no trial
    ran). None unless both are searched."""
    scored = [r for r in records if r.objective is not None
              and PATCH_SIZE_KEY in r.params and GRID_NAME in r.params]
    if not scored:
        return None
    sizes = sorted({r.params[PATCH_SIZE_KEY] for r in scored})
    grids = sorted({r.params[GRID_NAME] for r in scored}, key=lambda g: tuple(int(x) for x in str(g).split("x")))
    matrix = [[math.nan] * len(grids) for _ in sizes]
    for r in scored:
        i, j = sizes.index(r.params[PATCH_SIZE_KEY]), grids.index(r.params[GRID_NAME])
        if math.isnan(matrix[i][j]) or r.objective > matrix[i][j]:
            matrix[i][j] = r.objective
    return sizes, grids, matrix
