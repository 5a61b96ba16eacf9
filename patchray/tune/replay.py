"""Search strategies replayed offline over recorded validation curves: a benchmark that can fail.

A real search (grid vs ASHA + TPE) is one noisy draw: which seed each trial happened to get, which
configurations the sampler happened to try first. One run of each says little, and real runs are too
costly to repeat a hundred times. So the per-epoch validation curves of every configuration of a small
grid are recorded once, for several seeds, and the strategies are replayed over those curves many times
each, at equal budgets. Each replay gives a regret, in points (100 x objective):

    regret = true value of the true best configuration - true value of the configuration the strategy chose

where a configuration's true value is the mean over its seeds of its final-epoch value. The distribution of
regrets over the repeats, and the epochs each strategy spent, say whether ASHA + TPE is worth it on this
space; the goal (GOAL_MEDIAN_REGRET, GOAL_EPOCH_SHARE) can be missed, and the report then says so.

How a replay runs:

- Trials are sequential. Each picks a configuration (by the strategy) and draws one of its seed curves at
  random: that is the noise a real search sees. Running an epoch is reading the next value of that curve.
- Budget, in epochs: a trial is launched while ``spent < budget`` (at least one epoch left), and it may run
  only the epochs left; a trial cut by the budget before its last epoch counts as not completed. The grid
  ignores the budget: it is the reference cost, every configuration once, run out.
- The chosen configuration is that of the completed trial with the best observed final value (ties: the
  earliest). If no trial completed, the strategy chose nothing and its regret is the worst there is:
  true best minus the worst true value.
- ASHA (``Asha``) follows Ray Tune's AsyncHyperBandScheduler with one bracket, the rungs of
  ``patchray.tune.rungs`` (all before the final epoch). Trials one after another make it deterministic.
- TPE uses the project's sampler (``patchray.tune.sampler``) through Optuna's ask/tell interface: a trial
  reports every epoch it ran, is told PRUNED when stopped (by ASHA, or by the budget) and its final value
  when completed. A combination that is not among the recorded configurations (an incomplete grid) is
  told the lowest value recorded anywhere, costs no epochs and no trial, and TPE is asked again; after
  MAX_OFF_GRID_IN_A_ROW such proposals in a row a recorded configuration drawn at random is enqueued.
  As in the tuner (``patchray.tune.search_alg.PatchraySearch``), a configuration already completed is not
  run again: TPE is told the value that run observed and asked again (``MAX_KNOWN_IN_A_ROW`` times in a row
  at most; after that many, repeats run for the rest of the replay: ``sampler.RepeatRule``).
- ``random+asha`` draws with repeats, as Ray Tune's random search does; ``random+asha (no repeats)`` skips
  the configurations already completed in the same way, to tell what not repeating gains from what TPE's
  model gains.
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from patchray.tune.rungs import asha_max_t, asha_rungs
from patchray.tune.sampler import RepeatRule, startup_trials, tpe_sampler

RANDOM_NO_REPEATS = "random+asha (no repeats)"
STRATEGIES = ("grid", "random+asha", RANDOM_NO_REPEATS, "tpe+asha", "tpe")
GOAL_STRATEGY = "tpe+asha"
BASELINE_STRATEGY = "random+asha"   # the goal's strategy must beat this one on mean regret
GOAL_MEDIAN_REGRET = 1.0            # points: tpe+asha's median regret at most this...
GOAL_EPOCH_SHARE = 0.4              # ...spending on average at most this share of the grid's epochs
WITHIN_POINTS = 1.0                 # a repeat "found the best" when its regret is at most this
# Consecutive TPE proposals off the recorded grid before one recorded configuration is forced: a bound so
# that a sampler stuck on missing combinations cannot loop forever.
MAX_OFF_GRID_IN_A_ROW = 100

Params = dict[str, Any]
_CATEGORICAL = (type(None), bool, int, float, str)   # what Optuna's suggest_categorical accepts


def describe(params: Mapping[str, Any]) -> str:
    """A configuration as one line, for messages and tables."""
    return ", ".join(f"{name}={value!r}" for name, value in params.items())


def _key(params: Mapping[str, Any]) -> tuple:
    # Names sorted, so that the same configuration written with its parameters in another order is one key.
    return tuple(sorted(params.items(), key=lambda item: item[0]))


@dataclass(eq=False)
class Curves:
    """Recorded validation curves: ``seed_curves[i]`` is an array (seeds, epochs) for ``configs[i]``.

    Every curve has the same number of epochs; every configuration has the same parameter names, at
    least one seed, and finite values. Build it with ``from_records`` from what the recorder writes.
    """

    configs: tuple[Params, ...]
    seed_curves: tuple[np.ndarray, ...]
    true_values: np.ndarray = field(init=False)
    _index: dict[tuple, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.configs = tuple(dict(params) for params in self.configs)
        self.seed_curves = tuple(np.asarray(curves, dtype=float) for curves in self.seed_curves)
        if not self.configs:
            raise ValueError("no configurations: the curves are empty")
        if len(self.configs) != len(self.seed_curves):
            raise ValueError(f"{len(self.configs)} configurations but {len(self.seed_curves)} sets of curves")
        names = set(self.configs[0])
        epochs = None
        self._index = {}
        for params, curves in zip(self.configs, self.seed_curves):
            _check_params(params, names)
            if curves.ndim != 2 or curves.shape[0] == 0 or curves.shape[1] == 0:
                raise ValueError(f"configuration {describe(params)}: expected curves shaped (seeds >= 1, "
                                 f"epochs >= 1), got shape {curves.shape}")
            epochs = curves.shape[1] if epochs is None else epochs
            if curves.shape[1] != epochs:
                raise ValueError(f"configuration {describe(params)}: curves of {curves.shape[1]} epochs, "
                                 f"others have {epochs}")
            if not np.isfinite(curves).all():
                raise ValueError(f"configuration {describe(params)}: non-finite values in its curves")
            if _key(params) in self._index:
                raise ValueError(f"configuration {describe(params)} appears twice")
            self._index[_key(params)] = len(self._index)
        self.true_values = np.array([curves[:, -1].mean() for curves in self.seed_curves])

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> Curves:
        """From records ``{"params": {...}, "seed": int, "curve": [value after epoch 1, 2, ...]}``."""
        by_config: dict[tuple, tuple[Params, dict[Any, list[float]]]] = {}
        for number, record in enumerate(records):
            missing = {"params", "seed", "curve"} - set(record)
            if missing:
                raise ValueError(f"record {number} lacks {sorted(missing)}: {record!r}")
            params = dict(record["params"])
            _check_params(params, None)
            params_seen, seeds = by_config.setdefault(_key(params), (params, {}))
            if record["seed"] in seeds:
                raise ValueError(f"configuration {describe(params_seen)}: seed {record['seed']!r} recorded twice")
            seeds[record["seed"]] = [float(value) for value in record["curve"]]
        if not by_config:
            raise ValueError("no records: nothing to replay")
        configs, seed_curves = [], []
        for params, seeds in by_config.values():
            lengths = {len(curve) for curve in seeds.values()}
            if len(lengths) > 1:
                raise ValueError(f"configuration {describe(params)}: ragged curves, their seeds have "
                                 f"{sorted(lengths)} epochs")
            configs.append(params)
            seed_curves.append(np.array(list(seeds.values()), dtype=float))
        return cls(tuple(configs), tuple(seed_curves))

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Curves:
        """From the recorder's JSON lines file (one record per line, blank lines skipped)."""
        with open(path) as lines:
            return cls.from_records(json.loads(line) for line in lines if line.strip())

    @property
    def n_configs(self) -> int:
        return len(self.configs)

    @property
    def epochs(self) -> int:
        return self.seed_curves[0].shape[1]

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.true_values))

    @property
    def floor(self) -> float:
        """The lowest value recorded anywhere: what an impossible configuration is worth to TPE."""
        return float(min(curves.min() for curves in self.seed_curves))

    @property
    def choices(self) -> dict[str, list[Any]]:
        """Each parameter's distinct values, in the order first seen (names in the first config's order)."""
        choices: dict[str, list[Any]] = {name: [] for name in self.configs[0]}
        for params in self.configs:
            for name, value in params.items():
                if value not in choices[name]:
                    choices[name].append(value)
        return choices

    def index_of(self, params: Mapping[str, Any]) -> int | None:
        """The recorded configuration with these values, or None when it was not recorded."""
        return self._index.get(_key(params))


