"""Job configurations: plain data with defaults, loaded by patchray.config.

One vocabulary across jobs: ``input`` is how a detection crop becomes network input (the same section in
pretraining and fine-tuning), ``patches_per_step`` and ``crops_per_step`` count what one optimiser step of one
worker takes, ``holdout_crops`` are crops kept out of training and ``val_limit`` draws a seeded subset of a
validation split.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

from patchray.accel import CompileBackend, GradCompression
from patchray.patches import PatchTaskConfig
from patchray.patches.normalize import NormalizeMode
from patchray.probe import ProbeConfig
from patchray.shards.decode import CropFit
from patchray.shards.default_data import SyntheticDataConfig
from patchray.tracking import Tracking
from patchray.train.resources import ResourcesConfig

Schedule = Literal["none", "step", "cosine"]
LrScaling = Literal["none", "linear", "sqrt"]


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
    # torch's fused SGD: the whole update in one kernel (CPU and GPU), not a few per parameter list; the same
    # rule. 2.5x faster an update on the CPU (docs/performance.md); false: torch's default (foreach).
    fused: bool = True
    # Larger batches: the lr is multiplied by (global batch / base_batch) ("linear") or its square root ("sqrt"),
    # the global batch being a step's examples over all workers (patches in pretraining, crops in fine-tuning);
    # and it rises linearly from 0 over the first warmup_epochs epochs (fractions allowed), step by step.
    lr_scaling: LrScaling = "none"
    base_batch: int = 128
    warmup_epochs: float = 0.0

    def __post_init__(self):
        if self.lr <= 0 or self.step_epochs < 1 or not 0 < self.gamma <= 1:
            raise ValueError("need lr > 0, step_epochs >= 1 and 0 < gamma <= 1")
        if self.base_batch < 1 or self.warmup_epochs < 0:
            raise ValueError(f"need base_batch >= 1 and warmup_epochs >= 0, got {self.base_batch}, "
                             f"{self.warmup_epochs}")
        if self.weight_decay < 0 or self.output_l2 < 0:
            raise ValueError(f"weight_decay and output_l2 must be >= 0, got {self.weight_decay}, {self.output_l2}")


@dataclass
class InputConfig:
    """How a detection crop becomes network input, in pretraining and fine-tuning alike."""
    crop_width: int = 100
    crop_height: int = 200
    # A crop of another shape: "aspect" (the authors' rule: scale to the height, centre-crop or zero-pad the
    # width; never stretched) or "stretch".
    crop_fit: CropFit = "aspect"
    # Pretraining: how each patch is normalised (patch: standardised on its own; dataset: the per-pixel mean/std
    # over stats_patches training patches; none); null means patch. Fine-tuning: null follows the init (see
    # README, Fine-tuning): a PatchTask init's pretraining normalisation carried over to whole crops, ImageNet's
    # mean/std for imagenet, patch for random; set, it must agree with the init's.
    normalize: NormalizeMode | None = None
    # Fine-tuning with normalize=dataset: the per-channel mean/std ([0, 1] units), filled in from the PatchTask
    # pretraining when the run is prepared (so config.yaml records them); given, they must be the pretraining's.
    normalize_mean: list[float] | None = None
    normalize_std: list[float] | None = None

    def __post_init__(self):
        if self.crop_width < 1 or self.crop_height < 1:
            raise ValueError(f"crop size must be >= 1, got {self.crop_width} x {self.crop_height}")
        stats = (self.normalize_mean, self.normalize_std)
        if (stats[0] is None) != (stats[1] is None):
            raise ValueError("give both normalize_mean and normalize_std, or neither")
        if stats[0] is not None and (len(stats[0]) != 3 or len(stats[1]) != 3 or min(stats[1]) <= 0):
            raise ValueError(f"normalize_mean / normalize_std need 3 values each (std > 0), got {stats}")


# The pretext task's crop size and normalisation follow the input section, so each is set in one place: a
# config holding both (pretraining, the benchmarks) names these DERIVED_KEYS and builds its task with task_for.
TASK_FOLLOWS_INPUT = {"task.crop_width": "input.crop_width", "task.crop_height": "input.crop_height",
                      "task.normalize": "input.normalize"}


def task_for(task: PatchTaskConfig, given: InputConfig) -> PatchTaskConfig:
    """``task`` on ``given``'s crop size and normalisation (null there: ``patch``, which it then records)."""
    given.normalize = given.normalize or "patch"
    return dataclasses.replace(task, crop_width=given.crop_width, crop_height=given.crop_height,
                               normalize=given.normalize)


