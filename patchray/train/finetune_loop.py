"""The Ray Train worker loop of attribute fine-tuning: a recipe of the shared parts (``patchray.train.epoch``:
the step and the epoch; ``patchray.train.worker``: start, resume, sums over workers, report and checkpoint),
with what only fine-tuning has: the attribute net, its input normalisation and the attribute metrics."""
from __future__ import annotations

import numpy as np
import ray.train
import ray.train.torch
import torch

from patchray import config as configlib
from patchray.accel import autocast, channels_last_for
from patchray.metrics import attribute_metrics, to_jsonable
from patchray.models import AttributeNet, attribute_loss, build_trunk
from patchray.models.init import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    initialise_trunk,
    parse_init,
    settle_normalization,
)
from patchray.patches import checked_stats, normalize_images
from patchray.pipeline import attribute_batches
from patchray.shards.attributes import AttributeSet
from patchray.train.config import FinetuneConfig
from patchray.train.epoch import StepResult, TrainStep, accelerate, padded, sync_buffers, train_epoch
from patchray.train.optim import StepSchedule, build_optimizer, set_lr, stepping_rates, steps_per_epoch
from patchray.train.worker import gather_rows, prepare_ddp, reduce_epoch, report_epoch, resume, start_worker

EVAL_BATCH = 64


def build_attribute_net(cfg: FinetuneConfig, attributes: AttributeSet, initialise: bool = True):
    """The attribute net with its trunk initialised as ``cfg.init`` says; returns (net, transfer report)."""
    trunk = build_trunk(cfg.model)
    report = initialise_trunk(trunk, cfg.init, cfg.model, blocks=cfg.transfer_blocks) if initialise else None
    net = AttributeNet(trunk, [a.num_classes for a in attributes],
                       input_hw=(cfg.input.crop_height, cfg.input.crop_width), hidden=cfg.hidden)
    if cfg.freeze_blocks:
        net.trunk.freeze_blocks(cfg.freeze_blocks)
    return net, report


def resolve_normalization(cfg: FinetuneConfig) -> None:
    """Set ``cfg.input.normalize`` (and for ``dataset`` ``normalize_mean`` / ``normalize_std``) to what the init
    asks (``patchray.models.init.settle_normalization``): a PatchTask init's pretraining normalisation carried
    over to whole crops, ``input.normalize`` or ``patch`` for random, unchanged for imagenet (see
    :class:`CropNormalization`)."""
    given = cfg.input
    given.normalize, given.normalize_mean, given.normalize_std = settle_normalization(
        parse_init(cfg.init), given.normalize, given.normalize_mean, given.normalize_std)


