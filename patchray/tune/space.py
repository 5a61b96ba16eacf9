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
