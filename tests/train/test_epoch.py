"""The one training step and epoch that pretraining, fine-tuning and the training benchmarks share
(patchray.train.epoch), without Ray."""
import math
import subprocess
import sys
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from patchray.patches import PatchTaskConfig
from patchray.train.config import OptimConfig
from patchray.train.epoch import (
    DEVICE_CHECK_EVERY,
    FILLER_LABEL,
    EpochTotals,
    StepResult,
    TrainStep,
    filled,
    padded,
    pretext_step,
    train_epoch,
)

CPU = torch.device("cpu")


def _batch(n: int, task: PatchTaskConfig, **extra) -> dict:
    p = task.patch_size
    return {"patches": torch.randint(0, 256, (n, p, p, 3), dtype=torch.uint8),
            "labels": torch.randint(0, task.num_classes, (n,)), **extra}


def test_the_shared_step_and_epoch_need_no_ray():
    """bench_gpu runs on a bare GPU machine: it and the step it times import no Ray."""
    code = ("import sys, patchray.train.epoch, patchray.bench.gpu; "
            "sys.exit(any(m.partition('.')[0] == 'ray' for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_an_epoch_is_timed_counted_and_summed_and_an_all_bad_batch_steps_with_weight_zero():
    task = PatchTaskConfig()
    step = pretext_step("tiny", task, OptimConfig(), seed=0, device=CPU)
    before = {k: v.clone() for k, v in step.net.state_dict().items()}
    batches = [_batch(16, task, skipped=Counter(), rows=2),
               _batch(0, task, skipped=Counter(truncated=2), rows=2),  # every row bad: still a step, weight 0
               _batch(8, task, skipped=Counter(truncated=1), rows=2)]
    seen = []
    totals = train_epoch(iter(batches), step, 0, CPU, on_step=lambda t: seen.append(t.steps))
    assert seen == [1, 2, 3] and totals.steps == 3
    assert totals.count == 24 and totals.received == 6 and totals.skipped == Counter(truncated=3)
    assert 0 < totals.loss < math.inf and 0 <= totals.accuracy <= 1 and totals.elapsed >= totals.wait_s >= 0
    assert any(not torch.equal(before[k], v) for k, v in step.net.state_dict().items())
    metrics = totals.metrics("patches", 1, stream_rows=7)
    assert metrics["patches"] == 24 and metrics["skipped_rows"] == 3 and metrics["workers"] == 1
    assert metrics["rows_trained"] == 3 and metrics["rows_dropped"] == 1
    assert metrics["patches_per_s"] == pytest.approx(24 / totals.elapsed)


def test_zero_weight_padding_and_the_totals_it_leaves():
    x, y, weight = padded(torch.zeros((0, 4, 4, 3), dtype=torch.uint8), torch.zeros(0, dtype=torch.long),
                          (1, 4, 4, 3), (1,))
    assert weight == 0.0 and x.shape == (1, 4, 4, 3) and y.shape == (1,)
    totals = EpochTotals()
    totals.add(StepResult(2.0, 4, 1.0, 3))
    totals.add(StepResult(0.0, 1, 0.0, 1))
    assert (totals.loss_sum, totals.count, totals.correct, totals.steps) == (8.0, 4, 3, 2)


def test_filled_batches_have_one_shape_and_step_as_the_short_batch_would():
    """Pretraining tops a short batch up to patches_per_step with repeats labelled FILLER_LABEL: the loss, the
    gradients and the correct count are the short batch's own; an empty batch is zeros of weight 0."""
    torch.manual_seed(0)
    patches, labels = torch.randn(5, 7), torch.randint(0, 3, (5,))
    x, y, weight = filled(patches, labels, 8)
    assert x.shape == (8, 7) and weight == 1.0 and (y[5:] == FILLER_LABEL).all() and torch.equal(x[5:], x[:3])
    assert filled(patches, labels, 5)[0] is patches
    empty, zeros, none = filled(patches[:0], labels[:0], 8)
    assert empty.shape == (8, 7) and not empty.any() and not zeros.any() and none == 0.0

    grads = []
    for inputs, targets in ((patches, labels), (x, y)):
        torch.manual_seed(1)   # the same initial weights for both
        net = torch.nn.Linear(7, 3)
        step = TrainStep(net, torch.optim.SGD(net.parameters(), lr=0.1), F.cross_entropy, device=CPU, amp=False,
                         lr=0.1, what="x")
        loss, logits = step(inputs, targets)
        grads.append((float(loss), net.weight.detach().clone(), int((logits.argmax(1) == targets).sum())))
    assert grads[0][0] == pytest.approx(grads[1][0]) and torch.allclose(grads[0][1], grads[1][1])
    assert grads[0][2] == grads[1][2]


def test_pretraining_steps_on_one_batch_shape_and_counts_only_real_patches():
    task = PatchTaskConfig()
    step = pretext_step("tiny", task, OptimConfig(), seed=0, device=CPU, rows=16)
    shapes = []
    step.net.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    batches = [_batch(16, task), _batch(5, task), _batch(0, task)]
    totals = train_epoch(iter(batches), step, 0, CPU)
    assert shapes == [(16, 3, 32, 32)] * 3
    assert totals.count == 21 and 0 <= totals.correct <= 21 and math.isfinite(totals.loss)


def test_a_diverged_loss_is_refused_before_the_step_naming_epoch_step_and_lr():
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    step = TrainStep(net, optimizer, lambda logits, y: F.cross_entropy(logits, y) * math.inf, device=CPU, amp=False,
                     lr=0.5, what="fine-tuning")
    with pytest.raises(FloatingPointError, match=r"fine-tuning diverged in epoch 2 \(step 7: loss inf\); "
                                                 r"lower optim.lr \(now 0.5\)"):
        step(torch.ones(2, 3), torch.tensor([0, 1]), epoch=1, step=7)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    optimizer.param_groups[0]["lr"] = 4.0  # optim.lr_scaling=linear at 8x the base batch: the rate in use is scaled
    with pytest.raises(FloatingPointError, match=r"lower optim.lr \(now 0.5; 4 in use at this step, after "
                                                 r"optim.schedule, lr_scaling and warmup_epochs\)"):
        step(torch.ones(2, 3), torch.tensor([0, 1]), epoch=1, step=8)


class _Diverging:
    """A loss that turns infinite from the ``bad``-th call on."""

    def __init__(self, bad: int):
        self.calls, self.bad = 0, bad

    def __call__(self, logits, y):
        self.calls += 1
        return F.cross_entropy(logits, y) * (math.inf if self.calls >= self.bad else 1.0)


def test_the_loss_is_read_every_step_on_the_cpu_and_every_so_many_steps_on_a_gpu():
    net = torch.nn.Linear(3, 2)
    make = lambda device, **kw: TrainStep(net, torch.optim.SGD(net.parameters(), lr=0.1), F.cross_entropy,  # noqa: E731
                                          device=torch.device(device), amp=False, lr=0.1, what="x", **kw)
    assert make("cpu").check_every == 1 and make("cuda").check_every == DEVICE_CHECK_EVERY > 1
    assert make("cuda", check_every=7).check_every == 7


def test_a_deferred_check_names_the_first_diverged_step_when_it_reads_the_losses():
    """A GPU step leaves its losses on the device; the check that reads them (every ``check_every`` steps, and
    at the epoch's end) names the first step that was not finite, not the step it ran at."""
    net = torch.nn.Linear(3, 2)
    step = TrainStep(net, torch.optim.SGD(net.parameters(), lr=0.5), _Diverging(bad=3), device=CPU, amp=False,
                     lr=0.5, what="pretraining", check_every=5)
    x, y = torch.ones(2, 3), torch.tensor([0, 1])
    for n in range(1, 5):   # steps 3 and 4 diverge, and nothing reads them yet
        loss, _ = step(x, y, epoch=0, step=n)
        assert isinstance(loss, torch.Tensor) and loss.ndim == 0
    with pytest.raises(FloatingPointError, match=r"pretraining diverged in epoch 1 \(step 3: loss inf\)"):
        step(x, y, epoch=0, step=5)   # the fifth step reads all five
    step.check()   # read once: nothing is left to refuse

    class Pretext:   # what train_epoch steps: a StepResult, and the check at the epoch's end
        def __init__(self):
            fresh = torch.nn.Linear(3, 2)   # the weights above went non-finite after step 3
            self.train = TrainStep(fresh, torch.optim.SGD(fresh.parameters(), lr=0.5), _Diverging(bad=2), device=CPU,
                                   amp=False, lr=0.5, what="fine-tuning", check_every=100)

        def __call__(self, batch, *, epoch, step):
            loss, _ = self.train(x, y, epoch=epoch, step=step)
            return StepResult(loss, 2, 1.0)

        def check(self):
            self.train.check()

    with pytest.raises(FloatingPointError, match=r"fine-tuning diverged in epoch 4 \(step 2: loss inf\)"):
        train_epoch(iter([{}, {}, {}]), Pretext(), 3, CPU)


def test_epoch_totals_sum_tensors_on_the_device_and_read_them_as_numbers():
    totals = EpochTotals()
    totals.add(StepResult(torch.tensor(2.0), 4, 1.0, torch.tensor(3)))
    totals.add(StepResult(torch.tensor(1.0), 2, 1.0, torch.tensor(1)))
    assert isinstance(totals.loss_sum, torch.Tensor)
    assert totals.loss == pytest.approx(10 / 6) and totals.accuracy == pytest.approx(4 / 6)
    assert isinstance(totals.loss, float) and float(totals.last_loss) == 1.0


def test_the_benchmarks_time_pretraining_s_own_step():
    from patchray.bench import gpu, train
    from patchray.train import epoch, pretrain_loop

    assert train.pretext_step is gpu.pretext_step is pretrain_loop.pretext_step is epoch.pretext_step
    assert train.train_epoch is pretrain_loop.train_epoch is epoch.train_epoch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (run by .ci/gpu.sh)")
@pytest.mark.parametrize("model", ["tiny", "resnet18"])
def test_cuda_steps_between_checks_never_wait_on_the_host(model):
    """Between the deferred checks a pretraining step, short batch and running sums included, queues its work and
    returns: torch's sync debug mode turns any host sync (an ``.item()``, a tensor ``if``, a pageable copy)
    into an error. The first two steps are left out: cuDNN's search and the optimiser's first state."""
    device = torch.device("cuda")
    task = PatchTaskConfig()
    step = pretext_step(model, task, OptimConfig(), seed=0, device=device, rows=128)
    batches = [{key: value.to(device) for key, value in _batch(n, task).items()} for n in (128, 128, 128, 96, 0)]
    step(batches[0], epoch=0, step=1)
    step(batches[1], epoch=0, step=2)
    torch.cuda.synchronize()
    totals = EpochTotals()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for n, batch in enumerate(batches[2:], start=3):
            assert n % DEVICE_CHECK_EVERY   # no check falls in here
            totals.add(step(batch, epoch=0, step=n))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert totals.count == 128 + 96 and math.isfinite(totals.loss)
    step.check()
