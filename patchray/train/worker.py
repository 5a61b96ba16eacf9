"""What the pretraining and fine-tuning worker loops share: cross-worker sums, autocast, resume, reporting."""
from __future__ import annotations

import tempfile
import time
from collections import Counter

import ray.train
import torch
import torch.distributed as dist

from patchray.train.checkpoint import load_checkpoint, save_checkpoint
from patchray.train.identity import check_same_run


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def sum_across_workers(values: list[float], device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if distributed():
        dist.all_reduce(tensor)
    return tensor.tolist()


def gather_counters(counter: Counter) -> Counter:
    if not distributed():
        return counter
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, dict(counter))
    total = Counter()
    for c in gathered:
        total.update(c)
    return total


def resume(net, optimizer, loop_config: dict, tag: str, rank: int) -> tuple[int, list[dict]]:
    """Load the last checkpoint Ray Train hands this run, if any: (first epoch to run, metric history).

    Refuses a checkpoint of a run with another identity (``patchray.train.identity``): that would load wrong
    shapes or silently change the experiment halfway. The driver checked this before starting; this is the
    guard where the weights are actually loaded.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as folder:
        state, history = load_checkpoint(folder)
    check_same_run(state.get("identity"), loop_config["identity"], f"[{tag}] the checkpoint handed to this run",
                   state["epoch"])
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start = state["epoch"] + 1
    if rank == 0:
        print(f"[{tag}] resuming after epoch {state['epoch']}", flush=True)
    return start, [h for h in history if h["epoch"] < start]


def report_epoch(metrics: dict, *, rank: int, net, optimizer, epoch: int, loop_config: dict,
                 history: list[dict]) -> None:
    """Every rank reports; rank 0 attaches the checkpoint (model, optimizer, epoch, config, history)."""
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            save_checkpoint(folder, model=net.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch,
                            config=loop_config["config"], history=history, identity=loop_config["identity"])
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({k: v for k, v in metrics.items() if v is not None}, checkpoint=checkpoint)


def timed(batches):
    """Yield (seconds spent waiting for the batch, batch): the data-wait fraction is measured here."""
    iterator = iter(batches)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield time.perf_counter() - start, batch
