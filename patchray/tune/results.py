"""What a search found, as plain records: tables, the best trial, epochs spent, parameter importances.

Pure (no Ray): the tuner turns Tune's ResultGrid into ``TrialRecord``s and
everything here works on those, so it is tested on hand-made records.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from patchray.tune.space import GRID_KEY, SearchSpace, optuna_distribution

COMPLETED, STOPPED, ERROR, INFEASIBLE = "completed", "stopped by ASHA", "error", "infeasible"
OUT_OF_TIME = "stopped by the time budget"  # cut when time_budget_s ran out: not judged, not a result
DIVERGED = "diverged"      # the fine-tuning's loss stopped being finite: scored the worst
UNFINISHED = "unfinished"  # the experiment was interrupted while it ran or waited: resume to finish it
STATUSES = (COMPLETED, STOPPED, OUT_OF_TIME, DIVERGED, ERROR, INFEASIBLE, UNFINISHED)
# Parameter importances from fewer trials than this rank noise: they are not computed.
IMPORTANCE_MIN_TRIALS = 20


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
                 ended: bool = True, *, diverged: bool = False, asha_stopped: bool = False) -> str:
    """A trial's status from what it ran and how it ended. A trial that ended short of its epochs was stopped by
    ASHA when ASHA's rung records say so (``asha_rungs.jsonl``), else by the time budget."""
    if errored:
        return ERROR
    if not ended:
        return UNFINISHED
    if infeasible:
        return INFEASIBLE
    if diverged:
        return DIVERGED
    if epochs_run >= epochs_planned:
        return COMPLETED
    return STOPPED if asha_stopped else OUT_OF_TIME


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
                 + (f"{cut} stopped by the time budget, " if (cut := sum(r.status == OUT_OF_TIME for r in records))
                    else "")
                 + (f"{bad} diverged (scored 0), " if (bad := sum(r.status == DIVERGED for r in records)) else "")
                 + f"{sum(r.status == ERROR for r in records)} failed, "
                 f"{sum(r.status == INFEASIBLE for r in records)} infeasible (a patch and grid that do not fit)"
                 + (f", {unfinished} unfinished (re-run the same command to resume)." if (unfinished := sum(
                     r.status == UNFINISHED for r in records)) else "."))
    return "\n".join(lines) + "\n"


def importances(records: list[TrialRecord], space: SearchSpace, seed: int = 0,
                min_trials: int = IMPORTANCE_MIN_TRIALS) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importance of each searched parameter, and what it was computed on (or, when there is
    nothing to compute, why not).

    On completed trials, as Optuna does, when there are ``min_trials`` or more; else (ASHA stopped most
    trials) on every trial's objective after the grace period, the one epoch count at which all trials were
    judged alike, when that is ``min_trials`` or more. Below that an importance ranks noise: none is given."""
    import optuna

    done = [(r, r.objective) for r in records if r.status == COMPLETED and r.objective is not None]
    basis = "completed trials, final objective"
    completed = len(done)
    if len(done) < min_trials:
        done = [(r, r.at_grace) for r in records if r.at_grace is not None]
        basis = "all trials, objective after the grace period"
    if len(done) < min_trials:
        return {}, (f"not computed: {completed} completed trial(s), {len(done)} with a value after the grace "
                    f"period; an importance needs {min_trials} judged alike")
    varying = [p for p in space.params if len({repr(r.params.get(p.name)) for r, _ in done}) > 1]
    if not varying or len({v for _, v in done}) < 2:
        return {}, "not computed: nothing varied, or nothing it changed"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for r, value in done:
        study.add_trial(optuna.trial.create_trial(
            params={p.name: r.params[p.name] for p in varying},
            distributions={p.name: optuna_distribution(p) for p in varying}, value=value))
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


# ------------------------------------------------------------------------------------------- confirmation


@dataclass
class Confirmation:
    """One of the top configurations, fine-tuned again with other seeds: its search trial's validation score
    and those of its confirmation runs (with their test numbers)."""
    trial_id: str                  # the search trial it was found by
    params: dict
    val: list[float]               # the objective per seed: the trial's first, then the confirmation runs'
    test: dict[str, list[float]] = field(default_factory=dict)  # test_* per confirmation run
    seeds: list[int] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(self.val) / len(self.val)

    @property
    def std(self) -> float:
        return _std(self.val)


def _std(values: list[float]) -> float:
    """Sample standard deviation (0 for a single value)."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# Two configurations are near twins when they take the same choices and each range parameter differs by less than
# this share of its range (on a log scale for loguniform): confirming both spends seeds on one configuration twice.
NEAR_TWIN_SHARE = 0.1


def _range_position(param, value: float) -> float:
    """Where ``value`` lies in the parameter's range, 0..1 (log-scaled for loguniform)."""
    if param.kind == "loguniform":
        return (math.log(value) - math.log(param.low)) / (math.log(param.high) - math.log(param.low))
    return (value - param.low) / (param.high - param.low)


def near_twins(a: dict, b: dict, space: SearchSpace | None) -> bool:
    """The same configuration, or one that differs only by less than NEAR_TWIN_SHARE of a range parameter."""
    kinds = {p.name: p for p in space.params} if space is not None else {}
    for name in set(a) | set(b):
        param, x, y = kinds.get(name), a.get(name), b.get(name)
        if x == y:
            continue
        if param is None or param.kind == "choice" or x is None or y is None:
            return False
        if abs(_range_position(param, float(x)) - _range_position(param, float(y))) >= NEAR_TWIN_SHARE:
            return False
    return True


def top_configurations(records: list[TrialRecord], k: int, space: SearchSpace | None = None) -> list[TrialRecord]:
    """The ``k`` best completed trials by their objective, each a distinct configuration (ties: the earliest): a
    trial whose configuration is a near twin (``near_twins``) of a better one already taken is passed over, so
    that the seeds of the confirmation judge different configurations."""
    top = []
    for r in sorted((r for r in records if r.status == COMPLETED and r.objective is not None),
                    key=lambda r: -r.objective):
        if len(top) >= k:
            break
        if not any(near_twins(r.params, kept.params, space) for kept in top):
            top.append(r)
    return top


def confirmed_best(confirmations: list[Confirmation]) -> Confirmation | None:
    """The configuration with the best mean validation score over its seeds (ties: the better search trial)."""
    return max(confirmations, key=lambda c: c.mean) if confirmations else None


def mean_std(values: list[float]) -> dict:
    return {"mean": sum(values) / len(values), "std": _std(values), "n": len(values)} if values else {}


def confirmation_markdown(confirmations: list[Confirmation], metric: str, space: SearchSpace) -> str:
    best = confirmed_best(confirmations)
    params = [p.name for p in space.params]
    header = ["trial", f"{metric} mean", "std", "seeds", "per seed", *(_short(n) for n in params)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in sorted(confirmations, key=lambda c: -c.mean):
        mark = " (chosen)" if c is best else ""
        cells = [c.trial_id + mark, _cell(c.mean), _cell(c.std), str(len(c.val)),
                 ", ".join(_cell(v) for v in c.val), *(_cell(c.params.get(n)) for n in params)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
