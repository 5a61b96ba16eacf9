"""One training epoch as every training path runs it: pretraining, fine-tuning and the training benchmarks
(``bench_train``, ``bench_gpu``) step with this code, so that a benchmark times what users run.

- ``TrainStep``: forward under autocast, the loss, a finite check (naming the epoch, the step and
  ``optim.lr``), then zero_grad / backward / step.
- ``PretextStep``: a batch of uint8 patches to the device, normalised (``InputNormalization``), in the net's
  memory format, then ``TrainStep`` with cross-entropy; ``pretext_step`` builds it with its net and optimiser.
- ``train_epoch`` and ``EpochTotals``: every batch of an epoch timed (the data wait), counted (rows received
  and skipped) and stepped; the sums an epoch's metrics are made of (``EpochTotals.metrics``).

Free of Ray, so the accelerator benchmark runs without it. The Ray side of a worker (its start, resuming, the
sums over workers, report and checkpoint) is ``patchray.train.worker``.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from patchray.accel import as_input, autocast, channels_last_for, maybe_compile, to_memory_format
from patchray.models import build_pretext_net
from patchray.patches import normalize_patches
from patchray.train.optim import build_optimizer
from patchray.train.rows import epoch_rows


class StepResult(NamedTuple):
    loss: float          # the batch's mean loss (0 for a zero-weight batch)
    count: int           # examples stepped on
    weight: float        # 1, or 0 for a batch whose rows were all bad (``padded``)
    correct: float = 0.0


class TrainStep:
    """One optimiser step: ``model(x)`` under autocast (logits as float32; a list of them for a net with several
    heads), ``loss_fn(logits, y) * weight``, refused when not finite, then zero_grad / backward / step."""

    def __init__(self, model, optimizer, loss_fn, *, device: torch.device, amp: bool, lr: float, what: str):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.device, self.amp, self.lr, self.what = device, amp, lr, what

    def __call__(self, x: torch.Tensor, y: torch.Tensor, weight: float = 1.0, *, epoch: int = 0,
                 step: int = 1) -> tuple[float, torch.Tensor | list[torch.Tensor]]:
        with autocast(self.device, self.amp):
            out = self.model(x)
            logits = [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()
        loss = self.loss_fn(logits, y) * weight
        value = loss.item()
        if not math.isfinite(value):  # before the step: the weights stay those of the last good step
            raise FloatingPointError(f"{self.what} diverged in epoch {epoch + 1} (step {step}: loss {value}); "
                                     f"lower optim.lr (now {self.lr:g})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return value, logits


def padded(inputs: torch.Tensor, labels: torch.Tensor, input_shape: tuple, label_shape: tuple):
    """(inputs, labels, weight). A batch whose rows were all bad still takes its step, as one zero input of
    weight 0: skipping it on one rank would leave the others waiting in DDP's all-reduce forever."""
    if len(labels):
        return inputs, labels, 1.0
    return torch.zeros(input_shape, dtype=torch.uint8), torch.zeros(label_shape, dtype=torch.long), 0.0


class InputNormalization:
    """uint8 patches -> network input as the run normalises them (``normalize_patches``), with the driver's
    ``{"mode", "mean", "std"}`` record (``patchray.train.pretrain.input_normalization``) held on ``device``."""

    def __init__(self, record: dict, device, channels_last: bool = False):
        self.mode, self.channels_last = record["mode"], channels_last
        self.stats = {k: torch.as_tensor(record[k], dtype=torch.float32).to(device) for k in ("mean", "std")
                      if self.mode == "dataset"}

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        return normalize_patches(patches, self.mode, **self.stats, channels_last=self.channels_last)


class PretextStep:
    """Pretraining's step on a batch ``{"patches": uint8, "labels"}``: to the device, normalised, in the net's
    memory format, cross-entropy. ``net`` is the module checkpoints save; ``optimizer`` its optimiser."""

    def __init__(self, train: TrainStep, net, normalize: InputNormalization, channels_last: bool):
        self.train, self.net, self.normalize, self.channels_last = train, net, normalize, channels_last
        self.optimizer = train.optimizer

    def __call__(self, batch: dict, *, epoch: int = 0, step: int = 1) -> StepResult:
        patches, labels, weight = padded(batch["patches"], batch["labels"], (1, *batch["patches"].shape[1:]), (1,))
        y = labels.to(self.train.device, non_blocking=True)
        x = as_input(self.normalize(patches.to(self.train.device, non_blocking=True)), self.channels_last)
        loss, logits = self.train(x, y, weight, epoch=epoch, step=step)
        return StepResult(loss, len(y), weight, (logits.argmax(1) == y).sum().item())


