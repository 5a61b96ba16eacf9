"""Pretraining runs once per distinct pretext configuration and data, shared by trials and experiments.

A cache entry lives at ``<root>/<key>/`` where the key is a content hash of
everything that changes the pretrained weights: the pretraining config minus
names and places, the training workers as planned (their number sets the global
batch; GPU or CPU sets the precision), a fingerprint of the shards' Parquet
footers, and the code version: ``patchray.__version__`` and a hash of the source
of the modules that decide what is learned (``LEARNING_CODE``: models, patches,
the training loop, epoch and optimiser, the input pipeline, reading and decoding
shards, the configs). Editing one of those starts a new set of entries; editing
anything else (Tune, reports, plots, benchmarks, the command line) keeps them.
The code hash is computed once per process.

Multi-fidelity over pretraining epochs: a longer pretraining continues the
longest complete shorter entry of its *lineage* rather than starting over. The
lineage key is the same content hash without ``epochs``, except where the
learning-rate schedule depends on the total epoch count (``cosine``): there the
first epochs of a short run follow another schedule than a long run's, so the
epochs stay in the lineage key and such entries are only ever trained from the
start. A continued entry therefore learns what a fresh one would (weights,
optimizer state and epoch counter carry over; each epoch's patches and learning
rate depend only on the epoch), up to what a resumed run also differs in (the
random state of dropout restarts from the seed; Ray Data's delivery order), and
it takes the same key: the key names content, not history. With a cosine
schedule that would not hold, hence its separate lineages. Each complete entry
records its lineage and epochs, and the entry it continued with the epochs it
took from it (``lineage.json``; ``continued_from``, ``from_epoch``); the entry's
run itself names the folder it continued (``start_from`` in its config and run
identity). See :func:`cached_pretraining`.

A lock per key makes a second trial that needs the same missing entry wait for
the first instead of training it again. The lock is an ``flock`` on
``<root>/<key>.lock``; where the filesystem has no ``flock`` (some network
filesystems), an exclusive-create lock file ``<key>.lock.excl`` holding its
owner, kept fresh by a heartbeat so that a dead owner's lock is taken over.
Waiting is bounded and logged, and names the owner.

``complete.json`` is written last, atomically, so a crash mid-training never
leaves an entry that looks finished. A training that raises leaves
``failed.json`` instead, and later calls for that key refuse at once, naming the
error, who failed and when, until the marker is deleted or ``retry_failed=True``
is passed: every trial that needs the entry would fail the same way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import patchray
from patchray import config as configlib
from patchray.locks import LOCK_LOG_EVERY_S, STALE_AFTER_S, LockTimeout, check_lock_mode, hold, read_json
from patchray.tracking import TRACKING_KEYS
from patchray.train.checkpoint import RUN_FILE, final_state
from patchray.train.config import PretrainConfig
from patchray.train.identity import SCHEDULES_SHAPED_BY_TOTAL, CannotContinueError

COMPLETE = "complete.json"
FAILED = "failed.json"  # written when train(folder) raised: later calls refuse instead of training again
USES = "uses.jsonl"  # one line per get_or_train: who used the entry and whether that call trained it
LINEAGE = "lineage.json"  # lineage key, epochs, and the entry it continued (cached_pretraining)
# Fields that do not change what is learned: where outputs go, how the work is spread, what is measured on the
# side (the online probe embeds in eval mode, draws no random number and steps nothing), and which shorter run a
# run continued (the key is about content; see the module docstring). Of ``resources``, the number of workers
# and their device do change it: the key takes them as planned (see pretext_key).
_NOT_CONTENT = ("name", "out", "storage", "resources", "max_failures", "data", "synthetic", "start_from", "probe",
                *TRACKING_KEYS)

# The sources that decide what pretraining learns, relative to the patchray package (a folder: every .py under
# it). Left out on purpose: tune/, report/, bench/, experiments/, cli, console, locks, Ray plumbing (runner,
# resources, ray_compat), identity/telemetry/rows bookkeeping, writing shards (the data fingerprint covers the
# data) and fine-tuning.
LEARNING_CODE = (
    "config.py", "accel.py", "pipeline.py", "models", "patches",
    "shards/reader.py", "shards/schema.py", "shards/decode.py", "shards/device_decode.py", "shards/images.py",
    "train/config.py", "train/epoch.py", "train/optim.py", "train/pretrain.py", "train/pretrain_loop.py",
    "train/worker.py",
)
PACKAGE_ROOT = Path(patchray.__file__).resolve().parent

# Waiting for another process's training of the same entry: the longest we wait (locks.hold says so as it waits).
LOCK_TIMEOUT_S = 6 * 3600.0


class CacheLockTimeout(LockTimeout):
    """Another process held a cache entry's lock for longer than we were willing to wait."""


class CachedFailure(RuntimeError):
    """The entry's training failed earlier (``failed.json``); not retried unless asked to."""


