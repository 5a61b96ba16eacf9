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

import inspect
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from patchray.accel import (
    GRAD_COMPRESSIONS,
    as_input,
    autocast,
    channels_last_for,
    maybe_compile,
    to_memory_format,
)
from patchray.models import build_pretext_net
from patchray.patches import checked_stats, normalize_patches
from patchray.train.optim import build_optimizer
from patchray.train.rows import epoch_rows


class StepResult(NamedTuple):
    # loss and correct are 0-dim tensors on the step's device (or floats): summing them there spares the host a
    # wait for the device every step; ``EpochTotals`` reads them when a number is needed.
    loss: float | torch.Tensor      # the batch's mean loss (0 for a zero-weight batch)
    count: int                      # examples stepped on
    weight: float                   # 1, or 0 for a batch whose rows were all bad (``padded``)
    correct: float | torch.Tensor = 0.0


# Steps between two reads of the loss on the host (the divergence check) on a GPU: each read makes the host wait
# for the device's queue to drain, so that the next step's kernels are not queued ahead of time.
DEVICE_CHECK_EVERY = 50


class TrainStep:
    """One optimiser step: ``model(x)`` under autocast (logits as float32; a list of them for a net with several
    heads), ``loss_fn(logits, y) * weight``, refused when not finite, then zero_grad / backward / step.

    The finite check reads the loss on the host. On the CPU that costs nothing, so it runs every step, before
    the step: a diverged loss never reaches the weights. On a GPU the losses wait on the device and are read
    every ``check_every`` steps (``DEVICE_CHECK_EVERY``) and when the epoch ends (:meth:`check`); the error then
    names the first step whose loss was not finite, and the run stops there as on the CPU (its weights are
    past saving: the checkpoints of earlier epochs are what stays)."""

    def __init__(self, model, optimizer, loss_fn, *, device: torch.device, amp: bool, lr: float, what: str,
                 check_every: int | None = None):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.device, self.amp, self.lr, self.what = device, amp, lr, what
        self.check_every = check_every or (1 if torch.device(device).type == "cpu" else DEVICE_CHECK_EVERY)
        self._unchecked: list[tuple[int, int, torch.Tensor]] = []   # (epoch, step, loss) not yet read

    def __call__(self, x: torch.Tensor, y: torch.Tensor, weight: float = 1.0, *, epoch: int = 0,
                 step: int = 1) -> tuple[torch.Tensor, torch.Tensor | list[torch.Tensor]]:
        with autocast(self.device, self.amp):
            out = self.model(x)
            logits = [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()
        loss = self.loss_fn(logits, y) * weight
        self._unchecked.append((epoch, step, loss.detach()))
        if len(self._unchecked) >= self.check_every:  # before the step: on the CPU the weights stay good
            self.check()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), logits

    def check(self) -> None:
        """Read the losses not yet checked (one wait for the device) and refuse the first that is not finite,
        naming its epoch, its step and ``optim.lr``."""
        if not self._unchecked:
            return
        values = torch.stack([loss for _, _, loss in self._unchecked]).tolist()
        where = [(epoch, step) for epoch, step, _ in self._unchecked]
        self._unchecked.clear()
        for (epoch, step), value in zip(where, values):
            if not math.isfinite(value):
                # the schedule, optim.lr_scaling and the warm-up make the rate in use another than optim.lr
                in_use = max(group["lr"] for group in self.optimizer.param_groups)
                raise FloatingPointError(
                    f"{self.what} diverged in epoch {epoch + 1} (step {step}: loss {value}); lower optim.lr (now "
                    f"{self.lr:g}" + (f"; {in_use:g} in use at this step, after optim.schedule, lr_scaling and "
                                      "warmup_epochs" if not math.isclose(in_use, self.lr) else "") + ")")


def padded(inputs: torch.Tensor, labels: torch.Tensor, input_shape: tuple, label_shape: tuple):
    """(inputs, labels, weight). A batch whose rows were all bad still takes its step, as one zero input of
    weight 0: skipping it on one rank would leave the others waiting in DDP's all-reduce forever."""
    if len(labels):
        return inputs, labels, 1.0
    return (torch.zeros(input_shape, dtype=torch.uint8, device=inputs.device),
            torch.zeros(label_shape, dtype=torch.long, device=labels.device), 0.0)