def _check_params(params: Params, names: set[str] | None) -> None:
    if not params:
        raise ValueError("a configuration without parameters")
    for name, value in params.items():
        if not isinstance(value, _CATEGORICAL):
            raise ValueError(f"configuration {describe(params)}: {name} = {value!r} is not a categorical "
                             "value (None, bool, int, float or str)")
    if names is not None and set(params) != names:
        raise ValueError(f"configuration {describe(params)}: parameters {sorted(params)}, "
                         f"the others have {sorted(names)}")


def seed_noise(curves: Curves) -> float:
    """The noise: mean over configurations of the standard deviation (ddof=1) over seeds of the final value,
    in points. Configurations with a single seed are left out; NaN when none has two."""
    stds = [float(np.std(c[:, -1], ddof=1)) for c in curves.seed_curves if c.shape[0] >= 2]
    return 100 * float(np.mean(stds)) if stds else math.nan


def spread(curves: Curves) -> float:
    """The signal: best minus worst true value, in points."""
    return 100 * float(curves.true_values.max() - curves.true_values.min())


class Asha:
    """Ray Tune's asynchronous successive halving with one bracket, for trials run one after another.

    At each rung (an epoch), a trial reaching it is stopped when earlier trials recorded values there and
    its value is below their ``(1 - 1/rf)`` percentile (``numpy.nanpercentile``, as Ray does); stopped or
    not, its value is recorded. Trials past the last rung run out.
    """

    def __init__(self, rungs: Sequence[int], reduction_factor: int) -> None:
        self.rungs = tuple(rungs)
        self.reduction_factor = reduction_factor
        self.recorded: dict[int, list[float]] = {rung: [] for rung in self.rungs}

    @classmethod
    def for_epochs(cls, epochs: int, grace_period: int, reduction_factor: int) -> Asha:
        """The project's ASHA for trials of ``epochs`` epochs (rungs strictly before the last one)."""
        return cls(asha_rungs(grace_period, reduction_factor, asha_max_t(grace_period, epochs)), reduction_factor)

    def cutoff(self, rung: int) -> float | None:
        recorded = self.recorded[rung]
        if not recorded:
            return None
        return float(np.nanpercentile(recorded, (1 - 1 / self.reduction_factor) * 100))

    def run(self, curve: Sequence[float], max_epochs: int | None = None) -> int:
        """Run a trial with this curve for at most ``max_epochs`` epochs: the epochs it ran."""
        last = len(curve) if max_epochs is None else min(len(curve), max_epochs)
        for rung in self.rungs:
            if rung > last:
                break
            value = float(curve[rung - 1])
            cutoff = self.cutoff(rung)
            self.recorded[rung].append(value)
            if cutoff is not None and value < cutoff:
                return rung
        return last


