"""Optimiser and learning-rate schedule from OptimConfig."""
from __future__ import annotations

import math

import torch

from patchray.train.config import OptimConfig


def build_optimizer(params, cfg: OptimConfig, output_weights=()) -> torch.optim.Optimizer:
    """SGD over ``params`` (tensors, or param-group dicts). With ``cfg.output_l2``, ``output_weights`` (the
    output layer's weight, among ``params``) get their own group with weight decay ``weight_decay + 2 *
    output_l2``: the gradient of the penalty ``output_l2 * sum(W^2)`` that the reference adds to its loss."""
    groups = list(params)
    if cfg.output_l2:
        chosen = {id(w) for w in output_weights}
        if not chosen:
            raise ValueError("optim.output_l2 needs the output layer's weights (output_weights)")
        if groups and isinstance(groups[0], dict):
            raise ValueError("optim.output_l2 takes plain parameters, not param groups")
        rest = [p for p in groups if id(p) not in chosen]
        if len(rest) + len(chosen) != len(groups):
            raise ValueError("output_weights must be among the optimised parameters")
        groups = [{"params": rest}, {"params": list(output_weights),
                                     "weight_decay": cfg.weight_decay + 2 * cfg.output_l2}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                           weight_decay=cfg.weight_decay, fused=cfg.fused or None)


def lr_at_epoch(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """Learning rate for a 0-based epoch; a pure function so that resuming needs no scheduler state."""
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_epochs)
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    return cfg.lr


class StepSchedule:
    """The learning rate of every step: the epoch's (``lr_at_epoch``), times the batch rule's factor
    (``optim.lr_scaling``: the global batch against ``optim.base_batch``), times a linear warm-up over the first
    ``optim.warmup_epochs`` epochs. Pure, as ``lr_at_epoch``: a resumed run takes the same rates."""

    def __init__(self, cfg: OptimConfig, epochs: int, steps_per_epoch: int, global_batch: int):
        self.cfg, self.epochs, self.steps_per_epoch = cfg, epochs, max(steps_per_epoch, 1)
        ratio = global_batch / cfg.base_batch
        self.scale = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[cfg.lr_scaling]

    def at(self, epoch: int, step: int = 0) -> float:
        """The rate of the 0-based ``step`` of the 0-based ``epoch``."""
        lr = lr_at_epoch(self.cfg, epoch, self.epochs) * self.scale
        if self.warming(epoch):
            lr *= min(1.0, (epoch + (step + 1) / self.steps_per_epoch) / self.cfg.warmup_epochs)
        return lr

    def warming(self, epoch: int) -> bool:
        return epoch < self.cfg.warmup_epochs


def stepping_rates(schedule: StepSchedule, optimizer, epoch: int, then=None):
    """``train_epoch``'s ``on_step`` for an epoch of ``schedule``: while it warms up, each step's rate is set after
    the step before (the epoch's first, by the loop, before it); then ``then(totals)``."""
    if not schedule.warming(epoch):
        return then

    def on_step(totals) -> None:
        set_lr(optimizer, schedule.at(epoch, totals.steps))
        if then is not None:
            then(totals)

    return on_step


def steps_per_epoch(stream_rows: int, workers: int, per_step: int) -> int:
    """Steps a worker takes in an epoch: its even share of the stream's rows in batches of ``per_step``."""
    return max(math.ceil(stream_rows / max(workers, 1) / per_step), 1)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the epoch's learning rate; a group with ``lr_mult`` (e.g. a slower trunk) gets lr times that."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
