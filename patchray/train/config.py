"""Pretraining configuration: plain data with defaults, loaded by patchray.config."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from patchray.patches import PatchTaskConfig
from patchray.train.resources import ResourcesConfig

SCHEDULES = ("none", "step", "cosine")


@dataclass
class OptimConfig:
    # Reference: SGD with Nesterov momentum 0.9, lr 0.01, optional L2 1e-3, optional step decay x0.5.
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "step"
    step_epochs: int = 5     # step schedule: multiply lr by gamma every step_epochs epochs
    gamma: float = 0.5

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.lr <= 0 or self.step_epochs < 1 or not 0 < self.gamma <= 1:
            raise ValueError("need lr > 0, step_epochs >= 1 and 0 < gamma <= 1")


@dataclass
class SyntheticDataConfig:
    """The embedded default data, rendered once and cached under ``dir``."""
    dir: str = os.path.join("~", ".cache", "patchray", "synthetic")
    # Sized so that the default run (render + pretrain) ends within 5 minutes on 2 CPU cores.
    num_crops: int = 6000
    labeled: int = 6000
    seed: int = 0

    def path(self) -> str:
        name = f"seed{self.seed}-n{self.num_crops}-l{self.labeled}"
        return os.path.join(os.path.expanduser(self.dir), name)


@dataclass
class PretrainConfig:
    name: str = "pretrain"
    out: str = "runs"
    # Shard globs, folders or URIs; empty: the synthetic default (unlabeled part).
    data: list[str] = field(default_factory=list)
    # Where Ray Train keeps its checkpoints: default <out>/<name>/ray; on a multi-node
    # cluster a shared URI (s3://..., gs://...).
    storage: str | None = None
    seed: int = 0
    model: str = "tiny"
    epochs: int = 3
    batch_size: int = 128        # patches per optimiser step and worker
    max_crops: int | None = None  # use at most this many training crops (None: all)
    val_crops: int = 256         # crops held out for the fixed validation patch set
    amp: bool = True             # bf16 autocast, on GPU only
    max_failures: int = 1        # worker failures tolerated, resuming from the last checkpoint
    task: PatchTaskConfig = field(default_factory=PatchTaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.val_crops < 1:
            raise ValueError("epochs, batch_size and val_crops must be >= 1")
        if self.batch_size % self.task.patches_per_crop:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of task.patches_per_crop "
                             f"{self.task.patches_per_crop} (a batch holds whole crops)")
        if not self.name or "/" in self.name:
            raise ValueError(f"name {self.name!r} must be a non-empty folder name")

    @property
    def crops_per_batch(self) -> int:
        return self.batch_size // self.task.patches_per_crop
