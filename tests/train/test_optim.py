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


def test_output_l2_penalises_the_output_layer_weights_only_as_the_reference_loss_term():
    """The reference adds l2 * sum(W_out^2) to its loss (lasagne l2 of the output layer, whose bias is not
    regularisable; l2 = 1e-3, 0.5 here to see it) under SGD Nesterov: optim.output_l2 must take the same steps."""
    import torch
    import torch.nn.functional as F

    from patchray.models import PretextNet, build_trunk
    from patchray.train.optim import build_optimizer

    torch.manual_seed(0)
    net = PretextNet(build_trunk("tiny", dropout=0.0), num_classes=18)
    with torch.no_grad():
        net.classifier.weight.normal_(std=0.1)
        net.classifier.bias.normal_(std=0.1)
    twin = PretextNet(build_trunk("tiny", dropout=0.0), num_classes=18)
    twin.load_state_dict(net.state_dict())
    ours = build_optimizer(net.parameters(), OptimConfig(output_l2=0.5), [net.classifier.weight])
    reference = build_optimizer(twin.parameters(), OptimConfig())
    assert [g["weight_decay"] for g in ours.param_groups] == pytest.approx([0.0, 1.0])
    assert ours.param_groups[1]["params"] == [net.classifier.weight]  # not its bias, nor any other layer
    plain = PretextNet(build_trunk("tiny", dropout=0.0), num_classes=18)
    plain.load_state_dict(net.state_dict())
    without = build_optimizer(plain.parameters(), OptimConfig())
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 18, (8,))
    for _ in range(3):  # momentum carries the penalty's gradient on
        for model, optimizer, penalty in ((net, ours, 0.0), (twin, reference, 0.5), (plain, without, 0.0)):
            optimizer.zero_grad()
            (F.cross_entropy(model(x), y) + penalty * model.classifier.weight.pow(2).sum()).backward()
            optimizer.step()
    for (name, a), b in zip(net.state_dict().items(), twin.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
    assert not torch.allclose(plain.classifier.weight, net.classifier.weight, rtol=1e-4, atol=1e-6)  # it did act
    with pytest.raises(ValueError, match="output layer"):
        build_optimizer(net.parameters(), OptimConfig(output_l2=1e-3))
    with pytest.raises(ValueError, match="output_l2"):
        OptimConfig(output_l2=-1.0)


def test_the_fused_update_is_sgd_s_rule_and_the_default():
    """optim.fused (the default) runs the whole update as one kernel; it must step as torch's per-list SGD does,
    momentum, Nesterov, weight decay and the output layer's own group included."""
    import torch

    from patchray.train.optim import build_optimizer

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = [build_optimizer(net.parameters(), OptimConfig(weight_decay=1e-3, output_l2=1e-2, fused=fused),
                                  output_weights=[net[2].weight]) for net, fused in zip(nets, (True, False))]
    assert optimizers[0].defaults["fused"] and not optimizers[1].defaults["fused"]
    assert OptimConfig().fused
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(5):
        for net, optimizer in zip(nets, optimizers):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
    for fused, plain in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-6)
    assert not torch.equal(nets[0][0].weight, torch.nn.Sequential(torch.nn.Linear(6, 5))[0].weight)


def test_step_rates_scale_with_the_global_batch_and_warm_up_step_by_step():
    from patchray.train.optim import StepSchedule, steps_per_epoch

    plain = StepSchedule(OptimConfig(lr=0.01, schedule="none"), epochs=3, steps_per_epoch=10, global_batch=1024)
    assert plain.at(0) == plain.at(2, 9) == 0.01 and not plain.warming(0)
    linear = StepSchedule(OptimConfig(lr=0.01, schedule="none", lr_scaling="linear"), 3, 10, global_batch=1024)
    assert linear.at(1) == pytest.approx(0.08)                        # 8x the base batch of 128
    root = StepSchedule(OptimConfig(lr=0.01, schedule="none", lr_scaling="sqrt", base_batch=256), 3, 10, 1024)
    assert root.at(1) == pytest.approx(0.02)
    warm = StepSchedule(OptimConfig(lr=0.01, schedule="step", step_epochs=1, gamma=0.5, lr_scaling="linear",
                                    warmup_epochs=1.5), epochs=4, steps_per_epoch=10, global_batch=256)
    rates = [warm.at(epoch, step) for epoch in range(3) for step in range(10)]
    # over 15 steps the rate climbs to the schedule's (0.02 in epoch 1, x0.5 in epoch 2 ...), then follows it
    assert rates[0] == pytest.approx(0.02 / 15) and rates[9] == pytest.approx(0.02 * 10 / 15)
    assert rates[10] == pytest.approx(0.01 * 11 / 15) and rates[14] == pytest.approx(0.01)
    assert rates[15:20] == pytest.approx([0.01] * 5) and rates[20:] == pytest.approx([0.005] * 10)
    assert all(a < b for a, b in zip(rates[:9], rates[1:10]))
    assert warm.warming(1) and not warm.warming(2)
    assert steps_per_epoch(1000, 2, 16) == 32 and steps_per_epoch(0, 1, 16) == 1
    with pytest.raises(ValueError, match="warmup_epochs"):
        OptimConfig(warmup_epochs=-1)


def test_stepping_rates_set_each_warm_up_step_s_rate_and_then_leave_the_epoch_alone():
    import torch

    from patchray.train.epoch import EpochTotals
    from patchray.train.optim import StepSchedule, set_lr, stepping_rates

    schedule = StepSchedule(OptimConfig(lr=0.1, schedule="none", warmup_epochs=1), 2, steps_per_epoch=4,
                            global_batch=128)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    seen, totals = [], EpochTotals()
    on_step = stepping_rates(schedule, optimizer, 0, then=lambda t: seen.append(t.steps))
    set_lr(optimizer, schedule.at(0))
    rates = [optimizer.param_groups[0]["lr"]]
    for n in range(1, 4):
        totals.steps = n
        on_step(totals)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.025, 0.05, 0.075, 0.1]) and seen == [1, 2, 3]
    marker = object()
    assert stepping_rates(schedule, optimizer, 1, then=marker) is marker   # warmed up: nothing to set