@dataclass(frozen=True)
class TrialRun:
    """One replayed trial: the configuration's index, the epochs it ran and what it observed last."""

    config: int
    epochs: int
    completed: bool
    last_value: float


@dataclass(frozen=True)
class Outcome:
    """One repeat of one strategy."""

    strategy: str
    repeat: int
    regret: float              # points
    epochs: int                # epochs spent
    trials: int                # trials launched (TPE's off-grid proposals not counted)
    completed: int             # trials that ran all epochs
    chosen: Params | None      # None when no trial completed
    off_grid: int = 0          # TPE proposals of unrecorded combinations
    known: int = 0             # proposals of configurations already completed, told their value, not run


class _Replay:
    """One repeat: runs trials over the curves and keeps the book of what they cost and observed."""

    def __init__(self, curves: Curves, rng: np.random.Generator, budget: int | None, asha: Asha | None):
        self.curves, self.rng, self.budget, self.asha = curves, rng, budget, asha
        self.runs: list[TrialRun] = []
        self.spent = 0
        self.off_grid = 0
        self.known = 0

    def budget_left(self) -> bool:
        return self.budget is None or self.spent < self.budget

    def run_trial(self, config: int) -> np.ndarray:
        """Run one trial of this configuration on a seed drawn at random: the values it observed."""
        seeds = self.curves.seed_curves[config]
        curve = seeds[self.rng.integers(len(seeds))]
        max_epochs = self.curves.epochs if self.budget is None else min(self.curves.epochs, self.budget - self.spent)
        epochs = max_epochs if self.asha is None else self.asha.run(curve, max_epochs)
        self.spent += epochs
        self.runs.append(TrialRun(config, epochs, epochs == self.curves.epochs, float(curve[epochs - 1])))
        return curve[:epochs]

    def outcome(self, strategy: str, repeat: int) -> Outcome:
        truth = self.curves.true_values
        chosen = None
        for run in self.runs:   # the best observed final value, the earliest on ties
            if run.completed and (chosen is None or run.last_value > chosen.last_value):
                chosen = run
        chosen_value = truth.min() if chosen is None else truth[chosen.config]
        return Outcome(
            strategy=strategy, repeat=repeat, regret=100 * float(truth.max() - chosen_value), epochs=self.spent,
            trials=len(self.runs), completed=sum(run.completed for run in self.runs),
            chosen=None if chosen is None else dict(self.curves.configs[chosen.config]), off_grid=self.off_grid,
            known=self.known)

    def completed_value(self, config: int) -> float | None:
        """The final value the first completed run of ``config`` observed (None: none completed)."""
        return next((run.last_value for run in self.runs if run.config == config and run.completed), None)


