"""Optimiser and learning-rate schedule from OptimConfig."""
from __future__ import annotations

import math

import torch

from patchray.train.config import OptimConfig


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
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