# The label of a row added to fill a batch: cross-entropy ignores it (torch's default ``ignore_index``), and no
# prediction equals it, so it adds no loss, no gradient and no correct answer.
FILLER_LABEL = -100


def filled(patches: torch.Tensor, labels: torch.Tensor, rows: int):
    """(patches, labels, weight) of exactly ``rows`` rows, on the batch's device: every step has one shape, so
    cuDNN searches its algorithms once and a CUDA graph can replay the step. A short batch (bad rows dropped, an
    epoch's last) is topped up with repeats of its own patches labelled ``FILLER_LABEL``; an empty one is
    ``rows`` zero patches of weight 0 (it still steps: see ``padded``). No host sync: ``len`` is known."""
    count = len(labels)
    if count == 0:
        return (torch.zeros((rows, *patches.shape[1:]), dtype=patches.dtype, device=patches.device),
                torch.zeros(rows, dtype=torch.long, device=labels.device), 0.0)
    if count >= rows:
        return patches, labels, 1.0
    repeats = torch.arange(rows - count, device=patches.device) % count
    return (torch.cat([patches, patches[repeats]]),
            torch.cat([labels, labels.new_full((rows - count,), FILLER_LABEL)]), 1.0)


class InputNormalization:
    """uint8 patches -> network input as the run normalises them (``normalize_patches``), with the driver's
    ``{"mode", "mean", "std"}`` record (``patchray.train.pretrain.input_normalization``) held on ``device``."""

    def __init__(self, record: dict, device, channels_last: bool = False):
        self.mode, self.channels_last = record["mode"], channels_last
        # on the device and checked once: a step then copies nothing to the device and reads nothing back
        self.stats = checked_stats(record["mean"], record["std"], device) if self.mode == "dataset" else {}

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        return normalize_patches(patches, self.mode, **self.stats, channels_last=self.channels_last,
                                 std_checked=True)


class PretextStep:
    """Pretraining's step on a batch ``{"patches": uint8, "labels"}``: to the device, normalised, in the net's
    memory format, cross-entropy. ``net`` is the module checkpoints save; ``optimizer`` its optimiser.
    ``rows``: every batch is ``filled`` to this many patches (a fixed shape); None: as it comes."""

    def __init__(self, train: TrainStep, net, normalize: InputNormalization, channels_last: bool,
                 rows: int | None = None):
        self.train, self.net, self.normalize, self.channels_last = train, net, normalize, channels_last
        self.optimizer, self.rows = train.optimizer, rows

    def __call__(self, batch: dict, *, epoch: int = 0, step: int = 1) -> StepResult:
        device = self.train.device
        patches = batch["patches"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        count = len(labels)
        if self.rows is None:
            patches, labels, weight = padded(patches, labels, (1, *patches.shape[1:]), (1,))
        else:
            patches, labels, weight = filled(patches, labels, self.rows)
        x = as_input(self.normalize(patches), self.channels_last)
        loss, logits = self.train(x, labels, weight, epoch=epoch, step=step)
        return StepResult(loss, count, weight, (logits.argmax(1) == labels).sum())

    def check(self) -> None:
        self.train.check()


def ddp_options() -> dict:
    """DistributedDataParallel's settings for patchray's nets, which use every parameter in every step, in a graph
    that never changes:

    - ``gradient_as_bucket_view``: gradients live in the all-reduce buckets (no copy into them and back out);
    - ``static_graph``: DDP learns the graph once instead of tracking it every step;
    - buffers (BatchNorm's running statistics) are not sent from rank 0 before every forward: ``sync_buffers``
      sends them once before an evaluation or a checkpoint. No training step reads them (BatchNorm in training
      mode normalises with the batch's own statistics), and rank 0's, which checkpoints save, evolve from its own
      batches either way.
    """
    from torch.nn.parallel import DistributedDataParallel

    # torch 2.14 renamed the buffer option; the GPU machines' torch (2.11) knows only the old name
    buffers = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
        DistributedDataParallel.__init__).parameters else "broadcast_buffers"
    return {"gradient_as_bucket_view": True, "static_graph": True, buffers: False}


