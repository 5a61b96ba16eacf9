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
from patchray.train.epoch import EpochTotals, StepResult, TrainStep, padded, pretext_step, train_epoch

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


def test_the_benchmarks_time_pretraining_s_own_step():
    from patchray.bench import gpu, train
    from patchray.train import epoch, pretrain_loop

    assert train.pretext_step is gpu.pretext_step is pretrain_loop.pretext_step is epoch.pretext_step
    assert train.train_epoch is pretrain_loop.train_epoch is epoch.train_epoch
