"""Pretraining configuration: plain data with defaults, loaded by patchray.config."""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

from patchray.accel import CompileBackend
from patchray.patches import PatchTaskConfig
from patchray.patches.normalize import NormalizeMode
from patchray.shards.default_data import SyntheticDataConfig
from patchray.train.resources import ResourcesConfig

Schedule = Literal["none", "step", "cosine"]


@dataclass
class OptimConfig:
    # Reference: SGD with Nesterov momentum 0.9, lr 0.01, optional L2 1e-3, optional step decay x0.5.
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    # L2 penalty output_l2 * sum(W^2) on the output layer's weights only (not its bias), the reference's
    # `-r -w 1e-3` (lasagne l2 on the output layer): weight decay 2 * output_l2 on those weights. Pretraining only.
    output_l2: float = 0.0
    schedule: Schedule = "step"
    step_epochs: int = 5     # step schedule: multiply lr by gamma every step_epochs epochs
    gamma: float = 0.5

    def __post_init__(self):
        if self.lr <= 0 or self.step_epochs < 1 or not 0 < self.gamma <= 1:
            raise ValueError("need lr > 0, step_epochs >= 1 and 0 < gamma <= 1")
        if self.weight_decay < 0 or self.output_l2 < 0:
            raise ValueError(f"weight_decay and output_l2 must be >= 0, got {self.weight_decay}, {self.output_l2}")


DecodeOn = Literal["data", "trainer"]
DECODE_ON = typing.get_args(DecodeOn)


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
    # The reference's tiny net at dropout 0.25: at its 0.5 ("tiny") the net needs the reference's 20-epoch
    # schedule (configs/*_reference.yaml) and stays near chance over a short default job.
    model: str = "tiny_d25"
    epochs: int = 3
    batch_size: int = 128        # patches per optimiser step and worker
    max_crops: int | None = None  # use at most this many training crops (None: all)
    val_crops: int = 256         # crops held out for the fixed validation patch set
    amp: bool = True             # bf16 autocast, on GPU only
    channels_last: bool | None = None  # channels-last memory format (None: on GPUs only)
    compile: CompileBackend = ""  # torch.compile backend ("inductor"; "" for none)
    # Where JPEGs are decoded: "data" (Ray Data's CPU tasks; the stream carries pixels) or "trainer" (each
    # training worker, with nvJPEG on a GPU; the stream carries the encoded crops). See README, Performance.
    decode_on: DecodeOn = "data"
    # How a crop of another shape becomes task.crop_width x task.crop_height: "aspect" (the authors' rule:
    # scale to the height, centre-crop or zero-pad the width; never stretched) or "stretch".
    crop_fit: Literal["aspect", "stretch"] = "aspect"
    max_failures: int = 1        # worker failures tolerated, resuming from the last checkpoint
    # task.normalize=dataset: the per-pixel mean/std are taken over this many training patches (every grid cell
    # once per crop, so ~910 crops for pt18), computed by the driver before training. The reference used ~50k;
    # 16384 puts the statistics within 1% of a std of the full data's at a few seconds of decoding.
    stats_patches: int = 16384
    task: PatchTaskConfig = field(default_factory=PatchTaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.val_crops < 1 or self.stats_patches < 1:
            raise ValueError("epochs, batch_size, val_crops and stats_patches must be >= 1")
        if self.batch_size % self.task.patches_per_crop:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of task.patches_per_crop "
                             f"{self.task.patches_per_crop} (a batch holds whole crops)")
        if not self.name or "/" in self.name:
            raise ValueError(f"name {self.name!r} must be a non-empty folder name")

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
    # The reference's tiny net at dropout 0.25: at its 0.5 ("tiny") the net needs the reference's 20-epoch
    # schedule (configs/*_reference.yaml) and stays near chance over a short default job.
    model: str = "tiny_d25"
    seed: int = 0
    epochs: int = 15
    batch_size: int = 32              # crops per optimiser step and worker
    labels: int | None = None         # label budget: this many training crops, chosen by seed (None: all)
    crop_width: int = 100
    crop_height: int = 200
    crop_fit: Literal["aspect", "stretch"] = "aspect"  # as in pretraining: scale to the height, never stretch
    mirror: bool = True               # mirror training crops at random, swapping left/right labels
    # Input normalisation; null: as the init says (see README, Fine-tuning): a PatchTask init's pretraining
    # normalisation, carried over to whole crops (patch -> each crop standardised; dataset -> the pretraining's
    # per-pixel mean/std pooled per channel; none -> none), ImageNet's mean/std for imagenet, patch for random.
    # Set, it must agree with the init's (a mismatch is refused, naming both).
    normalize: NormalizeMode | None = None
    # dataset: the per-channel mean/std ([0, 1] units), filled in from the PatchTask pretraining when the run
    # is prepared (so config.yaml records them); given, they must be the pretraining's.
    normalize_mean: list[float] | None = None
    normalize_std: list[float] | None = None
    hidden: int = 512
    freeze_blocks: int = 0            # keep the first N trunk blocks fixed
    trunk_lr_mult: float = 1.0        # trunk learning rate = optim.lr * this
    # "ce": the reference's summed per-attribute cross-entropies. "balanced": class-weighted cross-entropy,
    # weights = inverse class frequency in the training split (the label budget's crops, mirror images
    # counted when mirror is on, N/A excluded), normalised so a labeled training example weighs 1 on
    # average; a class absent from the training split weighs 0. See README, Fine-tuning.
    loss: Literal["ce", "balanced"] = "ce"
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
        init = parse_init(self.init)
        stats = (self.normalize_mean, self.normalize_std)
        if (stats[0] is None) != (stats[1] is None):
            raise ValueError("give both normalize_mean and normalize_std, or neither")
        if stats[0] is not None:
            if self.normalize != "dataset" or init.kind != "patchtask":
                raise ValueError("normalize_mean / normalize_std are the dataset statistics of a PatchTask "
                                 "pretraining: only with normalize=dataset and init=patchtask:...")
            if len(stats[0]) != 3 or len(stats[1]) != 3 or min(stats[1]) <= 0:
                raise ValueError(f"normalize_mean / normalize_std need 3 values each (std > 0), got {stats}")
        if init.kind == "imagenet" and self.normalize not in (None, "dataset"):
            raise ValueError(f"normalize={self.normalize!r} disagrees with init imagenet, whose weights expect "
                             "ImageNet's mean/std (normalize=dataset); leave normalize unset")
        if init.kind == "random" and self.normalize == "dataset":
            raise ValueError("normalize=dataset takes its statistics from a PatchTask pretraining "
                             "(init=patchtask:...); init random has none: use patch or none")
        if self.optim.output_l2:
            raise ValueError("optim.output_l2 applies to the pretext net's output layer (pretraining); "
                             "fine-tuning takes optim.weight_decay")