# ----------------------------------------------------------------------------------------------- key


def source_files(root: Path, names: Iterable[str]) -> list[Path]:
    """The files ``names`` (paths relative to ``root``; a folder stands for every .py under it), sorted. A
    listed path that does not exist is an error: a renamed module would otherwise drop out of the hash."""
    found = set()
    for name in names:
        path = root / name
        if path.is_dir():
            found.update(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.is_file():
            found.add(path)
        else:
            raise FileNotFoundError(f"{path}: listed as code that decides what pretraining learns (LEARNING_CODE "
                                    "in patchray/tune/cache.py) but missing; update the list")
    return sorted(found)


def code_hash(root: Path = PACKAGE_ROOT, names: Iterable[str] = LEARNING_CODE) -> str:
    """A short hash of the files ``names`` under ``root``: their paths (relative to ``root``) and bytes."""
    digest = hashlib.sha256()
    for path in source_files(root, names):
        data = path.read_bytes()
        # path and length first, so that no two different sets of files hash alike
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:12]


@functools.cache
def code_version() -> str:
    """``<patchray.__version__>+<code_hash()>`` (the hash alone without a version), computed once per process."""
    version = getattr(patchray, "__version__", None)
    return f"{version}+{code_hash()}" if version else code_hash()


def _content(cfg: PretrainConfig, num_workers: int | None, use_gpu: bool | None) -> dict:
    """What changes the pretrained weights, from the config and the planned workers (see pretext_key)."""
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
    return content


def _hash(content: dict, fingerprint: str, code: str) -> str:
    text = json.dumps({"config": content, "data": fingerprint, "code": code}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pretext_key(cfg: PretrainConfig, fingerprint: str, *, num_workers: int | None = None,
                use_gpu: bool | None = None, code: str | None = None) -> str:
    """Content hash of what changes the pretrained weights.

    ``num_workers`` and ``use_gpu`` are the training workers as actually planned (``ResourcePlan``): the
    global batch is ``num_workers x patches_per_step``, and bf16 autocast (``amp``) and the default memory format
    apply on GPUs only. They default to ``cfg.resources``; where that leaves them to the planner (None), the
    key cannot be made without them. ``code``: the code version, by default this process's ``code_version()``."""
    return _hash(_content(cfg, num_workers, use_gpu), fingerprint, code if code is not None else code_version())


def lineage_key(cfg: PretrainConfig, fingerprint: str, *, num_workers: int | None = None,
                use_gpu: bool | None = None, code: str | None = None) -> str:
    """The key of every pretraining that differs from this one at most in ``epochs``, where a shorter one is the
    beginning of a longer one: ``pretext_key`` without ``epochs``, unless the learning-rate schedule depends on
    the total epoch count (then with it: each epoch count its own lineage, never continued)."""
    content = _content(cfg, num_workers, use_gpu)
    if cfg.optim.schedule not in SCHEDULES_SHAPED_BY_TOTAL:
        del content["epochs"]
    # amp as written, not only the precision it gives: a continued run must have the run identity of the one it
    # continues (patchray.train.identity), which holds amp even on CPUs, where it changes nothing.
    content["amp"] = cfg.amp
    return "lineage-" + _hash(content, fingerprint, code if code is not None else code_version())


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
            raise CachedFailure(self._failure_message(key, failed))

    def _failure_message(self, key: str, failed: dict) -> str:
        """For the next trial that needs the entry: which entry, what failed, who and when, how to retry."""
        when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(failed["time"]))
                if isinstance(failed.get("time"), (int, float)) else "at an unknown time")
        who = [f"by {failed['user']}" if failed.get("user") else "",
               f"pid {failed['pid']} on {failed.get('host', '?')}" if failed.get("pid") else ""]
        marker = self.entry(key) / FAILED
        return (f"the pretraining of cache entry {self.entry(key)} failed earlier ({when}, "
                f"{', '.join(w for w in who if w) or 'by an unknown process'}): {failed.get('error')}. Not training "
                f"it again, since every trial that needs it would fail the same way; the traceback is in {marker}. "
                f"To retry (after fixing the cause), delete {marker}, or pass retry_failed=True")

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


# ----------------------------------------------------------------------------------------- lineage


@dataclass(frozen=True)
class Pretrained:
    """What :func:`cached_pretraining` found or trained."""
    key: str
    folder: Path
    trained: bool                # trained by this call (else taken from the cache)
    continued_from: str | None   # the key of the shorter entry it continued, if it did
    from_epoch: int | None       # the epochs it took from that entry (it trained from_epoch + 1 .. epochs)

    def describe(self) -> str:
        if not self.trained:
            how = "taken from the cache"
        elif self.continued_from:
            how = f"trained now, continuing the {self.from_epoch}-epoch entry {self.continued_from}"
        else:
            how = "trained now"
        return f"pretraining {self.key}: {how} ({self.folder})"