def _grid(one: _Replay) -> None:
    for config in one.rng.permutation(one.curves.n_configs):
        one.run_trial(int(config))


def _random(one: _Replay) -> None:
    while one.budget_left():
        one.run_trial(int(one.rng.integers(one.curves.n_configs)))


def _random_no_repeats(one: _Replay) -> None:
    repeats = RepeatRule()
    while one.budget_left():
        config = int(one.rng.integers(one.curves.n_configs))
        if repeats.tells(one.completed_value(config) is not None):
            one.known += 1
            continue
        one.run_trial(config)


def _tpe(one: _Replay, sampler_seed: int, n_startup_trials: int) -> None:
    import optuna

    with warnings.catch_warnings():   # multivariate, group and constant_liar are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction="maximize", sampler=tpe_sampler(sampler_seed, n_startup_trials))
    choices = one.curves.choices
    off_grid_in_a_row = 0
    repeats = RepeatRule()
    while one.budget_left():
        if off_grid_in_a_row >= MAX_OFF_GRID_IN_A_ROW:
            forced = one.curves.configs[int(one.rng.integers(one.curves.n_configs))]
            study.enqueue_trial(forced)
            off_grid_in_a_row = 0
        trial = study.ask()
        params = {name: trial.suggest_categorical(name, values) for name, values in choices.items()}
        config = one.curves.index_of(params)
        if config is None:
            # Not recorded: TPE learns it is as bad as anything seen, and it costs no epochs.
            study.tell(trial, one.curves.floor)
            one.off_grid += 1
            off_grid_in_a_row += 1
            continue
        off_grid_in_a_row = 0
        known = one.completed_value(config)
        if repeats.tells(known is not None):
            # Completed already: told what that run observed, not run again (the tuner's rule).
            study.tell(trial, known)
            one.known += 1
            continue
        observed = one.run_trial(config)
        for epoch, value in enumerate(observed, start=1):
            trial.report(float(value), epoch)
        if len(observed) == one.curves.epochs:
            study.tell(trial, float(observed[-1]))
        else:   # stopped by ASHA, or cut by the budget
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def _repeat_rng(seed: int, repeat: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, repeat]))


