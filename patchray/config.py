"""Configuration as plain data: dataclass defaults, then a YAML file, then ``key=value`` overrides.

Nested sections are addressed with dots (``task.patch_size=24``). Unknown keys
and values of the wrong type are refused with a message that names the key, so
a typo never silently falls back to a default.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
# YAML 1.1 (PyYAML) reads "1e-3" as a string (it wants "1.0e-3"); a number written so is still a number.
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class ConfigError(ValueError):
    pass


def _type_name(tp) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return f"one of {list(typing.get_args(tp))}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str):
    """``value`` as type ``tp``, or ConfigError. Only lossless conversions are made (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not {' or '.join(_type_name(o) for o in options)}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [value]  # a single path where a list is expected
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping), got {value!r}")
        return build(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # a NaN learning rate trains nothing and compares false to every bound
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {tp}")


def _fields(cls) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _has_path(tree: dict, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _refuse_old_keys(cls, values: dict, prefix: str) -> None:
    """A key a config class has renamed (``RENAMED_KEYS``: old dotted key -> new) or derives from another
    (``DERIVED_KEYS``: dotted key -> the key it follows) is refused with the key to set instead, so an old config
    file fails loudly rather than silently training with a default."""
    for old, new in getattr(cls, "RENAMED_KEYS", {}).items():
        if _has_path(values, old):
            raise ConfigError(f"{prefix}{old} is now {prefix}{new}: rename it in the config or command line")
    for derived, source in getattr(cls, "DERIVED_KEYS", {}).items():
        if _has_path(values, derived):
            raise ConfigError(f"{prefix}{derived} follows {prefix}{source} here: set {prefix}{source} instead")


def build(cls: type[T], values: dict, prefix: str = "") -> T:
    """An instance of dataclass ``cls`` from a (nested) mapping; missing keys keep their defaults."""
    not_text = [k for k in values if not isinstance(k, str)]
    if not_text:
        # YAML 1.1 reads an unquoted on / off / yes / no / true as a boolean, and a number as a number
        raise ConfigError(f"key(s) {[prefix + str(k) for k in not_text]} are not names (YAML reads an unquoted "
                          "on, off, yes, no as true/false): quote them, or check the spelling")
    _refuse_old_keys(cls, values, prefix)
    known = _fields(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {[prefix + k for k in unknown]}; known keys in this section: "
                          f"{sorted(prefix + k for k in known)}")
    kwargs = {name: _coerce(values[name], known[name][1], prefix + name) for name in values}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def to_dict(config) -> dict:
    """Plain nested dict of a config (lists, not tuples), ready for YAML. Keys a class derives from others
    (``DERIVED_KEYS``) are left out: they are not settings, and building from the dict sets them again."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            derived = getattr(type(v), "DERIVED_KEYS", {})
            tree = {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
            for key in derived:
                *parents, leaf = key.split(".")
                node = tree
                for part in parents:
                    node = node.get(part) if isinstance(node, dict) else None
                if isinstance(node, dict):
                    node.pop(leaf, None)
            return tree
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(tree: dict, cls, path: list[str], value, full_key: str) -> None:
    known = _fields(cls)
    head = path[0]
    if head not in known:
        prefix = full_key[: len(full_key) - len(".".join(path))]
        raise ConfigError(f"unknown key {full_key!r}; known keys here: {sorted(prefix + k for k in known)}")
    tp = known[head][1]
    if len(path) == 1:
        tree[head] = value
        return
    if typing.get_origin(tp) is dict:
        # A free-form mapping (e.g. the tuner's base configs): a dotted key goes inside it, on top of what the
        # file or the field's default holds, so `finetune.epochs=8` keeps the other defaults of `finetune`.
        if tree.get(head) is None:
            field = known[head][0]
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            tree[head] = copy.deepcopy(default) if isinstance(default, dict) else {}
        node = tree[head]
        for part in path[1:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{full_key!r}: {part!r} is not a mapping")
        node[path[-1]] = value
        return
    if not dataclasses.is_dataclass(tp):
        raise ConfigError(f"{full_key!r}: {head!r} is not a section")
    sub = tree.setdefault(head, {})
    if not isinstance(sub, dict):
        raise ConfigError(f"{full_key!r}: {head!r} is not a section")
    _set_path(sub, tp, path[1:], value, full_key)


def load(cls: type[T], file: str | Path | None = None, overrides: list[str] = (), flags: dict | None = None) -> T:
    """Defaults of ``cls``, updated by a YAML ``file``, then by ``flags`` (``{dotted key: value}``, as a
    command line's flags give them), then by ``key=value`` ``overrides``: the last one wins."""
    tree: dict = {}
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        tree = loaded
    given = [(key.split("."), value) for key, value in (flags or {}).items()]
    given += [parse_override(text) for text in overrides]
    for path_parts, value in given:
        single: dict = {}
        node = single
        for part in path_parts[:-1]:
            node = node.setdefault(part, {})
        node[path_parts[-1]] = value
        _refuse_old_keys(cls, single, "")
        _set_path(tree, cls, path_parts, value, ".".join(path_parts))
    try:
        return build(cls, tree)
    except ConfigError as e:
        where = f"{file}: " if file else ""
        raise ConfigError(f"{where}{e}") from None


def dump_yaml(config, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return path


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A resolved config as plain data, flat: ``{"optim.lr": 0.01, ...}`` (tuples as lists; an empty section
    stays one key)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = list(value) if isinstance(value, tuple) else value
    return flat