class CropNormalization:
    """uint8 crops [B, H, W, 3] -> network input: ImageNet's mean/std for an imagenet init, else
    ``cfg.input.normalize`` (settled by :func:`resolve_normalization` for a PatchTask init; ``patch`` by
    default); in the net's memory format (``cfg.channels_last``). Statistics go to ``device`` and are checked
    once, so a step copies nothing to the device and reads nothing back."""

    def __init__(self, cfg: FinetuneConfig, device):
        given = cfg.input
        init = parse_init(cfg.init).kind
        if init == "patchtask" and given.normalize is None:
            raise ValueError("fine-tuning from a PatchTask init before its normalisation was settled "
                             "(resolve_normalization, when the driver prepares the run)")
        self.channels_last = channels_last_for(cfg.channels_last, torch.device(device))
        self.mode, self.stats = given.normalize or "patch", {}
        if init == "imagenet":
            self.mode, self.stats = "dataset", checked_stats(IMAGENET_MEAN, IMAGENET_STD, device)
        elif given.normalize == "dataset":
            self.stats = checked_stats(given.normalize_mean, given.normalize_std, device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return normalize_images(images, self.mode, **self.stats, channels_last=self.channels_last, std_checked=True)


def predict(net, pixels: np.ndarray, cfg: FinetuneConfig, device) -> list[np.ndarray]:
    """Softmax probabilities per attribute for uint8 crops [N, H, W, 3]."""
    net.eval()
    outputs = None
    normalise_crops = CropNormalization(cfg, device)
    with torch.no_grad(), autocast(device, cfg.amp):
        for start in range(0, len(pixels), EVAL_BATCH):
            # a copy: the pixels come read-only from Ray's object store, and torch warns on such an array
            x = normalise_crops(torch.from_numpy(pixels[start:start + EVAL_BATCH].copy()).to(device))
            probs = [torch.softmax(logits.float(), 1).cpu().numpy() for logits in net(x)]
            outputs = probs if outputs is None else [np.concatenate([a, b]) for a, b in zip(outputs, probs)]
    net.train()
    return outputs


def evaluate(net, split: tuple[np.ndarray, np.ndarray], attributes: AttributeSet, cfg, device, rank, world):
    """Metrics over the whole split: each worker scores every world-th crop, rank 0 puts them back in order."""
    pixels, labels = split
    mine = predict(net, pixels[rank::world], cfg, device) if len(pixels[rank::world]) else None
    probs = gather_rows(mine, [len(pixels)] * len(attributes), rank, world)
    if probs is None:
        return None
    for attribute, full in zip(attributes, probs):
        if not np.isfinite(full).all():  # the loss can stay finite while the weights have blown up
            raise FloatingPointError(f"fine-tuning diverged: non-finite predictions for {attribute.name!r} in "
                                     f"evaluation; lower optim.lr (now {cfg.optim.lr:g})")
    return attribute_metrics(probs, labels, attributes)


SUMMARY_KEYS = {"mA": "mA", "mAP": "mAP", "mBER": "mBER", "orientation_accuracy": "orientation_acc"}
PARSE27K_SUMMARY_KEYS = {"mAP": "parse27k_mAP", "mBER": "parse27k_mBER"}


def _summary_metrics(prefix: str, metrics: dict | None) -> dict:
    """Flat per-epoch scores (``val_mA``, ..., ``val_parse27k_mAP``); None where undefined (no binary
    attribute: no mAP; no Orientation: no orientation accuracy)."""
    if metrics is None:
        return {}
    out = {f"{prefix}_{short}": to_jsonable(metrics[key]) for key, short in SUMMARY_KEYS.items()}
    paper = metrics.get("parse27k", {})
    return out | {f"{prefix}_{short}": to_jsonable(paper.get(key)) for key, short in PARSE27K_SUMMARY_KEYS.items()}


def scores_text(metrics: dict, prefix: str = "val") -> str:
    """`` val mA 0.512 mAP 0.301`` for the epoch line, naming only the scores that are defined."""
    parts = [f"{name} {metrics[f'{prefix}_{key}']:.3f}" for key, name in (("mA", "mA"), ("mAP", "mAP"))
             if metrics.get(f"{prefix}_{key}") is not None]
    return f" {prefix} " + " ".join(parts) if parts else ""


class AttributeStep:
    """Fine-tuning's step on a batch ``{"images": uint8 crops, "labels": [B, A]}``: to the device, normalised
    (:class:`CropNormalization`), the attribute loss (balanced with ``class_weights``, one tensor per attribute)."""

    def __init__(self, train: TrainStep, cfg: FinetuneConfig, attributes: AttributeSet):
        self.train, self.cfg = train, cfg
        self.normalise = CropNormalization(cfg, train.device)
        self.empty = ((1, cfg.input.crop_height, cfg.input.crop_width, 3), (1, len(attributes)))

    def __call__(self, batch: dict, *, epoch: int = 0, step: int = 1) -> StepResult:
        images, labels, weight = padded(batch["images"], batch["labels"], *self.empty)
        x = self.normalise(images.to(self.train.device, non_blocking=True))   # in the net's memory format
        loss, _ = self.train(x, labels.to(self.train.device, non_blocking=True), weight, epoch=epoch, step=step)
        return StepResult(loss, len(labels), weight)

    def check(self) -> None:
        self.train.check()


def finetune_loop(loop_config: dict) -> None:
    cfg = configlib.build(FinetuneConfig, loop_config["config"])
    attributes = AttributeSet.from_list(loop_config["attributes"])
    rank, world, device = start_worker(loop_config)

    # The driver built and initialised the net once (it holds the checkpoint files); every rank starts from it.
    net, _ = build_attribute_net(cfg, attributes, initialise=False)
    net.load_state_dict(ray.get(loop_config["initial_ref"]))
    model, base = accelerate(net, device, channels_last=channels_last_for(cfg.channels_last, device),
                             prepare=prepare_ddp(cfg.grad_compression))
    trunk_params = [p for p in net.trunk.parameters() if p.requires_grad]
    head_params = [p for n, p in net.named_parameters() if not n.startswith("trunk.") and p.requires_grad]
    groups = [{"params": trunk_params, "lr_mult": cfg.trunk_lr_mult}, {"params": head_params, "lr_mult": 1.0}]
    optimizer = build_optimizer([g for g in groups if g["params"]], cfg.optim)
    start_epoch, history = resume(base, optimizer, loop_config, "finetune", rank)
    # loss: balanced: per-attribute class weights from the driver (the training split's class frequencies).
    class_weights = loop_config.get("class_weights")
    if class_weights is not None:
        class_weights = [torch.tensor(w, dtype=torch.float32, device=device) for w in class_weights]
    step = AttributeStep(TrainStep(model, optimizer, lambda logits, y: attribute_loss(logits, y, class_weights),
                                   device=device, amp=cfg.amp, lr=cfg.optim.lr, what="fine-tuning"), cfg, attributes)

    val = ray.get(loop_config["val_ref"])
    # evaluate_test false: the driver read no test split (a search's trial), and no test number is made.
    test = ray.get(loop_config["test_ref"]) if cfg.evaluate_test else None
    shard = ray.train.get_dataset_shard("train")
    schedule = StepSchedule(cfg.optim, cfg.epochs, steps_per_epoch(loop_config["stream_rows"], world,
                                                                   cfg.crops_per_step), cfg.crops_per_step * world)
    for epoch in range(start_epoch, cfg.epochs):
        set_lr(optimizer, schedule.at(epoch))
        lr = schedule.at(epoch, schedule.steps_per_epoch - 1)   # reported: the epoch's rate once warmed up
        batches = attribute_batches(shard, attributes, cfg.seed, epoch, cfg.crops_per_step, rank, cfg.mirror, device)
        totals = reduce_epoch(train_epoch(batches, step, epoch, device,
                                          on_step=stepping_rates(schedule, optimizer, epoch)), device)
        sync_buffers(base)   # every rank evaluates with rank 0's BatchNorm statistics, which it saves
        last = epoch == cfg.epochs - 1
        val_metrics = test_metrics = None
        if last or (epoch + 1) % cfg.eval_every == 0:
            val_metrics = evaluate(base, val, attributes, cfg, device, rank, world)
        if last and test is not None:
            test_metrics = evaluate(base, test, attributes, cfg, device, rank, world)
        metrics = {"epoch": epoch, "lr": lr} | totals.metrics("crops", world, loop_config["stream_rows"])
        metrics |= _summary_metrics("val", val_metrics) | _summary_metrics("test", test_metrics)
        history.append(metrics | {"skipped": dict(totals.skipped), "val": to_jsonable(val_metrics),
                                  "test": to_jsonable(test_metrics)})
        if rank == 0:
            scores = scores_text(metrics) if val_metrics else ""
            print(f"[finetune] epoch {epoch + 1}/{cfg.epochs}: loss {metrics['loss']:.3f}{scores}, "
                  f"{metrics['crops_per_s'] * world:.0f} crops/s, skipped rows {metrics['skipped_rows']}", flush=True)
        report_epoch(metrics, rank=rank, net=base, optimizer=optimizer, epoch=epoch, loop_config=loop_config,
                     history=history)
