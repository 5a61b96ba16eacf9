"""Pretraining runs once per distinct pretext configuration and data, shared by trials and experiments.

A cache entry lives at ``<root>/<key>/`` where the key is a content hash of
everything that changes the pretrained weights: the pretraining config minus
names and places, the training workers as planned (their number sets the global
batch; GPU or CPU sets the precision), and a fingerprint of the shards' Parquet
footers.

A lock per key makes a second trial that needs the same missing entry wait for
the first instead of training it again. The lock is an ``flock`` on
``<root>/<key>.lock``; where the filesystem has no ``flock`` (some network
filesystems), an exclusive-create lock file ``<key>.lock.excl`` holding its
owner, kept fresh by a heartbeat so that a dead owner's lock is taken over.
Waiting is bounded and logged, and names the owner.

``complete.json`` is written last, atomically, so a crash mid-training never
leaves an entry that looks finished. A training that raises leaves
``failed.json`` instead, and later calls for that key refuse at once, naming the
error, until the marker is deleted or ``retry_failed=True`` is passed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from patchray import config as configlib
from patchray.locks import LOCK_LOG_EVERY_S, STALE_AFTER_S, LockTimeout, check_lock_mode, hold, read_json
from patchray.train.config import PretrainConfig

COMPLETE = "complete.json"
FAILED = "failed.json"  # written when train(folder) raised: later calls refuse instead of training again
USES = "uses.jsonl"  # one line per get_or_train: who used the entry and whether that call trained it
# Fields that do not change what is learned: where outputs go, how the work is spread. Of ``resources``, the
# number of workers and their device do change it: the key takes them as planned (see pretext_key).
_NOT_CONTENT = ("name", "out", "storage", "resources", "max_failures", "data", "synthetic")

# Waiting for another process's training of the same entry: the longest we wait (locks.hold says so as it waits).
LOCK_TIMEOUT_S = 6 * 3600.0


class CacheLockTimeout(LockTimeout):
    """Another process held a cache entry's lock for longer than we were willing to wait."""


class CachedFailure(RuntimeError):
    """The entry's training failed earlier (``failed.json``); not retried unless asked to."""


# ----------------------------------------------------------------------------------------------- key


