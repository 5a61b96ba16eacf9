"""The Ray Train worker loop of PatchTask pretraining (runs inside each training worker)."""
from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F

from patchray import config as configlib
from patchray.models import PretextNet, build_trunk
from patchray.patches import normalize_patches, validation_patches
from patchray.pipeline import patch_batches
from patchray.accel import as_input, autocast, channels_last_for, maybe_compile, to_memory_format, tune_for
from patchray.train.config import PretrainConfig
from patchray.train.optim import build_optimizer, lr_at_epoch, set_lr
from patchray.train.rows import epoch_rows
from patchray.train.telemetry import TrainingMetrics
from patchray.train.worker import gather_counters, report_epoch, resume, sum_across_workers, timed

EVAL_BATCH = 512
PROGRESS_EVERY_S = 30.0
METRICS_EVERY_S = 2.0  # live gauges for the dashboard (patchray.train.telemetry)


def build_pretext_net(cfg: PretrainConfig) -> PretextNet:
    trunk = build_trunk(cfg.model)
    return PretextNet(trunk, cfg.task.num_classes, patch_size=cfg.task.patch_size, pairwise=cfg.task.pairwise)


class InputNormalization:
    """uint8 patches -> network input as the run normalises them (``normalize_patches``), with the driver's
    ``{"mode", "mean", "std"}`` record (``patchray.train.pretrain.input_normalization``) held on ``device``."""

    def __init__(self, record: dict, device):
        self.mode = record["mode"]
        self.stats = {k: torch.as_tensor(record[k], dtype=torch.float32).to(device) for k in ("mean", "std")
                      if self.mode == "dataset"}

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        return normalize_patches(patches, self.mode, **self.stats)


