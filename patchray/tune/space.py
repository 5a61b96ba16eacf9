"""The search space of ``configs/tune.yaml``: parameters of pretraining (the pretext task) and of fine-tuning.

Pure data and checks, no Ray: every key must name a real config field, every
candidate value must pass that config's own validation, and ranges must make
sense, so that a typo fails at load time and not in trial 37.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

from patchray import config as configlib
from patchray.train.config import FinetuneConfig, PretrainConfig

SECTIONS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
# "task.grid: 3x6" stands for task.preset=null, task.cols=3, task.rows=6.
GRID_KEY = "task.grid"
# Pretext combinations checked one by one at load time (each is a config build, ~50 us).
PRODUCT_LIMIT = 20000
_GRID = re.compile(r"^(\d+)x(\d+)$")


class SpaceError(ValueError):
    pass


@dataclass(frozen=True)
class Param:
    section: str        # "pretrain" or "finetune"
    key: str            # dotted key in that section's config
    kind: str           # one of DISTRIBUTIONS
    values: tuple = ()  # choice
    low: float | None = None
    high: float | None = None

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    def candidates(self) -> list:
        """Values to check against the config: all choices, or the ends of a range."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "randint":
            return [int(self.low), int(self.high) - 1]
        return [self.low, self.high]


def grid_overrides(value: str) -> dict:
    match = _GRID.match(str(value))
    if not match:
        raise SpaceError(f"{GRID_KEY}: {value!r} is not COLSxROWS (e.g. 3x6)")
    return {"task.preset": None, "task.cols": int(match.group(1)), "task.rows": int(match.group(2))}


def overrides_for(section: str, key: str, value) -> dict:
    if section == "pretrain" and key == GRID_KEY:
        return grid_overrides(value)
    return {key: value}


def _nested(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_section(section: str, base: dict, flat_overrides: dict):
    """The config of ``section`` from a base mapping plus dotted overrides; ConfigError names the key."""
    return configlib.build(SECTIONS[section], _merge(base, _nested(flat_overrides)))


def _parse_param(section: str, key: str, spec: Any) -> Param:
    where = f"space.{section}.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SpaceError(f"{where}: expected one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {spec!r}")
    kind, arg = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise SpaceError(f"{where}: unknown distribution {kind!r}; known: {list(DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise SpaceError(f"{where}: choice needs a non-empty list, got {arg!r}")
        return Param(section, key, kind, values=tuple(arg))
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                           for v in arg)):
        raise SpaceError(f"{where}: {kind} needs [low, high], got {arg!r}")
    low, high = arg
    if not low < high:
        raise SpaceError(f"{where}: low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: loguniform needs low > 0, got {low}")
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise SpaceError(f"{where}: randint needs integer bounds, got {arg!r}")
    return Param(section, key, kind, low=low, high=high)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @classmethod
    def from_dict(cls, space: dict) -> SearchSpace:
        """The parameters of a ``space`` mapping, each checked on its own (section, distribution, bounds).
        What the values do to the configs is :meth:`check`'s: it builds every pretext combination, too costly
        for each time a config is built."""
        if not isinstance(space, dict) or not space:
            raise SpaceError("space: expected sections 'pretrain' and/or 'finetune' with parameters")
        unknown = set(space) - set(SECTIONS)
        if unknown:
            raise SpaceError(f"space: unknown section(s) {sorted(unknown)}; known: {sorted(SECTIONS)}")
        params = []
        for section, entries in space.items():
            if not isinstance(entries, dict):
                raise SpaceError(f"space.{section}: expected a mapping of dotted keys to distributions")
            for key, spec in entries.items():
                param = _parse_param(section, key, spec)
                if section == "finetune" and key in ("init", "labels", "name", "out", "data"):
                    raise SpaceError(f"space.finetune.{key}: set by the tuner, not searchable")
                params.append(param)
        return cls(tuple(params))

    def check(self, base: dict) -> None:
        """Refuse a key the configs do not know, or a value that no configuration can take. Pretext values are
        judged together (48 px patches are fine in a 2x4 grid, not in a 4x8 one): a value is refused only if
        every combination with it is."""
        total, bad = self.infeasible_pretext(base.get("pretrain", {}))
        joint = 0 < total <= PRODUCT_LIMIT
        for param in self.params:
            for value in param.candidates():
                if joint and param.section == "pretrain":
                    failing = [reason for sample, reason in bad if sample[param.name] == value]
                    combos = total // len(param.candidates())
                    if len(failing) == combos:
                        raise SpaceError(f"space.{param.name}: value {value!r} is refused: {failing[0]}")
                    continue
                try:
                    build_section(param.section, base.get(param.section, {}),
                                  overrides_for(param.section, param.key, value))
                except (configlib.ConfigError, SpaceError) as e:
                    raise SpaceError(f"space.{param.name}: value {value!r} is refused: {e}") from None

    def pretext_params(self) -> list[Param]:
        return [p for p in self.params if p.section == "pretrain"]

    def split(self, sample: dict) -> tuple[dict, dict]:
        """A trial's sampled values (keyed by Param.name) as dotted overrides for pretrain and finetune."""
        pretrain, finetune = {}, {}
        for p in self.params:
            if p.name not in sample:
                raise SpaceError(f"sample lacks {p.name}")
            target = pretrain if p.section == "pretrain" else finetune
            target.update(overrides_for(p.section, p.key, sample[p.name]))
        return pretrain, finetune

    def infeasible_pretext(self, base: dict, limit: int | None = None) -> tuple[int, list[tuple[dict, str]]]:
        """Every combination of the pretext parameters' candidates that its config refuses together (a patch
        and grid that do not fit the crop, say, or a jitter of half the cell pitch or more, which would let two
        cells cut the same patch: ``PatchGrid.max_jitter``), with the reason; and how many combinations there
        are."""
        params = self.pretext_params()
        total = math.prod(len(p.candidates()) for p in params)
        if not params or total > (limit or PRODUCT_LIMIT):
            return total, []
        bad = []
        for values in itertools.product(*(p.candidates() for p in params)):
            sample = {p.name: v for p, v in zip(params, values)}
            overrides = {}
            for p, v in zip(params, values):
                overrides.update(overrides_for(p.section, p.key, v))
            try:
                build_section("pretrain", base, overrides)
            except (configlib.ConfigError, SpaceError) as e:
                bad.append((sample, str(e)))
        return total, bad