def pretext_key(cfg: PretrainConfig, fingerprint: str, *, num_workers: int | None = None,
                use_gpu: bool | None = None) -> str:
    """Content hash of what changes the pretrained weights.

    ``num_workers`` and ``use_gpu`` are the training workers as actually planned (``ResourcePlan``): the
    global batch is ``num_workers x patches_per_step``, and bf16 autocast (``amp``) and the default memory format
    apply on GPUs only. They default to ``cfg.resources``; where that leaves them to the planner (None), the
    key cannot be made without them."""
    workers = num_workers if num_workers is not None else cfg.resources.num_workers
    gpu = use_gpu if use_gpu is not None else cfg.resources.use_gpu
    if workers is None or gpu is None:
        raise ValueError("pretext_key needs the training workers as planned: resources.num_workers / use_gpu "
                         f"are {cfg.resources.num_workers} / {cfg.resources.use_gpu} (None: decided by the "
                         "planner), so pass num_workers= and use_gpu= from the ResourcePlan")
    content = {k: v for k, v in configlib.to_dict(cfg).items() if k not in _NOT_CONTENT and k != "amp"}
    content["training"] = {"num_workers": int(workers), "global_batch": int(workers) * cfg.patches_per_step,
                           "device": "gpu" if gpu else "cpu",
                           "precision": "bf16" if cfg.amp and gpu else "fp32"}  # autocast is off on CPUs
    text = json.dumps({"config": content, "data": fingerprint}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- cache


class PretrainCache:
    def __init__(self, root: str | os.PathLike, lock_mode: str | None = None):
        """``lock_mode``: ``auto`` (flock, and lock files where the filesystem has no flock), ``flock``, or
        ``file`` (lock files always: for a filesystem whose flock succeeds without locking across nodes).
        Default: $PATCHRAY_CACHE_LOCK, else auto."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock_mode = check_lock_mode(lock_mode)

    def entry(self, key: str) -> Path:
        return self.root / key

    def is_complete(self, key: str) -> bool:
        return (self.entry(key) / COMPLETE).exists()

    def failure(self, key: str) -> dict | None:
        """What ``failed.json`` of the entry says, or None when it has none (or is complete)."""
        path = self.entry(key) / FAILED
        if self.is_complete(key) or not path.exists():
            return None
        return read_json(path) or {"error": "(unreadable failed.json)"}

    @contextlib.contextmanager
    def lock(self, key: str, *, timeout_s: float = LOCK_TIMEOUT_S, log: Callable[[str], None] | None = print,
             log_every_s: float = LOCK_LOG_EVERY_S, user: str = "", stale_after_s: float = STALE_AFTER_S,
             heartbeat_s: float | None = None):
        """Hold the key's lock; wait at most ``timeout_s`` for it (CacheLockTimeout), saying so through
        ``log`` every ``log_every_s``."""
        with hold(self.root / f"{key}.lock", f"pretraining cache entry {key}", timeout_s=timeout_s, log=log,
                  log_every_s=log_every_s, user=user, mode=self.lock_mode, stale_after_s=stale_after_s,
                  heartbeat_s=heartbeat_s, tag="cache", error=CacheLockTimeout):
            yield

    def _record_use(self, key: str, user: str, trained: bool) -> None:
        with open(self.entry(key) / USES, "a") as handle:  # one short append: atomic enough between trials
            handle.write(json.dumps({"user": user, "trained": trained, "time": time.time()}) + "\n")

    def _refuse_if_failed(self, key: str) -> None:
        failed = self.failure(key)
        if failed is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(failed["time"])) if "time" in failed else "?"
            by = f" by {failed['user']}" if failed.get("user") else ""
            raise CachedFailure(
                f"pretraining cache entry {key} failed earlier ({when}{by}): {failed.get('error')}. Not training "
                f"it again: delete {self.entry(key) / FAILED} (or pass retry_failed=True) to retry")

    def _write_failure(self, folder: Path, error: BaseException, user: str) -> None:
        text = "".join(traceback.format_exception(error))
        record = {"error": f"{type(error).__name__}: {error}", "time": time.time(), "user": user,
                  "host": socket.gethostname(), "pid": os.getpid(), "traceback": text[-20000:]}
        tmp = folder / f".{FAILED}.tmp"
        tmp.write_text(json.dumps(record, indent=2, default=str))
        os.replace(tmp, folder / FAILED)

    def get_or_train(self, key: str, train: Callable[[Path], dict], user: str = "", *,
                     retry_failed: bool = False, lock_timeout_s: float = LOCK_TIMEOUT_S,
                     log: Callable[[str], None] | None = print,
                     log_every_s: float = LOCK_LOG_EVERY_S) -> tuple[Path, bool]:
        """The entry's folder, and whether this call trained it. ``train(folder)`` returns a summary dict.

        A ``train`` that raises leaves ``failed.json`` and re-raises; while it is there, calls for the key
        raise CachedFailure at once (``retry_failed=True`` trains again). Waiting for another process that
        trains the key is bounded by ``lock_timeout_s`` (CacheLockTimeout)."""
        if not self.is_complete(key):
            if not retry_failed:
                self._refuse_if_failed(key)
            with self.lock(key, timeout_s=lock_timeout_s, log=log, log_every_s=log_every_s, user=user):
                if not self.is_complete(key):  # else trained by whoever held the lock before us
                    if not retry_failed:
                        self._refuse_if_failed(key)  # whoever held it before us failed
                    folder = self.entry(key)
                    folder.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(FileNotFoundError):
                        (folder / FAILED).unlink()
                    try:
                        summary = train(folder)
                    except Exception as e:  # not KeyboardInterrupt / SystemExit: a stopped run may resume
                        try:
                            self._write_failure(folder, e, user)
                        except OSError as unwritten:  # the training's error matters more than this one
                            if log is not None:
                                log(f"[cache] could not write {folder / FAILED}: {unwritten}")
                        raise
                    tmp = folder / f".{COMPLETE}.tmp"
                    tmp.write_text(json.dumps(summary, indent=2, default=str))
                    os.replace(tmp, folder / COMPLETE)  # last: only a finished entry looks finished
                    self._record_use(key, user, True)
                    return folder, True
        self._record_use(key, user, False)
        return self.entry(key), False
