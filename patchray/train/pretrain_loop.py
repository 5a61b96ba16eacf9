"""The Ray Train worker loop of PatchTask pretraining (runs inside each training worker): a recipe of the shared
parts (``patchray.train.epoch``: the step and the epoch; ``patchray.train.worker``: start, resume, sums over
workers, report and checkpoint), with what only pretraining has: the pretext validation and its confusion
matrix, live gauges and a progress line."""
from __future__ import annotations

import time
from collections import Counter

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F

from patchray import config as configlib
from patchray.accel import as_input, autocast, channels_last_for
from patchray.patches import validation_patches
from patchray.pipeline import patch_batches
from patchray.probe import crop_normalizer
from patchray.train.config import PretrainConfig
from patchray.train.epoch import EpochTotals, InputNormalization, pretext_step, sync_buffers, train_epoch
from patchray.train.optim import StepSchedule, set_lr, stepping_rates, steps_per_epoch
from patchray.train.telemetry import TrainingMetrics
from patchray.train.worker import (
    gather_rows,
    prepare_ddp,
    reduce_epoch,
    report_epoch,
    resume,
    start_worker,
    sum_across_workers,
)

EVAL_BATCH = 512
PROGRESS_EVERY_S = 30.0
METRICS_EVERY_S = 2.0  # live gauges for the dashboard (patchray.train.telemetry)


