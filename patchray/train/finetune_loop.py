"""The Ray Train worker loop of attribute fine-tuning."""
from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from patchray import config as configlib
from patchray.metrics import attribute_metrics, to_jsonable
from patchray.models import AttributeNet, attribute_loss, build_trunk
from patchray.models.init import (IMAGENET_MEAN, IMAGENET_STD, InitError, initialise_trunk, parse_init,
                                  recorded_normalization)
from patchray.patches import channel_stats, normalize_images
from patchray.pipeline import AttributeCollate
from patchray.shards.attributes import AttributeSet
from patchray.train.config import FinetuneConfig
from patchray.train.optim import build_optimizer, lr_at_epoch, set_lr
from patchray.train.rows import epoch_rows
from patchray.accel import autocast
from patchray.train.worker import gather_counters, report_epoch, resume, sum_across_workers, timed

EVAL_BATCH = 64


def build_attribute_net(cfg: FinetuneConfig, attributes: AttributeSet, initialise: bool = True):
    """The attribute net with its trunk initialised as ``cfg.init`` says; returns (net, transfer report)."""
    trunk = build_trunk(cfg.model)
    report = initialise_trunk(trunk, cfg.init, cfg.model) if initialise else None
    net = AttributeNet(trunk, [a.num_classes for a in attributes], input_hw=(cfg.crop_height, cfg.crop_width),
                       hidden=cfg.hidden)
    if cfg.freeze_blocks:
        net.trunk.freeze_blocks(cfg.freeze_blocks)
    return net, report


def resolve_normalization(cfg: FinetuneConfig) -> None:
    """Set ``cfg.normalize`` (and for ``dataset`` ``normalize_mean`` / ``normalize_std``) to what a PatchTask
    init's pretraining used (``recorded_normalization``), carried over to whole crops: ``patch`` standardises
    each crop per channel as pretraining did each patch, ``dataset`` takes the pretraining's per-pixel mean/std
    pooled per channel (``channel_stats``), ``none`` is none. A normalisation the config sets that differs from
    the pretraining's is refused, naming both. A random init, or a PatchTask checkpoint without any record
    (hand-made), takes ``cfg.normalize`` or ``patch``; an imagenet init ImageNet's mean/std (see :func:`normalise`).
    """
    init = parse_init(cfg.init)
    if init.kind == "random":
        cfg.normalize = cfg.normalize or "patch"
    if init.kind != "patchtask":
        return
    record = recorded_normalization(init)
    if record is None:
        if cfg.normalize == "dataset" and cfg.normalize_mean is None:
            raise InitError(f"normalize=dataset, but init {init} records no pretraining statistics")
        cfg.normalize = cfg.normalize or "patch"
        return
    pretrained = record["mode"]
    if cfg.normalize is not None and cfg.normalize != pretrained:
        raise InitError(f"fine-tuning normalize={cfg.normalize!r}, but init {init} was pretrained with "
                        f"task.normalize={pretrained!r}: the trunk must see input normalised as in pretraining. "
                        f"Leave normalize unset (it follows the pretraining), or pretrain with "
                        f"task.normalize={cfg.normalize}")
    cfg.normalize = pretrained
    if pretrained == "dataset":
        mean, std = channel_stats(record["mean"], record["std"])
        if cfg.normalize_mean is not None and not np.allclose([cfg.normalize_mean, cfg.normalize_std], [mean, std],
                                                              rtol=1e-6, atol=1e-9):
            raise InitError(f"normalize_mean/normalize_std {cfg.normalize_mean} / {cfg.normalize_std} differ from "
                            f"init {init}'s pretraining statistics {mean} / {std}; leave them unset")
        cfg.normalize_mean, cfg.normalize_std = mean, std


