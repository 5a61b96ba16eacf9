"""Pretraining runs once per distinct pretext configuration and data, shared by trials and experiments.

A cache entry lives at ``<root>/<key>/`` where the key is a content hash of
everything that changes the pretrained weights (the pretraining config minus
names and places, plus a fingerprint of the shards). An exclusive file lock per
key makes a second trial that needs the same missing entry wait for the first
instead of training it again; ``complete.json`` is written last, atomically, so
a crash mid-training never leaves an entry that looks finished.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

from patchray import config as configlib
from patchray.train.config import PretrainConfig

COMPLETE = "complete.json"
USES = "uses.jsonl"  # one line per get_or_train: who used the entry and whether that call trained it
# Fields that do not change what is learned: where outputs go, how the work is spread.
_NOT_CONTENT = ("name", "out", "storage", "resources", "max_failures", "data", "synthetic")


def data_fingerprint(files: list[str], filesystem=None) -> list[tuple[str, int]]:
    """(file name, size) per shard: cheap, and changes when a shard is rewritten."""
    if filesystem is None:
        return [(os.path.basename(f), os.path.getsize(f)) for f in files]
    return [(os.path.basename(i.path), i.size) for i in filesystem.get_file_info(list(files))]


def pretext_key(cfg: PretrainConfig, fingerprint: list[tuple[str, int]]) -> str:
    content = {k: v for k, v in configlib.to_dict(cfg).items() if k not in _NOT_CONTENT}
    text = json.dumps({"config": content, "data": sorted(map(list, fingerprint))}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PretrainCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def entry(self, key: str) -> Path:
        return self.root / key

    def is_complete(self, key: str) -> bool:
        return (self.entry(key) / COMPLETE).exists()

    @contextlib.contextmanager
    def lock(self, key: str):
        with open(self.root / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another process trains this key
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def uses(self, key: str) -> list[dict]:
        path = self.entry(key) / USES
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def _record_use(self, key: str, user: str, trained: bool) -> None:
        with open(self.entry(key) / USES, "a") as handle:  # one short append: atomic enough between trials
            handle.write(json.dumps({"user": user, "trained": trained, "time": time.time()}) + "\n")

    def get_or_train(self, key: str, train: Callable[[Path], dict], user: str = "") -> tuple[Path, bool]:
        """The entry's folder, and whether this call trained it. ``train(folder)`` returns a summary dict."""
        if not self.is_complete(key):
            with self.lock(key):
                if not self.is_complete(key):  # else trained by whoever held the lock before us
                    folder = self.entry(key)
                    folder.mkdir(parents=True, exist_ok=True)
                    summary = train(folder)
                    tmp = folder / f".{COMPLETE}.tmp"
                    tmp.write_text(json.dumps(summary, indent=2, default=str))
                    os.replace(tmp, folder / COMPLETE)
                    self._record_use(key, user, True)
                    return folder, True
        self._record_use(key, user, False)
        return self.entry(key), False