def feasible_pretext(space: SearchSpace, base: dict,
                     infeasible: tuple[int, list[tuple[dict, str]]] | None = None) -> list[dict] | None:
    """Every combination of the pretext choices that its config accepts, as samples keyed by Param.name, in
    product order; None when it cannot be enumerated (a pretext parameter is a range, or there are more than
    ``PRODUCT_LIMIT`` combinations). ``infeasible``: ``space.infeasible_pretext(base)`` when the caller has it
    already (it builds every combination's config)."""
    params = space.pretext_params()
    if any(p.kind != "choice" for p in params):
        return None
    total, bad = infeasible if infeasible is not None else space.infeasible_pretext(base)
    if params and total > PRODUCT_LIMIT:
        return None
    names = [p.name for p in params]
    refused = {tuple(sample[n] for n in names) for sample, _ in bad}
    return [dict(zip(names, values)) for values in itertools.product(*(p.values for p in params))
            if values not in refused]


def _conditional_name(param: Param, allowed: list) -> str:
    """The Optuna name of a parameter whose choices were narrowed: one name per narrowed set, so that each name
    always has the same choices (Optuna refuses a parameter whose choices change between trials) and TPE
    models each set on its own. No "/": Ray's OptunaSearch splits names on it."""
    if len(allowed) == len(param.values):
        return param.name
    return f"{param.name}|" + ",".join(str(v) for v in allowed)


@dataclass(frozen=True)
class FeasibleSpaceSampler:
    """A define-by-run space for Optuna that never proposes a pretext combination its config refuses.

    The pretext parameters are drawn in order; each one's choices are narrowed to the values that some
    feasible combination continues with, given those already drawn (patch size 48: only the grids it fits).
    A narrowed parameter is suggested under its own name (``_conditional_name``). The other parameters are
    drawn as declared. Returns every parameter under its plain name (``Param.name``): what the trial reads."""
    space: SearchSpace
    feasible: tuple  # of tuples of pretext values, in pretext_params() order

    @classmethod
    def build(cls, space: SearchSpace, base_pretrain: dict, combos: list[dict] | None = None
              ) -> FeasibleSpaceSampler:
        """``combos``: ``feasible_pretext(space, base_pretrain)`` when the caller has it already."""
        combos = combos if combos is not None else feasible_pretext(space, base_pretrain)
        if combos is None:
            raise SpaceError("a feasible-only space needs the pretext parameters as choice lists of at most "
                             f"{PRODUCT_LIMIT} combinations")
        if not combos and space.pretext_params():
            raise SpaceError("no pretext combination of the space fits the crop")
        names = [p.name for p in space.pretext_params()]
        return cls(space, tuple(tuple(c[n] for n in names) for c in combos))

    def _allowed(self, i: int, prefix: tuple) -> list:
        """The choices of the i-th pretext parameter that some feasible combination continues ``prefix`` with
        (the values drawn for the parameters before it), in the parameter's own order."""
        param = self.space.pretext_params()[i]
        return [v for v in param.values if any(c[:i] == prefix and c[i] == v for c in self.feasible)]

    def distributions(self) -> dict:
        """Every Optuna name this space can suggest, with its distribution (narrowed names included): what an
        earlier study's trials must match to warm-start this one."""
        import optuna.distributions as d

        names: dict = {}
        for i, param in enumerate(self.space.pretext_params()):
            for prefix in {c[:i] for c in self.feasible}:
                allowed = self._allowed(i, prefix)
                names[_conditional_name(param, allowed)] = d.CategoricalDistribution(allowed)
        for param in self.space.params:
            if param.section != "pretrain":
                names[param.name] = optuna_distribution(param)
        return names

    def __call__(self, trial) -> dict:
        chosen: dict = {}
        prefix: tuple = ()
        for i, param in enumerate(self.space.pretext_params()):
            allowed = self._allowed(i, prefix)
            value = trial.suggest_categorical(_conditional_name(param, allowed), allowed)
            chosen[param.name] = value
            prefix += (value,)
        for param in self.space.params:
            if param.section == "pretrain":
                continue
            chosen[param.name] = _suggest(trial, param)
        return chosen


def _suggest(trial, param: Param):
    if param.kind == "choice":
        return trial.suggest_categorical(param.name, list(param.values))
    if param.kind == "randint":
        return trial.suggest_int(param.name, int(param.low), int(param.high) - 1)
    return trial.suggest_float(param.name, param.low, param.high, log=param.kind == "loguniform")


def optuna_distribution(param: Param):
    """The Optuna distribution of a parameter as ``_suggest`` draws it."""
    import optuna.distributions as d

    if param.kind == "choice":
        return d.CategoricalDistribution(list(param.values))
    if param.kind == "randint":
        return d.IntDistribution(int(param.low), int(param.high) - 1)
    return d.FloatDistribution(param.low, param.high, log=param.kind == "loguniform")