DecodeOn = Literal["data", "trainer"]
DECODE_ON = typing.get_args(DecodeOn)
CutOn = Literal["worker", "data"]


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
    patches_per_step: int = 128  # patches per optimiser step and worker (whole crops: see crops_per_step)
    max_crops: int | None = None  # use at most this many training crops (None: all)
    holdout_crops: int = 256     # crops held out of training for the fixed validation patch set
    amp: bool = True             # bf16 autocast, on GPU only
    channels_last: bool | None = None  # channels-last memory format (None: on; faster on GPUs and CPUs alike)
    compile: CompileBackend = ""  # torch.compile backend ("inductor"; "" for none)
    # Gradients all-reduced in "fp16" or "bf16" (half the bytes; decompressed before the update) instead of float32
    # ("none"): for workers on separate nodes, one GPU each, where the all-reduce crosses the network.
    grad_compression: GradCompression = "none"
    # Where JPEGs are decoded: "data" (Ray Data's CPU tasks; the stream carries pixels) or "trainer" (each
    # training worker, with nvJPEG on a GPU; the stream carries the encoded crops). See README, Performance.
    decode_on: DecodeOn = "data"
    # Where an epoch's patches are cut from the decoded crops: "worker" (the training worker's collate; the
    # stream carries pixels, 60 kB a crop) or "data" (the data tasks; the stream carries the K patches, 24.6 kB
    # for 8 of 32 px). Needs decode_on=data. The same patches either way; see README, Performance.
    cut_on: CutOn = "worker"
    # Decode each training crop once, before the first step, into Ray's object store, and stream the decoded
    # crops from there every epoch: the JPEG decode, most of a data CPU's work, is paid once instead of every
    # epoch. Costs the decoded crops' memory for the whole run (60 kB a 100x200 crop; refused at the start past
    # 70% of the object store). Needs decode_on=data. The same patches as without; see README, Performance.
    cache_decoded: bool = False
    max_failures: int = 1        # worker failures tolerated, resuming from the last checkpoint
    # Experiment tracking (patchray.tracking): the resolved config, each epoch's metrics and the summary plots
    # go to MLflow (tracking_uri: a server or database; null: mlflow.db + mlruns/ in the output folder) or to
    # TensorBoard event files (OUTPUT/tensorboard). Optional extras: pip install -e ".[mlflow]" / ".[tensorboard]".
    tracking: Tracking = "none"
    tracking_uri: str | None = None
    # The folder of a finished pretraining with the same settings but fewer epochs: this run starts from its last
    # checkpoint (weights, optimizer state, epoch) and trains only the remaining epochs. Part of the run's
    # identity: a continued run is not a fresh one (with optim.schedule=cosine it also learns otherwise, its
    # first epochs having followed the shorter run's schedule). The Tune cache sets it (patchray.tune.cache).
    start_from: str | None = None
    # input.normalize=dataset: the per-pixel mean/std are taken over this many training patches (every grid cell
    # once per crop, so ~910 crops for pt18), computed by the driver before training. The reference used ~50k;
    # 16384 puts the statistics within 1% of a std of the full data's at a few seconds of decoding.
    stats_patches: int = 16384
    input: InputConfig = field(default_factory=InputConfig)
    # The pretext task. Its crop size and normalisation follow input (DERIVED_KEYS), so they are set once.
    task: PatchTaskConfig = field(default_factory=PatchTaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # The online probe: how useful the trunk's features are for person attributes, measured as it trains
    # (patchray.probe; README, Pretraining).
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)

    RENAMED_KEYS = {"batch_size": "patches_per_step", "val_crops": "holdout_crops", "crop_fit": "input.crop_fit"}
    DERIVED_KEYS = TASK_FOLLOWS_INPUT

    def __post_init__(self):
        if self.epochs < 1 or self.patches_per_step < 1 or self.holdout_crops < 1 or self.stats_patches < 1:
            raise ValueError("epochs, patches_per_step, holdout_crops and stats_patches must be >= 1")
        if self.input.normalize_mean is not None:
            raise ValueError("input.normalize_mean / normalize_std are fine-tuning's: pretraining with "
                             "input.normalize=dataset computes its own statistics (stats_patches)")
        self.task = task_for(self.task, self.input)
        if self.cut_on == "data" and self.decode_on != "data":
            raise ValueError(f"cut_on=data cuts patches in the data tasks, which then must decode: decode_on="
                             f"{self.decode_on} leaves decoding to the training worker (use cut_on=worker there)")
        if self.cache_decoded and self.decode_on != "data":
            raise ValueError(f"cache_decoded=true keeps decoded crops, which the data tasks then must make: decode_on="
                             f"{self.decode_on} leaves decoding to the training worker (use decode_on=data)")
        if self.patches_per_step % self.task.patches_per_crop:
            raise ValueError(f"patches_per_step {self.patches_per_step} must be a multiple of task.patches_per_crop "
                             f"{self.task.patches_per_crop} (a step takes whole crops)")
        if not self.name or "/" in self.name:
            raise ValueError(f"name {self.name!r} must be a non-empty folder name")

    @property
    def crops_per_step(self) -> int:
        return self.patches_per_step // self.task.patches_per_crop


