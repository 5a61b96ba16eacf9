"""Nothing lost: a training worker killed for real mid-run, and a half-written checkpoint folder left by a crash."""
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import small_config

from patchray.models import build_trunk
from patchray.train.checkpoint import HISTORY_FILE, MODEL_FILE
from patchray.train.pretrain import run_pretrain

pytestmark = pytest.mark.slow


def _epochs(out):
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train_workers(state=None):
    import ray
    from ray.util.state import list_actors

    filters = [("class_name", "=", "RayTrainWorker")] + ([("state", "=", state)] if state else [])
    return list_actors(address=ray.get_runtime_context().gcs_address, filters=filters, detail=True, limit=10000,
                       raise_on_missing_output=False)


def _registered_history(checkpoints) -> list[dict] | None:
    """The metric history in the last checkpoint Ray Train registered in ``checkpoints`` (what a restarted
    worker group is handed), or None before the first."""
    import ray.train

    try:
        checkpoint = ray.train.Result.from_path(str(checkpoints)).checkpoint
    except (RuntimeError, ValueError, OSError):  # no run folder or snapshot yet, or one being written
        return None
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / HISTORY_FILE).read_text())


def _kill_a_worker_after_the_first_checkpoint(checkpoints, known, killed: dict, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = _registered_history(checkpoints) if checkpoints.exists() else None
        if history:
            for actor in _train_workers("ALIVE"):
                if actor.actor_id not in known and actor.pid:
                    time.sleep(1.0)  # into the next epoch
                    os.kill(actor.pid, signal.SIGKILL)
                    killed.update(pid=actor.pid, actor_id=actor.actor_id, at=time.time(), history=history)
                    return
        time.sleep(0.5)


def test_a_killed_worker_resumes_from_the_last_checkpoint_and_a_half_written_one_is_ignored(
        ray_cluster, synthetic_small, tmp_path):
    out = tmp_path / "ft"
    checkpoints = out / "ray" / "pretrain"
    known = {a.actor_id for a in _train_workers()}
    killed: dict = {}
    killer = threading.Thread(target=_kill_a_worker_after_the_first_checkpoint,
                              args=(checkpoints, known, killed), daemon=True)
    killer.start()
    summary = run_pretrain(small_config(tmp_path, "ft", [synthetic_small / "unlabeled"], epochs=3, max_failures=2))
    killer.join(5)
    assert killed, "no training worker was killed"
    started = {a.actor_id for a in _train_workers()} - known
    assert killed["actor_id"] in started and len(started) >= 4  # a second worker group replaced the first
    # epochs continuous: none missing, none repeated; the final checkpoint loads as a plain state_dict
    assert summary["epochs"] == 3 and _epochs(out) == [0, 1, 2]
    # the new worker group went on from the checkpoint registered before the kill: the epochs in it come back as
    # they were (timings included: an epoch trained again would have new ones); only the epochs after it ran
    done = len(killed["history"])
    assert done < 3
    after = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert after[:done] == [{k: v for k, v in h.items() if k != "val_confusion"} for h in killed["history"]]
    build_trunk("tiny").load_state_dict(torch.load(out / "checkpoints" / "trunk.pt", weights_only=True))

    # A crash mid-write leaves a newer-looking checkpoint folder with a truncated file: never the one resumed.
    before = (out / "metrics.jsonl").read_text().splitlines()
    torn = checkpoints / "checkpoint_2999-01-01_00-00-00.000000"
    torn.mkdir()
    (torn / MODEL_FILE).write_bytes(b"PK\x03\x04 truncated")
    summary = run_pretrain(small_config(tmp_path, "ft", [synthetic_small / "unlabeled"], epochs=3, max_failures=2))
    assert summary["epochs"] == 3 and _epochs(out) == [0, 1, 2]
    # the real last checkpoint was resumed (after epoch 3: nothing left to train), and its history came back byte
    # for byte (timings would differ had an epoch been trained again); the torn file was never loaded
    assert (out / "metrics.jsonl").read_text().splitlines() == before
    build_trunk("tiny").load_state_dict(torch.load(out / "checkpoints" / "trunk.pt", weights_only=True))
