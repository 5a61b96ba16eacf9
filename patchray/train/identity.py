"""Which run a checkpoint belongs to, so that a run is only ever resumed by the same run.

A run's *identity* is everything that changes what it learns: its resolved config minus where and how it runs
(names, folders, storage, failure budget, resource pinning), plus a fingerprint of its data (the shards'
Parquet footers) and the number of training workers (with the per-worker batch, the global batch). It travels
in every checkpoint (``run.json``); before a job writes anything, the driver compares it with the last
checkpoint registered at the job's Ray Train location and refuses a mismatch, naming the keys that differ.

A run that continues a shorter finished one (pretraining's ``start_from``) is another run than a fresh one of
the same settings: ``start_from`` is part of its identity (left out while it is unset, so that the identities
of runs from before it existed still match). The run it continues must have the same identity but for
``epochs`` and ``start_from``, and fewer epochs (:func:`check_continuable`).
"""
from __future__ import annotations

import json
from typing import Any

from patchray.config import flatten
from patchray.tracking import TRACKING_KEYS
from patchray.train.checkpoint import RUN_FILE, load_checkpoint

# Top-level config keys that say where or how a run executes, not what it learns. The data keys are replaced
# by their fingerprints, the resources by the worker count actually planned.
NOT_IDENTITY = frozenset({"name", "out", "storage", "max_failures", "resources", "synthetic",
                          "data", "train_data", "val_data", "test_data",
                          # the online probe and the trackers measure on the side: they change no weight
                          "probe", *TRACKING_KEYS})
# Keys added after runs were already made, whose default keeps the old behaviour: at that default they are left
# out, so that a run made before the key existed still resumes (and is reused by compare_inits).
# channels_last was an identity key of pretraining before fine-tuning had it: an identity stored with it at its
# default compares equal to one without it (:func:`differences`). optim.fused changes how the update runs, not
# its rule: a run made with torch's default resumes with it.
LEFT_OUT_AT_DEFAULT = {"start_from": None, "label_seed": None, "transfer_blocks": None, "evaluate_test": True,
                       "cut_on": "worker", "cache_decoded": False, "channels_last": None, "optim.fused": True,
                       "grad_compression": "none", "optim.lr_scaling": "none", "optim.base_batch": 128,
                       "optim.warmup_epochs": 0.0}


# What may differ between a run and the shorter finished run it continues (``start_from``).
CONTINUABLE = frozenset({"epochs", "start_from"})
# Learning-rate schedules whose rate at an epoch depends on the total epoch count (``optim.lr_at_epoch``): a
# shorter run on such a schedule is not the beginning of a longer one, so continuing it is allowed but learns
# otherwise than a fresh longer run (and the Tune cache never does it).
SCHEDULES_SHAPED_BY_TOTAL = frozenset({"cosine"})


class RunMismatchError(ValueError):
    """A checkpoint at this run's location belongs to a run with other settings."""


class CannotContinueError(RunMismatchError):
    """The run named by ``start_from`` cannot be continued by this one: other settings, or not fewer epochs."""


def run_identity(config: dict, data: dict[str, str], workers: int) -> dict[str, Any]:
    """``config``: the resolved config as plain data; ``data``: fingerprint per input (``{"train": ...}``)."""
    identity = {k: v for k, v in flatten(config).items() if k.split(".", 1)[0] not in NOT_IDENTITY}
    identity |= {f"data.{name}": fingerprint for name, fingerprint in data.items()}
    identity["workers"] = workers
    # Through JSON and back, so that a stored identity compares equal to a fresh one (tuples, float repr).
    return json.loads(json.dumps(_defaults_left_out(identity), sort_keys=True, default=str))


def _defaults_left_out(identity: dict) -> dict:
    return {k: v for k, v in identity.items() if k not in LEFT_OUT_AT_DEFAULT or v != LEFT_OUT_AT_DEFAULT[k]}


_ABSENT = "<absent>"


def differences(stored: dict | None, current: dict) -> list[str]:
    """``key: stored -> current`` for every key whose value differs (a key only one side has included)."""
    # A stored identity may hold a key at a default that is left out today (written before the key was).
    stored, current = _defaults_left_out(stored or {}), _defaults_left_out(current)
    lines = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key, _ABSENT), current.get(key, _ABSENT)
        if old != new:
            lines.append(f"{key}: {old!r} -> {new!r}")
    return lines


def check_same_run(stored: dict | None, current: dict, where: str, epoch: int | None = None) -> None:
    changed = differences(stored, current)
    if changed:
        at = f" (after epoch {epoch + 1})" if epoch is not None else ""
        raise RunMismatchError(
            f"{where} holds a checkpoint{at} of a run with other settings; it would be resumed as if it were "
            f"this one. Differences (checkpoint -> this run): {'; '.join(changed)}. Run with the same settings "
            "to resume it, or choose another --name or --out for a new run")


def check_continuable(stored: dict | None, current: dict, where: str, epoch: int) -> None:
    """Refuse to start this run (identity ``current``) from the checkpoint ``where`` (identity ``stored``, last
    epoch ``epoch``, 0-based) unless only ``epochs`` / ``start_from`` differ and it has fewer epochs."""
    changed = differences(_without(stored or {}, CONTINUABLE), _without(current, CONTINUABLE))
    if changed:
        raise CannotContinueError(
            f"start_from: {where} is a run with other settings than this one; only epochs (and names and places) "
            f"may differ for this run to continue it. Differences ({where} -> this run): {'; '.join(changed)}")
    done, wanted = epoch + 1, current.get("epochs")
    if isinstance(wanted, int) and done >= wanted:
        raise CannotContinueError(
            f"start_from: {where} already trained {done} epoch(s), and this run asks for epochs={wanted}: nothing "
            f"is left to continue. Use {where} as it is, or ask for more than {done} epochs")


def _without(identity: dict, keys: frozenset) -> dict:
    return {k: v for k, v in identity.items() if k not in keys}


def location_path(location: tuple[str, str]) -> str:
    storage, name = location
    return f"{storage.rstrip('/')}/{name}"


def last_checkpoint(location: tuple[str, str]) -> tuple[int, dict | None] | None:
    """(epoch, identity) of the last checkpoint Ray Train registered at ``location`` (storage path, run name),
    or None when there is none. Only registered checkpoints count: one a crash left half-written is not."""
    import ray.train

    try:
        result = ray.train.Result.from_path(location_path(location))
    except RuntimeError:  # no run folder, or no checkpoint manager snapshot in it: nothing to resume
        return None
    checkpoint = result.checkpoint
    if checkpoint is None:
        return None
    fs, folder = checkpoint.filesystem, checkpoint.path.rstrip("/")
    try:
        with fs.open_input_stream(f"{folder}/{RUN_FILE}") as f:
            run = json.loads(f.read().decode())
        return run["epoch"], run.get("identity")
    except FileNotFoundError:  # written before run.json existed: the model file holds the same
        with checkpoint.as_directory() as local:
            state, _ = load_checkpoint(local)
        return state["epoch"], state.get("identity")


def check_resumable(location: tuple[str, str], identity: dict) -> int | None:
    """The epoch a run at ``location`` would resume after (None: it starts fresh); refuses another run's
    checkpoint with :class:`RunMismatchError`."""
    found = last_checkpoint(location)
    if found is None:
        return None
    epoch, stored = found
    check_same_run(stored, identity, location_path(location), epoch)
    return epoch