def normalise(images: torch.Tensor, cfg: FinetuneConfig) -> torch.Tensor:
    """uint8 crops [B, H, W, 3] -> network input: ImageNet's mean/std for an imagenet init, else
    ``cfg.normalize`` (settled by :func:`resolve_normalization` for a PatchTask init; ``patch`` by default)."""
    init = parse_init(cfg.init).kind
    if init == "imagenet":
        return normalize_images(images, "dataset", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if init == "patchtask" and cfg.normalize is None:
        raise ValueError("fine-tuning from a PatchTask init before its normalisation was settled "
                         "(resolve_normalization, when the driver prepares the run)")
    if cfg.normalize == "dataset":
        return normalize_images(images, "dataset", mean=cfg.normalize_mean, std=cfg.normalize_std)
    return normalize_images(images, cfg.normalize or "patch")


def predict(net, pixels: np.ndarray, cfg: FinetuneConfig, device) -> list[np.ndarray]:
    """Softmax probabilities per attribute for uint8 crops [N, H, W, 3]."""
    net.eval()
    outputs = None
    with torch.no_grad(), autocast(device, cfg.amp):
        for start in range(0, len(pixels), EVAL_BATCH):
            x = normalise(torch.from_numpy(pixels[start:start + EVAL_BATCH]).to(device), cfg)
            probs = [torch.softmax(logits.float(), 1).cpu().numpy() for logits in net(x)]
            outputs = probs if outputs is None else [np.concatenate([a, b]) for a, b in zip(outputs, probs)]
    net.train()
    return outputs


def evaluate(net, split: tuple[np.ndarray, np.ndarray], attributes: AttributeSet, cfg, device, rank, world):
    """Metrics over the whole split: each worker scores every world-th crop, rank 0 puts them back in order."""
    pixels, labels = split
    mine = predict(net, pixels[rank::world], cfg, device) if len(pixels[rank::world]) else None
    if dist.is_available() and dist.is_initialized():
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
    else:
        gathered = [mine]
    if rank != 0:
        return None
    probs = []
    for a, attribute in enumerate(attributes):
        full = np.zeros((len(pixels), attribute.num_classes), dtype=np.float32)
        for r, part in enumerate(gathered):
            if part is not None:
                full[r::world] = part[a]
        probs.append(full)
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


def finetune_loop(loop_config: dict) -> None:
    cfg = configlib.build(FinetuneConfig, loop_config["config"])
    attributes = AttributeSet.from_list(loop_config["attributes"])
    torch.set_num_threads(loop_config["torch_threads"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    # The driver built and initialised the net once (it holds the checkpoint files); every rank starts from it.
    net, _ = build_attribute_net(cfg, attributes, initialise=False)
    net.load_state_dict(ray.get(loop_config["initial_ref"]))
    if cfg.freeze_blocks:
        net.trunk.freeze_blocks(cfg.freeze_blocks)
    trunk_params = [p for p in net.trunk.parameters() if p.requires_grad]
    head_params = [p for n, p in net.named_parameters() if not n.startswith("trunk.") and p.requires_grad]
    groups = [{"params": trunk_params, "lr_mult": cfg.trunk_lr_mult}, {"params": head_params, "lr_mult": 1.0}]
    optimizer = build_optimizer([g for g in groups if g["params"]], cfg.optim)
    start_epoch, history = resume(net, optimizer, loop_config, "finetune", rank)
    model = ray.train.torch.prepare_model(net)
    base = model.module if hasattr(model, "module") else model

    val = ray.get(loop_config["val_ref"])
    test = ray.get(loop_config["test_ref"])
    # loss: balanced: per-attribute class weights from the driver (the training split's class frequencies).
    class_weights = loop_config.get("class_weights")
    if class_weights is not None:
        class_weights = [torch.tensor(w, dtype=torch.float32, device=device) for w in class_weights]
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start_epoch, cfg.epochs):
        lr = lr_at_epoch(cfg.optim, epoch, cfg.epochs)
        set_lr(optimizer, lr)
        batches = shard.iter_torch_batches(
            batch_size=cfg.batch_size, collate_fn=AttributeCollate(attributes, cfg.seed, epoch, cfg.mirror),
            drop_last=False, prefetch_batches=2, local_shuffle_buffer_size=cfg.batch_size * 4,
            local_shuffle_seed=(cfg.seed * 1_000_003 + epoch * 1_009 + rank) % 2**31)
        loss_sum = count = wait_s = 0.0
        received = 0
        skipped: Counter = Counter()
        t_epoch = time.perf_counter()
        for waited, batch in timed(batches):
            wait_s += waited
            skipped.update(batch["skipped"])
            received += batch["rows"]
            images, labels = batch["images"], batch["labels"]
            # An all-bad batch still steps (with zero weight): DDP ranks must take the same number of steps.
            weight = 1.0 if len(labels) else 0.0
            if not len(labels):
                images = torch.zeros((1, cfg.crop_height, cfg.crop_width, 3), dtype=torch.uint8)
                labels = torch.zeros((1, len(attributes)), dtype=torch.long)
            x = normalise(images.to(device, non_blocking=True), cfg)
            y = labels.to(device, non_blocking=True)
            with autocast(device, cfg.amp):
                logits = [l.float() for l in model(x)]
            loss = attribute_loss(logits, y, class_weights) * weight
            loss_value = loss.item()
            if not math.isfinite(loss_value):  # before the step: the weights stay those of the last good step
                raise FloatingPointError(f"fine-tuning diverged in epoch {epoch + 1} (loss {loss_value}); "
                                         f"lower optim.lr (now {cfg.optim.lr:g})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss_value * len(y)
            count += len(y) * weight
        elapsed = time.perf_counter() - t_epoch
        totals = sum_across_workers([loss_sum, count, wait_s, elapsed, received], device)
        skipped = gather_counters(skipped)
        last = epoch == cfg.epochs - 1
        val_metrics = test_metrics = None
        if last or (epoch + 1) % cfg.eval_every == 0:
            val_metrics = evaluate(base, val, attributes, cfg, device, rank, world)
        if last:
            test_metrics = evaluate(base, test, attributes, cfg, device, rank, world)
        metrics = {"epoch": epoch, "lr": lr, "loss": totals[0] / max(totals[1], 1), "crops": int(totals[1]),
                   "crops_per_s": totals[1] / max(totals[3], 1e-9), "data_wait_frac": totals[2] / max(totals[3], 1e-9),
                   "skipped_rows": int(sum(skipped.values())), "workers": world}
        metrics |= epoch_rows(loop_config["stream_rows"], int(totals[4]), int(sum(skipped.values())))
        metrics |= _summary_metrics("val", val_metrics) | _summary_metrics("test", test_metrics)
        history.append(metrics | {"skipped": dict(skipped), "val": to_jsonable(val_metrics),
                                  "test": to_jsonable(test_metrics)})
        if rank == 0:
            scores = scores_text(metrics) if val_metrics else ""
            print(f"[finetune] epoch {epoch + 1}/{cfg.epochs}: loss {metrics['loss']:.3f}{scores}, "
                  f"{metrics['crops_per_s'] * world:.0f} crops/s, skipped rows {metrics['skipped_rows']}", flush=True)
        report_epoch(metrics, rank=rank, net=base, optimizer=optimizer, epoch=epoch, loop_config=loop_config,
                     history=history)