def evaluate(net, patches: np.ndarray, labels: np.ndarray, cfg: PretrainConfig, device, num_classes: int,
             channels_last: bool = False, normalize: InputNormalization | None = None):
    """Loss sum, correct count, count and confusion matrix on this worker's validation slice."""
    normalize = normalize or InputNormalization({"mode": cfg.task.normalize}, device, channels_last)
    net.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: one read at the end
    with torch.no_grad(), autocast(device, cfg.amp):
        for start in range(0, len(labels), EVAL_BATCH):
            x = normalize(torch.from_numpy(patches[start:start + EVAL_BATCH]).to(device))
            x = as_input(x, channels_last)
            y = torch.from_numpy(labels[start:start + EVAL_BATCH]).to(device)
            logits = net(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            confusion.index_put_((y, logits.argmax(1)), torch.ones_like(y, dtype=torch.float64), accumulate=True)
    net.train()
    return float(loss_sum), float(confusion.trace()), len(labels), confusion


def probe_trunk(net, probe, cfg: PretrainConfig, normalize, device, rank: int, world: int) -> dict | None:
    """The online probe (``patchray.probe``) of ``net``'s trunk as it is now: each worker embeds every world-th
    probe crop (``normalize``: the run's ``crop_normalizer``, built once), rank 0 puts the features back in order,
    fits both probes and returns their scores with the seconds the probe took (None on the other ranks). Every
    rank must call it: the features are gathered."""
    from patchray.probe import embed, probe_scores

    started = time.perf_counter()
    parts = (probe.train_pixels, probe.val_pixels)
    mine = [embed(net.trunk, pixels[rank::world], normalize, device, pool=cfg.probe.pool) for pixels in parts]
    features = gather_rows(mine, [len(pixels) for pixels in parts], rank, world)
    if features is None:
        return None
    scores = probe_scores(features[0], probe.train_labels, features[1], probe.val_labels, probe.attributes,
                          k=cfg.probe.k, l2=cfg.probe.l2)
    return scores | {"probe_s": time.perf_counter() - started}


def probe_text(metrics: dict) -> str:
    """``attribute probe mA 0.561 (untrained 0.523), kNN mA 0.540, 3 s`` for the epoch line (n/a: undefined,
    e.g. no labeled val crop)."""
    def number(key: str) -> str:
        return "n/a" if metrics.get(key) is None else f"{metrics[key]:.3f}"

    init = f" (untrained {number('init_probe_mA')})" if "init_probe_mA" in metrics else ""
    return f"attribute probe mA {number('probe_mA')}{init}, kNN mA {number('knn_mA')}, {metrics['probe_s']:.0f} s"


def probes_after(epoch: int, cfg: PretrainConfig) -> bool:
    """Whether the probe runs after this epoch (0-based): every ``probe.every`` epochs and after the last."""
    return (epoch + 1) % cfg.probe.every == 0 or epoch == cfg.epochs - 1


class LiveProgress:
    """Mid-epoch: this worker's gauges every ``METRICS_EVERY_S``, and on rank 0 a progress line every
    ``PROGRESS_EVERY_S`` (``train_epoch``'s ``on_step``)."""

    def __init__(self, telemetry: TrainingMetrics, rank: int, epoch: int, epochs: int):
        self.telemetry, self.rank, self.epoch, self.epochs = telemetry, rank, epoch, epochs
        self.last_print = self.last_metrics = time.perf_counter()
        self.first_step_at: float | None = None  # wall-clock time: the driver compares it with its own

    def __call__(self, totals: EpochTotals) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()
        now = time.perf_counter()
        seconds = now - totals.started
        if now - self.last_metrics > METRICS_EVERY_S:
            self.telemetry.progress(patches_per_s=totals.count / seconds, data_wait_frac=totals.wait_s / seconds,
                                    loss=totals.loss, acc=totals.accuracy)
            self.last_metrics = now
        if self.rank == 0 and now - self.last_print > PROGRESS_EVERY_S:
            print(f"[pretrain] epoch {self.epoch + 1}/{self.epochs} step {totals.steps}: loss {totals.loss:.3f} "
                  f"acc {totals.accuracy:.3f}, {totals.count / seconds:.0f} patches/s on this worker", flush=True)
            self.last_print = now


def pretrain_loop(loop_config: dict) -> None:
    cfg = configlib.build(PretrainConfig, loop_config["config"])
    rank, world, device = start_worker(loop_config)
    started_at = time.time()   # wall clock, as first_step_at: the driver splits its startup phases with them
    normalization = ray.get(loop_config["normalization_ref"])
    # Normalised straight into the net's memory format (no NCHW copy for channels-last to undo).
    normalize = InputNormalization(normalization, device, channels_last_for(cfg.channels_last, device))
    step = pretext_step(cfg.model, cfg.task, cfg.optim, seed=cfg.seed, device=device, amp=cfg.amp,
                        channels_last=cfg.channels_last, compile=cfg.compile, normalize=normalize,
                        prepare=prepare_ddp(cfg.grad_compression), rows=cfg.patches_per_step)
    start_epoch, history = resume(step.net, step.optimizer, loop_config, "pretrain", rank)
    telemetry = TrainingMetrics(cfg.name, rank)

    val_pixels, val_ids = ray.get(loop_config["val_ref"])
    mine = slice(rank, None, world)
    val_patches, val_labels = validation_patches(val_pixels[mine], list(val_ids[mine]), cfg.task, cfg.seed)
    num_classes = cfg.task.num_classes

    probe = ray.get(loop_config["probe_ref"]) if loop_config.get("probe_ref") is not None else None
    # The untrained trunk's probe: the baseline the pretraining's own probes are read against (a fresh run only;
    # a resumed or continued one has it in its history).
    probe_normalize = crop_normalizer(normalization) if probe is not None else None  # crops as the run's patches
    at_init = probe_trunk(step.net, probe, cfg, probe_normalize, device, rank, world) \
        if probe is not None and start_epoch == 0 else None

    ready_at = time.time()   # net, its checkpoint, validation patches and the untrained trunk's probe are ready
    shard = ray.train.get_dataset_shard("train")
    patches_seen = history[-1]["patches_seen"] if history else 0
    schedule = StepSchedule(cfg.optim, cfg.epochs, steps_per_epoch(loop_config["stream_rows"], world,
                                                                   cfg.crops_per_step), cfg.patches_per_step * world)
    for epoch in range(start_epoch, cfg.epochs):
        set_lr(step.optimizer, schedule.at(epoch))
        lr = schedule.at(epoch, schedule.steps_per_epoch - 1)   # reported: the epoch's rate once warmed up
        batches = patch_batches(shard, cfg.task, cfg.seed, epoch, cfg.crops_per_step, rank,
                                decode_device=device if cfg.decode_on == "trainer" else None, fit=cfg.input.crop_fit,
                                cut_in_data=cfg.cut_on == "data", device=device)
        live = LiveProgress(telemetry, rank, epoch, cfg.epochs)
        totals = reduce_epoch(train_epoch(batches, step, epoch, device,
                                          on_step=stepping_rates(schedule, step.optimizer, epoch, live)), device)
        sync_buffers(step.net)   # every rank evaluates with rank 0's BatchNorm statistics, which it saves
        v_loss, v_correct, v_count, confusion = evaluate(step.net, val_patches, val_labels, cfg, device,
                                                         num_classes, step.channels_last, normalize)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(confusion)
        v_loss, v_correct, v_count = sum_across_workers([v_loss, v_correct, v_count], device)
        probed = probe_trunk(step.net, probe, cfg, probe_normalize, device, rank, world) \
            if probe is not None and probes_after(epoch, cfg) else None
        patches_seen += int(totals.count)
        metrics = {"epoch": epoch, "lr": lr} | totals.metrics("patches", world, loop_config["stream_rows"]) | {
            "train_acc": totals.accuracy, "val_loss": v_loss / max(v_count, 1), "val_acc": v_correct / max(v_count, 1),
            "chance": 1.0 / num_classes, "patches_seen": patches_seen, "epoch_s": totals.elapsed / world}
        if probed is not None:
            metrics |= probed
        if at_init is not None and epoch == start_epoch:
            metrics |= {f"init_{key}": value for key, value in at_init.items()}
        if epoch == start_epoch and live.first_step_at is not None:
            metrics |= {"worker_started_at": started_at, "worker_ready_at": ready_at,
                        "first_step_at": live.first_step_at}
        history.append(metrics | {"skipped": dict(totals.skipped),
                                  "val_confusion": confusion.cpu().numpy().astype(int).tolist()
                                  if not cfg.task.pairwise else None})
        if rank == 0:
            telemetry.epoch(metrics, sum((Counter(h["skipped"]) for h in history), Counter()))
            print(f"[pretrain] epoch {epoch + 1}/{cfg.epochs}: loss {metrics['loss']:.3f} "
                  f"train acc {metrics['train_acc']:.3f} val acc {metrics['val_acc']:.3f} "
                  f"(chance {metrics['chance']:.3f}), {metrics['patches_per_s'] * world:.0f} patches/s, "
                  f"data wait {metrics['data_wait_frac']:.0%}, skipped rows {metrics['skipped_rows']}, "
                  f"dropped {metrics['rows_dropped']}", flush=True)
            if probed is not None:
                print(f"[pretrain] epoch {epoch + 1}/{cfg.epochs}: {probe_text(metrics)}", flush=True)
        report_epoch(metrics, rank=rank, net=step.net, optimizer=step.optimizer, epoch=epoch,
                     loop_config=loop_config, history=history)
