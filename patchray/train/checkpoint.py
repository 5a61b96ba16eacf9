"""Checkpoints as plain state_dicts (``torch.load(..., weights_only=True)``) plus a JSON history.

A checkpoint folder holds ``model.pt`` ({"model", "optimizer", "epoch", "config", "identity"}, "model" being
the whole network's state_dict), ``history.json`` (every epoch's metrics so far), so that the metrics of a
resumed run are whole: no gap, no repeated epoch, and ``run.json`` ({"epoch", "identity"}): what a driver reads,
without loading any weights, to decide whether this run may resume it (``patchray.train.identity``).

A finished pretraining also keeps its last checkpoint in its own folder, ``checkpoints/last/`` (the same three
files), wherever Ray Train's storage is: a longer run of the same settings starts from it (``start_from``).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

MODEL_FILE = "model.pt"
HISTORY_FILE = "history.json"
RUN_FILE = "run.json"
# A finished run's last checkpoint, in the run's own folder (see the module docstring).
FINAL_STATE = Path("checkpoints") / "last"


def final_state(run_folder: str | Path) -> Path:
    """Where the finished run in ``run_folder`` keeps its last checkpoint (weights, optimizer, epoch, history)."""
    return Path(run_folder) / FINAL_STATE


def read_run_file(folder: str | Path) -> dict | None:
    """``run.json`` of the checkpoint folder ``folder`` ({"epoch", "identity"}), or None when it has none."""
    path = Path(folder) / RUN_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def save_checkpoint(folder: str | Path, *, model: dict, optimizer: dict, epoch: int, config: dict,
                    history: list[dict], identity: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "optimizer": optimizer, "epoch": epoch, "config": config, "identity": identity},
               folder / MODEL_FILE)
    (folder / HISTORY_FILE).write_text(json.dumps(history))
    (folder / RUN_FILE).write_text(json.dumps({"epoch": epoch, "identity": identity}))
    return folder


def load_checkpoint(folder: str | Path) -> tuple[dict, list[dict]]:
    folder = Path(folder)
    state = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
    history = json.loads((folder / HISTORY_FILE).read_text())
    return state, history


def atomic_torch_save(obj, path: str | Path) -> Path:
    """Write next to the target and rename, so a crash never leaves a half-written file under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def sub_state(state: dict, prefix: str) -> dict:
    """The entries of a network's state_dict under ``prefix.``, with the prefix removed (e.g. the trunk's)."""
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