def compress_gradients(model, compression: str) -> None:
    """All-reduce ``model``'s gradients (a DistributedDataParallel) in fp16 or bf16, half the bytes of float32,
    decompressed before the update: for workers that talk over a network (one GPU a node), where resnet18's
    53 MB a step is the wait. "none", or a model that is not DDP (one worker): nothing changes."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel

    if compression not in GRAD_COMPRESSIONS:
        raise ValueError(f"grad_compression must be one of {GRAD_COMPRESSIONS}, got {compression!r}")
    if compression != "none" and isinstance(model, DistributedDataParallel):
        hook = default_hooks.fp16_compress_hook if compression == "fp16" else default_hooks.bf16_compress_hook
        model.register_comm_hook(None, hook)


def sync_buffers(net) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) to every worker (see ``ddp_options``): all of them then
    evaluate with what the checkpoint holds. Every rank must call it; alone, nothing to do."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in net.buffers():
            dist.broadcast(buffer, src=0)


def accelerate(net, device: torch.device, *, channels_last: bool = False, compile: str = "", prepare=None):
    """``net`` on ``device`` in its memory format, wrapped by ``prepare`` (Ray Train's ``prepare_model``: DDP
    over the workers) and compiled: (the model to step, the module whose state_dict checkpoints hold)."""
    net = to_memory_format(net.to(device), channels_last)
    model = prepare(net) if prepare is not None else net
    base = model.module if hasattr(model, "module") else model
    return maybe_compile(model, compile), base


def pretext_step(model: str, task, optim, *, seed: int, device: torch.device, amp: bool = True,
                 channels_last: bool | None = None, compile: str = "", normalize: InputNormalization | None = None,
                 prepare=None, rows: int | None = None, check_every: int | None = None) -> PretextStep:
    """The PatchTask net of trunk ``model`` for ``task`` (a ``PatchTaskConfig``), seeded with ``seed`` (the same
    initial weights on every rank; DDP also broadcasts rank 0's), on ``device``, with its SGD (``optim``, an
    ``OptimConfig``) and its step. ``normalize``: the run's input normalisation, by default ``task.normalize``'s
    without dataset statistics; ``channels_last`` None: on; ``rows``: the fixed batch size (``PretextStep``);
    ``check_every``: ``TrainStep``'s (None: its default for the device)."""
    torch.manual_seed(seed)
    net = build_pretext_net(model, task)
    channels_last = channels_last_for(channels_last, device)
    stepped, base = accelerate(net, device, channels_last=channels_last, compile=compile, prepare=prepare)
    optimizer = build_optimizer(net.parameters(), optim, output_weights=[net.classifier.weight])
    train = TrainStep(stepped, optimizer, F.cross_entropy, device=device, amp=amp, lr=optim.lr, what="pretraining",
                      check_every=check_every)
    return PretextStep(train, base, normalize or InputNormalization({"mode": task.normalize}, device, channels_last),
                       channels_last, rows)


@dataclass
class EpochTotals:
    """An epoch's running sums on one worker (after ``patchray.train.worker.reduce_epoch``, over all of them:
    ``elapsed`` and ``wait_s`` are then summed too, so rates and shares come out per worker)."""
    loss_sum: float | torch.Tensor = 0.0     # loss x examples (a tensor on the step's device while it runs)
    correct: float | torch.Tensor = 0.0
    count: float = 0.0        # examples trained on (a zero-weight batch counts none)
    steps: int = 0
    wait_s: float = 0.0       # seconds spent waiting for the next batch
    elapsed: float = 0.0      # the epoch's seconds, once it ended
    received: int = 0         # rows the batches were made of, good and bad (``patchray.train.rows``)
    skipped: Counter = field(default_factory=Counter)  # bad rows, by reason
    last_loss: float | torch.Tensor = math.nan
    started: float = field(default_factory=time.perf_counter)

    def add(self, result: StepResult) -> None:
        examples = result.count * result.weight   # on the host: one device op for the loss, not two
        self.loss_sum += result.loss * examples
        self.correct += result.correct * result.weight
        self.count += examples
        self.steps += 1
        self.last_loss = result.loss

    @property
    def loss(self) -> float:   # reading it waits for the device: at a progress line or the epoch's end
        return float(self.loss_sum) / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        return float(self.correct) / max(self.count, 1)

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
    if hasattr(step, "check"):  # the losses a GPU step left unread
        step.check()
    synchronize(device)
    totals.elapsed = time.perf_counter() - totals.started
    return totals
