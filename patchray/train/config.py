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

DECODE_ON = ("data", "trainer")


def check_decode_on(value: str) -> None:
    if value not in DECODE_ON:
        raise ValueError(f"decode_on must be one of {DECODE_ON}, got {value!r}")


@dataclass
class PretrainConfig:
    name: str = "pretrain"
    out: str = "runs"
    # Shard globs, folders or URIs; empty: the synthetic default (unlabeled part).
    data: list[str] = field(default_factory=list)
    # Where Ray Train keeps its checkpoints: default <out>/<name>/ray, or $PATCHRAY_STORAGE where the
    # cluster sets it; on a multi-node cluster a shared URI (s3://..., gs://...).
    storage: str | None = None
    seed: int = 0
    model: str = "tiny"
    epochs: int = 3
    batch_size: int = 128        # patches per optimiser step and worker
    max_crops: int | None = None  # use at most this many training crops (None: all)
    val_crops: int = 256         # crops held out for the fixed validation patch set
    amp: bool = True             # bf16 autocast, on GPU only
    channels_last: bool | None = None  # channels-last memory format (None: on GPUs only)
    compile: str = ""            # torch.compile backend ("inductor"; "" for none)
    # Where JPEGs are decoded: "data" (Ray Data's CPU tasks; the stream carries pixels) or "trainer" (each
    # training worker, with nvJPEG on a GPU; the stream carries the encoded crops). See README, Performance.
    decode_on: str = "data"
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
        from patchray.train.accel import check_compile

        check_compile(self.compile)
        check_decode_on(self.decode_on)

    @property
    def crops_per_batch(self) -> int:
        return self.batch_size // self.task.patches_per_crop


@dataclass
class FinetuneConfig:
    name: str = "finetune"
    out: str = "runs"
    # A folder of labeled shards named *-train-*, *-val-*, *-test-* (what make_shards writes); empty: the
    # synthetic default's labeled part. train_data / val_data / test_data override it split by split.
    data: str | None = None
    train_data: list[str] = field(default_factory=list)
    val_data: list[str] = field(default_factory=list)
    test_data: list[str] = field(default_factory=list)
    storage: str | None = None
    # random | patchtask:<pretext checkpoint or pretraining run folder> | imagenet
    init: str = "random"
    model: str = "tiny"
    seed: int = 0
    epochs: int = 15
    batch_size: int = 32              # crops per optimiser step and worker
    labels: int | None = None         # label budget: this many training crops, chosen by seed (None: all)
    crop_width: int = 100
    crop_height: int = 200
    mirror: bool = True               # mirror training crops at random, swapping left/right labels
    normalize: str = "patch"          # as in pretraining; imagenet init uses ImageNet's mean/std
    hidden: int = 512
    freeze_blocks: int = 0            # keep the first N trunk blocks fixed
    trunk_lr_mult: float = 1.0        # trunk learning rate = optim.lr * this
    eval_every: int = 1               # validation every N epochs (and always after the last)
    val_crops: int | None = None      # score validation on the first N val crops (None: all); test uses all
    amp: bool = True
    max_failures: int = 1
    # lr 0.002: the loss sums 11 attributes' cross-entropies, and at 0.01 a randomly initialised tiny net
    # diverged on our data (0.002 was the best of 0.002 / 0.005 / 0.01 for random init at 250 labels).
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.002, schedule="cosine", weight_decay=5e-4))
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("epochs, batch_size and eval_every must be >= 1")
        if self.val_crops is not None and self.val_crops < 1:
            raise ValueError(f"val_crops must be >= 1 (or null for all), got {self.val_crops}")
        if self.labels is not None and self.labels < 1:
            raise ValueError(f"labels must be >= 1 (or null for all), got {self.labels}")
        if self.freeze_blocks < 0 or self.trunk_lr_mult < 0:
            raise ValueError("freeze_blocks and trunk_lr_mult must be >= 0")
        if not self.name or "/" in self.name:
            raise ValueError(f"name {self.name!r} must be a non-empty folder name")
        from patchray.models.init import parse_init
        from patchray.patches import NORMALIZE_MODES

        parse_init(self.init)
        if self.normalize not in NORMALIZE_MODES or self.normalize == "dataset":
            raise ValueError(f"normalize must be 'patch' or 'none', got {self.normalize!r}")
