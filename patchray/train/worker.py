"""The Ray side of a training worker, shared by pretraining and fine-tuning: its start, resuming, the sums over
workers at an epoch's end, and the report with its checkpoint. The epoch itself (step, timing, totals) is
``patchray.train.epoch``, which needs no Ray."""
from __future__ import annotations

import tempfile
from collections import Counter

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from patchray.accel import tune_for
from patchray.train.checkpoint import load_checkpoint, save_checkpoint
from patchray.train.epoch import EpochTotals, compress_gradients, ddp_options
from patchray.train.identity import check_continuable, check_same_run


def start_worker(loop_config: dict) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this training worker, its torch threads set as the plan sized them and
    cuDNN tuned for its device."""
    torch.set_num_threads(loop_config["torch_threads"])
    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    tune_for(device)
    return context.get_world_rank(), context.get_world_size(), device


def prepare_ddp(compression: str = "none"):
    """Ray Train's ``prepare_model`` (DDP over the workers; one worker: the net as it is) with patchray's DDP
    settings (``ddp_options``) and the gradient compression asked for (``compress_gradients``)."""
    def prepare(net):
        model = ray.train.torch.prepare_model(net, parallel_strategy_kwargs=ddp_options())
        compress_gradients(model, compression)
        return model

    return prepare


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


def gather_rows(mine: list | None, lengths: list[int], rank: int, world: int) -> list | None:
    """Arrays computed a row in ``world`` each: worker r holds rows r, r + world, ... of every array (``mine``,
    one array per part, or None when it had no row). Rank 0 gets each array whole, in row order ([lengths[i],
    ...]); the other ranks None. Every rank must call it."""
    import numpy as np

    if distributed():
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
    else:
        gathered = [mine]
    if rank != 0:
        return None
    arrays = []
    for part, length in enumerate(lengths):
        shaped = next(worker[part] for worker in gathered if worker is not None)
        full = np.zeros((length, *shaped.shape[1:]), dtype=shaped.dtype)
        for r, worker in enumerate(gathered):
            if worker is not None:
                full[r::world] = worker[part]
        arrays.append(full)
    return arrays


def reduce_epoch(totals: EpochTotals, device) -> EpochTotals:
    """An epoch's totals summed over every worker, with the bad rows they skipped (``EpochTotals``)."""
    loss_sum, correct, count, wait_s, elapsed, received = sum_across_workers(
        [float(totals.loss_sum), float(totals.correct), totals.count, totals.wait_s, totals.elapsed,
         totals.received], device)
    return EpochTotals(loss_sum=loss_sum, correct=correct, count=count, steps=totals.steps, wait_s=wait_s,
                       elapsed=elapsed, received=int(received), skipped=gather_counters(totals.skipped))


def resume(net, optimizer, loop_config: dict, tag: str, rank: int) -> tuple[int, list[dict]]:
    """Load the last checkpoint Ray Train hands this run, if any, else the last checkpoint of the finished run
    this one continues (``loop_config["start_ref"]``: its (state, history) in the object store; pretraining's
    ``start_from``): (first epoch to run, metric history).

    Refuses a checkpoint of a run with another identity (``patchray.train.identity``): that would load wrong
    shapes or silently change the experiment halfway. The driver checked this before starting; this is the
    guard where the weights are actually loaded. A checkpoint of this run comes first: after a worker failure
    it is further along than the run it continues.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state, history = load_checkpoint(folder)
        check_same_run(state.get("identity"), loop_config["identity"],
                       f"[{tag}] the checkpoint handed to this run", state["epoch"])
        # 1-based, as the driver's lines; also said after a worker restart, which the driver does not see
        restored = f"workers restored the checkpoint of epoch {state['epoch'] + 1}"
    elif loop_config.get("start_ref") is not None:
        state, history = ray.get(loop_config["start_ref"])
        where = loop_config.get("start_from") or "the run this one continues"
        check_continuable(state.get("identity"), loop_config["identity"], where, state["epoch"])
        restored = f"workers start from {where} after its epoch {state['epoch'] + 1}"
    else:
        return 0, []
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start = state["epoch"] + 1
    if rank == 0:
        print(f"[{tag}] {restored}", flush=True)
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