@dataclass
class FinetuneConfig:
    name: str = "finetune"
    out: str = "runs"
    # Folders of labeled shards named *-train-*, *-val-*, *-test-* (what make_shards writes); empty: the
    # synthetic default's labeled part. train_data / val_data / test_data (shard globs) override it split by split.
    data: list[str] = field(default_factory=list)
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
    crops_per_step: int = 32          # crops per optimiser step and worker
    labels: int | None = None         # label budget: this many training crops, chosen by label_seed (None: all)
    # The budget's crops are drawn with this seed (None: with `seed`). A search fixes it, so that its trials
    # and their confirmation seeds all train on the user's one labeled set and differ only by the training
    # seed; comparisons over seeds (compare_inits) leave it None, so their spread includes the label draw.
    label_seed: int | None = None
    mirror: bool = True               # mirror training crops at random, swapping left/right labels
    # Decode the training crops once, before the first step, into Ray's object store and stream them from there
    # every epoch (as pretraining's cache_decoded; refused past 70% of the object store).
    cache_decoded: bool = False
    hidden: int = 512
    freeze_blocks: int = 0            # keep the first N trunk blocks fixed
    trunk_lr_mult: float = 1.0        # trunk learning rate = optim.lr * this
    # With a patchtask or imagenet init: copy only the trunk's first k blocks (Trunk.blocks; tiny has 4) and leave
    # the rest at their fresh, seeded He init (transfer.txt says which). 0 copies none; null: the whole trunk.
    transfer_blocks: int | None = None
    # "ce": the reference's summed per-attribute cross-entropies. "balanced": class-weighted cross-entropy,
    # weights = inverse class frequency in the training split (the label budget's crops, mirror images
    # counted when mirror is on, N/A excluded), normalised so a labeled training example weighs 1 on
    # average; a class absent from the training split weighs 0. See README, Fine-tuning.
    loss: Literal["ce", "balanced"] = "ce"
    eval_every: int = 1               # validation every N epochs (and always after the last)
    # Score validation on N val crops (None: all); test uses all. The N are drawn by crop id (a hash of val_seed
    # and the id, as the label budget is drawn), not taken from the top of the files: shards are often sorted
    # by sequence or camera, and their first N crops would be a biased sample.
    val_limit: int | None = None
    # The subset of val_limit crops is drawn with this seed, independent of `seed`, so that every trial of a
    # search, whatever its seed, is scored on the same crops.
    val_seed: int = 0
    # False: the test split is neither read nor scored (nor required to exist; train and val still must agree
    # on their attributes); a hyperparameter search turns it off for its trials, so that test numbers exist
    # only for the configuration it chooses. Summary "test" is then null and no test_metrics.* are written.
    evaluate_test: bool = True
    amp: bool = True                  # bf16 autocast, on GPU only
    channels_last: bool | None = None  # channels-last memory format (None: on; faster on GPUs and CPUs alike)
    grad_compression: GradCompression = "none"  # as in pretraining: the all-reduce in fp16 or bf16
    max_failures: int = 1
    # Experiment tracking (patchray.tracking): the resolved config, each epoch's metrics and the summary plots
    # go to MLflow (tracking_uri: a server or database; null: mlflow.db + mlruns/ in the output folder) or to
    # TensorBoard event files (OUTPUT/tensorboard). Optional extras: pip install -e ".[mlflow]" / ".[tensorboard]".
    tracking: Tracking = "none"
    tracking_uri: str | None = None
    # lr 0.002: the loss sums 11 attributes' cross-entropies, and at 0.01 a randomly initialised tiny net
    # diverged on our data (0.002 was the best of 0.002 / 0.005 / 0.01 for random init at 250 labels).
    input: InputConfig = field(default_factory=InputConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.002, schedule="cosine", weight_decay=5e-4))
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)

    @property
    def budget_seed(self) -> int:
        """The seed the label budget is drawn with: ``label_seed``, or ``seed`` when that is None."""
        return self.seed if self.label_seed is None else self.label_seed

    RENAMED_KEYS = {"batch_size": "crops_per_step", "val_crops": "val_limit", "crop_width": "input.crop_width",
                    "crop_height": "input.crop_height", "crop_fit": "input.crop_fit", "normalize": "input.normalize",
                    "normalize_mean": "input.normalize_mean", "normalize_std": "input.normalize_std"}

    def __post_init__(self):
        if self.epochs < 1 or self.crops_per_step < 1 or self.eval_every < 1:
            raise ValueError("epochs, crops_per_step and eval_every must be >= 1")
        if self.val_limit is not None and self.val_limit < 1:
            raise ValueError(f"val_limit must be >= 1 (or null for all), got {self.val_limit}")
        if self.labels is not None and self.labels < 1:
            raise ValueError(f"labels must be >= 1 (or null for all), got {self.labels}")
        if self.freeze_blocks < 0 or self.trunk_lr_mult < 0:
            raise ValueError("freeze_blocks and trunk_lr_mult must be >= 0")
        if not self.name or "/" in self.name:
            raise ValueError(f"name {self.name!r} must be a non-empty folder name")
        from patchray.models.init import check_transfer_blocks, parse_init
        init = parse_init(self.init)
        if self.transfer_blocks is not None:
            if init.kind == "random":
                raise ValueError(f"transfer_blocks={self.transfer_blocks} with init random: there is nothing to "
                                 "copy (leave it null, or init=patchtask:... / imagenet)")
            check_transfer_blocks(self.transfer_blocks, self.model)  # refused here, naming the block count
        normalize = self.input.normalize
        if self.input.normalize_mean is not None and (normalize != "dataset" or init.kind != "patchtask"):
            raise ValueError("input.normalize_mean / normalize_std are the dataset statistics of a PatchTask "
                             "pretraining: only with input.normalize=dataset and init=patchtask:...")
        if init.kind == "imagenet" and normalize not in (None, "dataset"):
            raise ValueError(f"input.normalize={normalize!r} disagrees with init imagenet, whose weights expect "
                             "ImageNet's mean/std (input.normalize=dataset); leave input.normalize unset")
        if init.kind == "random" and normalize == "dataset":
            raise ValueError("input.normalize=dataset takes its statistics from a PatchTask pretraining "
                             "(init=patchtask:...); init random has none: use patch or none")
        if self.optim.output_l2:
            raise ValueError("optim.output_l2 applies to the pretext net's output layer (pretraining); "
                             "fine-tuning takes optim.weight_decay")
