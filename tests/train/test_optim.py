import pytest

from patchray.train.config import OptimConfig
from patchray.train.optim import lr_at_epoch


def test_step_schedule_halves_every_step():
    cfg = OptimConfig(lr=0.01, schedule="step", step_epochs=2, gamma=0.5)
    assert [lr_at_epoch(cfg, e, 6) for e in range(6)] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])


def test_cosine_and_none():
    cfg = OptimConfig(lr=0.1, schedule="cosine")
    lrs = [lr_at_epoch(cfg, e, 4) for e in range(4)]
    assert lrs[0] == pytest.approx(0.1) and lrs[2] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lr_at_epoch(OptimConfig(lr=0.3, schedule="none"), 9, 10) == 0.3


def test_set_lr_scales_groups_with_a_multiplier():
    import torch

    from patchray.train.optim import set_lr

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr_mult": 0.1}, {"params": [b]}], lr=1.0)
    set_lr(opt, 0.02)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.002, 0.02])