def accelerate(net, device: torch.device, *, channels_last: bool = False, compile: str = "", prepare=None):
    """``net`` on ``device`` in its memory format, wrapped by ``prepare`` (Ray Train's ``prepare_model``: DDP
    over the workers) and compiled: (the model to step, the module whose state_dict checkpoints hold)."""
    net = to_memory_format(net.to(device), channels_last)
    model = prepare(net) if prepare is not None else net
    base = model.module if hasattr(model, "module") else model
    return maybe_compile(model, compile), base


def pretext_step(model: str, task, optim, *, seed: int, device: torch.device, amp: bool = True,
                 channels_last: bool | None = None, compile: str = "", normalize: InputNormalization | None = None,
                 prepare=None) -> PretextStep:
    """The PatchTask net of trunk ``model`` for ``task`` (a ``PatchTaskConfig``), seeded with ``seed`` (the same
    initial weights on every rank; DDP also broadcasts rank 0's), on ``device``, with its SGD (``optim``, an
    ``OptimConfig``) and its step. ``normalize``: the run's input normalisation, by default ``task.normalize``'s
    without dataset statistics; ``channels_last`` None: on GPUs only."""
    torch.manual_seed(seed)
    net = build_pretext_net(model, task)
    channels_last = channels_last_for(channels_last, device)
    stepped, base = accelerate(net, device, channels_last=channels_last, compile=compile, prepare=prepare)
    optimizer = build_optimizer(net.parameters(), optim, output_weights=[net.classifier.weight])
    train = TrainStep(stepped, optimizer, F.cross_entropy, device=device, amp=amp, lr=optim.lr, what="pretraining")
    return PretextStep(train, base, normalize or InputNormalization({"mode": task.normalize}, device, channels_last),
                       channels_last)


@dataclass
class EpochTotals:
    """An epoch's running sums on one worker (after ``patchray.train.worker.reduce_epoch``, over all of them:
    ``elapsed`` and ``wait_s`` are then summed too, so rates and shares come out per worker)."""
    loss_sum: float = 0.0     # loss x examples
    correct: float = 0.0
    count: float = 0.0        # examples trained on (a zero-weight batch counts none)
    steps: int = 0
    wait_s: float = 0.0       # seconds spent waiting for the next batch
    elapsed: float = 0.0      # the epoch's seconds, once it ended
    received: int = 0         # rows the batches were made of, good and bad (``patchray.train.rows``)
    skipped: Counter = field(default_factory=Counter)  # bad rows, by reason
    last_loss: float = math.nan
    started: float = field(default_factory=time.perf_counter)

    def add(self, result: StepResult) -> None:
        self.loss_sum += result.loss * result.count * result.weight
        self.correct += result.correct * result.weight
        self.count += result.count * result.weight
        self.steps += 1
        self.last_loss = result.loss

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)

    def metrics(self, unit: str, workers: int, stream_rows: int) -> dict:
        """What every training epoch reports: mean loss, examples (``unit``, e.g. patches) and their rate per
        worker, the data-wait share, bad rows skipped, workers, and the epoch's account of every row."""
        skipped = int(sum(self.skipped.values()))
        return {"loss": self.loss, unit: int(self.count), f"{unit}_per_s": self.count / max(self.elapsed, 1e-9),
                "data_wait_frac": self.wait_s / max(self.elapsed, 1e-9), "skipped_rows": skipped,
                "workers": workers} | epoch_rows(stream_rows, int(self.received), skipped)


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on the CPU): before a clock stops."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(batches):
    """Yield (seconds spent waiting for the batch, batch): the data-wait fraction is measured here."""
    iterator = iter(batches)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield time.perf_counter() - start, batch


def train_epoch(batches, step: Callable[..., StepResult], epoch: int, device: torch.device,
                on_step: Callable[[EpochTotals], None] | None = None) -> EpochTotals:
    """One epoch on this worker: each batch (a dict; with ``skipped`` and ``rows`` when it comes from the
    training stream) through ``step(batch, epoch=, step=)``, timed and summed; ``on_step(totals)`` after each."""
    totals = EpochTotals()
    for waited, batch in timed(batches):
        totals.wait_s += waited
        totals.skipped.update(batch.get("skipped", ()))
        totals.received += batch.get("rows", 0)
        totals.add(step(batch, epoch=epoch, step=totals.steps + 1))
        if on_step is not None:
            on_step(totals)
    synchronize(device)
    totals.elapsed = time.perf_counter() - totals.started
    return totals