def evaluate(net, patches: np.ndarray, labels: np.ndarray, cfg: PretrainConfig, device, num_classes: int,
             channels_last: bool = False, normalize: InputNormalization | None = None):
    """Loss sum, correct count, count and confusion matrix on this worker's validation slice."""
    normalize = normalize or InputNormalization({"mode": cfg.task.normalize}, device)
    net.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    loss_sum = correct = 0.0
    with torch.no_grad(), autocast(device, cfg.amp):
        for start in range(0, len(labels), EVAL_BATCH):
            x = normalize(torch.from_numpy(patches[start:start + EVAL_BATCH]).to(device))
            x = as_input(x, channels_last)
            y = torch.from_numpy(labels[start:start + EVAL_BATCH]).to(device)
            logits = net(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            pred = logits.argmax(1)
            correct += (pred == y).sum().item()
            confusion.index_put_((y, pred), torch.ones_like(y, dtype=torch.float64), accumulate=True)
    net.train()
    return loss_sum, correct, len(labels), confusion


def pretrain_loop(loop_config: dict) -> None:
    cfg = configlib.build(PretrainConfig, loop_config["config"])
    torch.set_num_threads(loop_config["torch_threads"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    tune_for(device)

    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    net = build_pretext_net(cfg)
    optimizer = build_optimizer(net.parameters(), cfg.optim, output_weights=[net.classifier.weight])
    start_epoch, history = resume(net, optimizer, loop_config, "pretrain", rank)
    telemetry = TrainingMetrics(cfg.name, rank)
    channels_last = channels_last_for(cfg.channels_last, device)
    model = ray.train.torch.prepare_model(to_memory_format(net, channels_last))
    base = model.module if hasattr(model, "module") else model  # what checkpoints save
    model = maybe_compile(model, cfg.compile)

    val_pixels, val_ids = ray.get(loop_config["val_ref"])
    normalize = InputNormalization(ray.get(loop_config["normalization_ref"]), device)
    mine = slice(rank, None, world)
    val_patches, val_labels = validation_patches(val_pixels[mine], list(val_ids[mine]), cfg.task, cfg.seed)
    num_classes = cfg.task.num_classes

    shard = ray.train.get_dataset_shard("train")
    patches_seen = history[-1]["patches_seen"] if history else 0
    for epoch in range(start_epoch, cfg.epochs):
        lr = lr_at_epoch(cfg.optim, epoch, cfg.epochs)
        set_lr(optimizer, lr)
        batches = patch_batches(shard, cfg.task, cfg.seed, epoch, cfg.crops_per_batch, rank,
                                decode_device=device if cfg.decode_on == "trainer" else None, fit=cfg.crop_fit)
        loss_sum = correct = count = steps = 0.0
        wait_s = 0.0
        received = 0
        skipped: Counter = Counter()
        t_epoch = last_print = last_metrics = time.perf_counter()
        for waited, batch in timed(batches):
            wait_s += waited
            skipped.update(batch["skipped"])
            received += batch["rows"]
            y = batch["labels"].to(device, non_blocking=True)
            patches = batch["patches"]
            # A batch whose rows were all bad still takes its step: skipping it on one rank would leave
            # the others waiting in DDP's all-reduce forever. Its loss is weighted to zero.
            weight = 1.0 if len(y) else 0.0
            if not len(y):
                patches = torch.zeros((1, *patches.shape[1:]), dtype=torch.uint8)
                y = torch.zeros(1, dtype=torch.long, device=device)
            x = as_input(normalize(patches.to(device, non_blocking=True)), channels_last)
            with autocast(device, cfg.amp):
                logits = model(x).float()
            loss = F.cross_entropy(logits, y) * weight
            loss_value = loss.item()
            if not math.isfinite(loss_value):  # before the step: the weights stay those of the last good step
                raise FloatingPointError(
                    f"pretraining diverged in epoch {epoch + 1} (step {int(steps) + 1}: loss {loss_value}); "
                    f"lower optim.lr (now {cfg.optim.lr:g})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss_value * len(y) * weight
            correct += (logits.argmax(1) == y).sum().item() * weight
            count += len(y) * weight
            steps += 1
            now = time.perf_counter()
            if now - last_metrics > METRICS_EVERY_S:
                telemetry.progress(patches_per_s=count / (now - t_epoch), data_wait_frac=wait_s / (now - t_epoch),
                                   loss=loss_sum / max(count, 1), acc=correct / max(count, 1))
                last_metrics = now
            if rank == 0 and now - last_print > PROGRESS_EVERY_S:
                print(f"[pretrain] epoch {epoch + 1}/{cfg.epochs} step {int(steps)}: loss {loss_sum / count:.3f} "
                      f"acc {correct / count:.3f}, {count / (now - t_epoch):.0f} patches/s on this worker",
                      flush=True)
                last_print = now
        elapsed = time.perf_counter() - t_epoch
        totals = sum_across_workers([loss_sum, correct, count, wait_s, elapsed, received], device)
        skipped = gather_counters(skipped)
        v_loss, v_correct, v_count, confusion = evaluate(base, val_patches, val_labels, cfg, device, num_classes,
                                                           channels_last, normalize)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(confusion)
        v_loss, v_correct, v_count = sum_across_workers([v_loss, v_correct, v_count], device)
        patches_seen += int(totals[2])
        metrics = {
            "epoch": epoch,
            "lr": lr,
            "loss": totals[0] / max(totals[2], 1),
            "train_acc": totals[1] / max(totals[2], 1),
            "val_loss": v_loss / max(v_count, 1),
            "val_acc": v_correct / max(v_count, 1),
            "chance": 1.0 / num_classes,
            "patches": int(totals[2]),
            "patches_seen": patches_seen,
            # per worker, averaged: what one accelerator sustains
            "patches_per_s": totals[2] / max(totals[4], 1e-9),
            "data_wait_frac": totals[3] / max(totals[4], 1e-9),
            "epoch_s": totals[4] / world,
            "skipped_rows": int(sum(skipped.values())),
            "workers": world,
        } | epoch_rows(loop_config["stream_rows"], int(totals[5]), int(sum(skipped.values())))
        history.append(metrics | {"skipped": dict(skipped),
                                  "val_confusion": confusion.cpu().numpy().astype(int).tolist()
                                  if not cfg.task.pairwise else None})
        if rank == 0:
            telemetry.epoch(metrics, sum((Counter(h["skipped"]) for h in history), Counter()))
            print(f"[pretrain] epoch {epoch + 1}/{cfg.epochs}: loss {metrics['loss']:.3f} "
                  f"train acc {metrics['train_acc']:.3f} val acc {metrics['val_acc']:.3f} "
                  f"(chance {metrics['chance']:.3f}), {metrics['patches_per_s'] * world:.0f} patches/s, "
                  f"data wait {metrics['data_wait_frac']:.0%}, skipped rows {metrics['skipped_rows']}, "
                  f"dropped {metrics['rows_dropped']}", flush=True)
        report_epoch(metrics, rank=rank, net=base, optimizer=optimizer, epoch=epoch, loop_config=loop_config,
                     history=history)