def replay(curves: Curves, strategy: str, *, budget_epochs: int | None, repeats: int = 100, seed: int = 0,
           grace_period: int = 1, reduction_factor: int = 2, n_startup_trials: int | None = None) -> list[Outcome]:
    """Replay ``strategy`` ``repeats`` times over the curves; repeat r draws from ``(seed, r)`` alone.

    ``budget_epochs`` bounds every strategy but the grid (which runs every configuration once, and may be
    given None). TPE's random start is ``startup_trials(budget_epochs // epochs)`` unless
    ``n_startup_trials`` is given.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if strategy != "grid" and (budget_epochs is None or budget_epochs < 1):
        raise ValueError(f"strategy {strategy!r} needs budget_epochs >= 1, got {budget_epochs}")
    budget = None if strategy == "grid" else budget_epochs
    uses_asha = "+asha" in strategy
    if uses_asha:
        Asha.for_epochs(curves.epochs, grace_period, reduction_factor)   # fail here, not in the first repeat
    search = _search(strategy, curves, budget_epochs, n_startup_trials)
    with _optuna_quiet():
        outcomes = []
        for repeat in range(repeats):
            rng = _repeat_rng(seed, repeat)
            sampler_seed = int(rng.integers(2**31 - 1))
            asha = Asha.for_epochs(curves.epochs, grace_period, reduction_factor) if uses_asha else None
            one = _Replay(curves, rng, budget, asha)
            search(one, sampler_seed)
            outcomes.append(one.outcome(strategy, repeat))
    return outcomes


def _search(strategy: str, curves: Curves, budget_epochs: int | None,
            n_startup_trials: int | None) -> Callable[[_Replay, int], None]:
    if strategy == "grid":
        return lambda one, _seed: _grid(one)
    if strategy == "random+asha":
        return lambda one, _seed: _random(one)
    if strategy == RANDOM_NO_REPEATS:
        return lambda one, _seed: _random_no_repeats(one)
    expected_trials = max(1, budget_epochs // curves.epochs)
    n_startup = startup_trials(expected_trials, n_startup_trials)
    return lambda one, sampler_seed: _tpe(one, sampler_seed, n_startup)


@contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna's logging at WARNING while replaying (a hundred studies would log every trial), then as before."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def summarize(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """The distribution of regret (points) and cost over the repeats."""
    if not outcomes:
        raise ValueError("no outcomes to summarize")
    regrets = np.array([o.regret for o in outcomes])
    epochs = np.array([o.epochs for o in outcomes])
    return {
        "repeats": len(outcomes),
        "median_regret": float(np.median(regrets)),
        "mean_regret": float(regrets.mean()),
        "p90_regret": float(np.percentile(regrets, 90)),
        "share_within_1pt": float(np.mean(regrets <= WITHIN_POINTS)),
        "mean_epochs": float(epochs.mean()),
        "max_epochs": int(epochs.max()),
        "mean_trials": float(np.mean([o.trials for o in outcomes])),
        "mean_known": float(np.mean([o.known for o in outcomes])),   # completed configurations proposed again
    }


def compare(curves: Curves, budget_share: float = GOAL_EPOCH_SHARE, repeats: int = 100, seed: int = 0,
            grace_period: int = 1, reduction_factor: int = 2) -> dict[str, Any]:
    """All four strategies replayed over the curves, each but the grid with ``floor(budget_share * grid
    epochs)`` epochs, and whether tpe+asha met the goal (judged against GOAL_EPOCH_SHARE, not budget_share,
    so a larger budget cannot buy the goal)."""
    grid_epochs = curves.n_configs * curves.epochs
    budget = math.floor(budget_share * grid_epochs)
    if budget < 1:
        raise ValueError(f"budget_share {budget_share} of {grid_epochs} grid epochs leaves no epoch to spend")
    summaries = {
        strategy: summarize(replay(curves, strategy, budget_epochs=budget, repeats=repeats, seed=seed,
                                   grace_period=grace_period, reduction_factor=reduction_factor))
        for strategy in STRATEGIES}
    best = curves.best_index
    return {
        "strategies": summaries, "grid_epochs": grid_epochs, "budget_epochs": budget, "budget_share": budget_share,
        "epochs_per_trial": curves.epochs, "n_configs": curves.n_configs, "repeats": repeats, "seed": seed,
        "grace_period": grace_period, "reduction_factor": reduction_factor,
        "true_best": {"params": dict(curves.configs[best]), "value": float(curves.true_values[best])},
        "seed_noise_points": seed_noise(curves), "spread_points": spread(curves),
        "goal": _goal(summaries, grid_epochs),
    }


def _goal(summaries: Mapping[str, Mapping[str, float]], grid_epochs: int) -> dict[str, Any]:
    searched, baseline = summaries[GOAL_STRATEGY], summaries[BASELINE_STRATEGY]
    checks = {
        "median_regret": searched["median_regret"] <= GOAL_MEDIAN_REGRET,
        "epochs": searched["mean_epochs"] <= GOAL_EPOCH_SHARE * grid_epochs,
        "beats_random": searched["mean_regret"] < baseline["mean_regret"],
    }
    return {"met": all(checks.values()), "checks": checks, "strategy": GOAL_STRATEGY,
            "median_regret_max": GOAL_MEDIAN_REGRET, "epoch_share_max": GOAL_EPOCH_SHARE,
            "baseline": BASELINE_STRATEGY}


def markdown(result: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table and one line on the goal."""
    grid_epochs = result["grid_epochs"]
    lines = ["| strategy | repeats | median regret | p90 regret | share within 1 pt | mean epochs (share of grid) "
             "| mean trials |", "|---|---|---|---|---|---|---|"]
    for strategy, s in result["strategies"].items():
        lines.append(f"| {strategy} | {s['repeats']} | {s['median_regret']:.2f} | {s['p90_regret']:.2f} "
                     f"| {s['share_within_1pt']:.0%} | {s['mean_epochs']:.1f} ({s['mean_epochs'] / grid_epochs:.0%}) "
                     f"| {s['mean_trials']:.1f} |")
    goal, searched = result["goal"], result["strategies"][GOAL_STRATEGY]
    baseline = result["strategies"][goal["baseline"]]
    lines += ["", (f"Goal: {goal['strategy']} median regret <= {goal['median_regret_max']:g} pt "
                   f"(got {searched['median_regret']:.2f}), mean epochs <= {goal['epoch_share_max']:.0%} of the "
                   f"grid's {grid_epochs} (got {searched['mean_epochs'] / grid_epochs:.0%}), mean regret below "
                   f"{goal['baseline']}'s (got {searched['mean_regret']:.2f} vs {baseline['mean_regret']:.2f}): "
                   f"{'met' if goal['met'] else 'NOT met'}.")]
    return "\n".join(lines)
