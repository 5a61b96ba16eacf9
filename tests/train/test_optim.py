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