def _continuable(folder: Path) -> bool:
    """A complete entry whose last checkpoint (weights, optimizer, epoch) a longer run can start from."""
    return (folder / COMPLETE).exists() and (final_state(folder) / RUN_FILE).exists()


def longest_shorter_entry(cache: PretrainCache, lineage: str, epochs: int) -> tuple[str, int] | None:
    """(key, epochs) of the complete entry of ``lineage`` with the most epochs below ``epochs``, or None.
    Entries without ``lineage.json`` (trained before lineages were recorded) or without a last checkpoint are
    never continued."""
    candidates = []  # (epochs, key)
    for lineage_file in cache.root.glob(f"*/{LINEAGE}"):
        record = read_json(lineage_file)
        found = record.get("epochs")
        if (record.get("lineage") == lineage and isinstance(found, int) and 0 < found < epochs
                and _continuable(lineage_file.parent)):
            candidates.append((found, lineage_file.parent.name))
    if not candidates:
        return None
    found, key = max(candidates)  # no ties: a lineage and an epoch count make one key
    return key, found


def _plan_entry(cache: PretrainCache, key: str, lineage: str, epochs: int) -> dict:
    """What the entry ``key`` is trained from: ``lineage.json``'s record, before training.

    An earlier attempt at the entry (interrupted, or failed and retried) is kept to its own plan: its Ray Train
    checkpoint carries ``start_from`` in its run identity, and resuming it is cheaper than anything else."""
    earlier = read_json(cache.entry(key) / LINEAGE)
    base = earlier.get("continued_from")
    if earlier.get("lineage") == lineage and earlier.get("epochs") == epochs and (
            base is None or _continuable(cache.entry(base))):
        return earlier
    shorter = longest_shorter_entry(cache, lineage, epochs)
    return {"lineage": lineage, "epochs": epochs, "code": code_version(),
            "continued_from": shorter[0] if shorter else None, "from_epoch": shorter[1] if shorter else None}


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def _entry_config(cache: PretrainCache, cfg: PretrainConfig, key: str, base: str | None) -> PretrainConfig:
    """``cfg`` run as the entry ``key`` (its folder in the cache), continuing the entry ``base`` if given."""
    return dataclasses.replace(cfg, out=str(cache.root.resolve()), name=key,
                               start_from=str(cache.entry(base).resolve()) if base else None)


def cached_pretraining(cache: PretrainCache, cfg: PretrainConfig, fingerprint: str, *, num_workers: int,
                       use_gpu: bool, user: str = "", log: Callable[[str], None] | None = print,
                       train: Callable[[PretrainConfig], dict] | None = None, retry_failed: bool = False,
                       lock_timeout_s: float = LOCK_TIMEOUT_S) -> Pretrained:
    """The cache entry of pretraining ``cfg`` on the data ``fingerprint`` with the planned workers, trained by
    this call if it is missing (``PretrainCache.get_or_train``: one trainer per entry, the others wait).

    A missing entry continues the complete entry of its lineage with the most epochs below ``cfg.epochs``
    (``start_from``), so that only the remaining epochs train; with none, it trains from the start. ``train``
    runs a pretraining config and returns its summary (default ``run_pretrain``); the entry's run is named by
    its key, in the cache's folder."""
    if train is None:
        from patchray.train.pretrain import run_pretrain as train
    key = pretext_key(cfg, fingerprint, num_workers=num_workers, use_gpu=use_gpu)
    lineage = lineage_key(cfg, fingerprint, num_workers=num_workers, use_gpu=use_gpu)

    def train_entry(folder: Path) -> dict:
        plan = _plan_entry(cache, key, lineage, cfg.epochs)
        _write_json(folder / LINEAGE, plan)  # before training: a later attempt keeps to it (see _plan_entry)
        base = plan["continued_from"]
        if base is None:
            return train(_entry_config(cache, cfg, key, None)) | {"cache": plan}
        if log is not None:
            log(f"[cache] pretraining {key}: continuing entry {base} after its {plan['from_epoch']} epoch(s); "
                f"{cfg.epochs - plan['from_epoch']} more to train")
        try:
            return train(_entry_config(cache, cfg, key, base)) | {"cache": plan}
        except CannotContinueError as refused:  # raised before anything is written: train from the start instead
            plan = plan | {"continued_from": None, "from_epoch": None, "not_continued": str(refused)}
            _write_json(folder / LINEAGE, plan)
            if log is not None:
                log(f"[cache] pretraining {key}: training from the start instead ({refused})")
            return train(_entry_config(cache, cfg, key, None)) | {"cache": plan}

    folder, trained = cache.get_or_train(key, train_entry, user=user, retry_failed=retry_failed,
                                         lock_timeout_s=lock_timeout_s, log=log)
    record = read_json(folder / LINEAGE)
    return Pretrained(key, folder, trained, record.get("continued_from"), record.get("from_epoch"))
