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
                           weight_decay=cfg.weight_decay)


def lr_at_epoch(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """Learning rate for a 0-based epoch; a pure function so that resuming needs no scheduler state."""
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_epochs)
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    return cfg.lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the epoch's learning rate; a group with ``lr_mult`` (e.g. a slower trunk) gets lr times that."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
