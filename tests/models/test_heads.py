import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from patchray.models import AttributeNet, PretextNet, attribute_loss, attribute_losses, build_trunk


def _randomise_(linear: nn.Linear) -> None:
    """Give a zero-initialised classifier weights so gradients reach the trunk."""
    with torch.no_grad():
        linear.weight.normal_(std=0.1)
        linear.bias.normal_(std=0.1)


# ---------------------------------------------------------------- PretextNet


@pytest.mark.parametrize("trunk_name", ["tiny", "resnet18"])
def test_pretext_logits_are_zero_and_softmax_uniform_at_init(trunk_name: str) -> None:
    trunk = build_trunk(trunk_name)
    net = PretextNet(trunk, num_classes=18)
    logits = net(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 18)
    assert torch.count_nonzero(logits) == 0
    assert torch.allclose(logits.softmax(dim=1), torch.full((3, 18), 1 / 18))
    assert torch.count_nonzero(net.classifier.weight) == 0 and torch.count_nonzero(net.classifier.bias) == 0
    assert net.trunk is trunk
    hidden = net.head[0]
    assert isinstance(hidden, nn.Linear)
    assert (hidden.in_features, hidden.out_features) == (trunk.feature_dim(32, 32), 256)


def test_pretext_net_learns_despite_zero_classifier() -> None:
    net = PretextNet(build_trunk("tiny"), num_classes=18)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    patches, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 5, 11, 17])
    F.cross_entropy(net(patches), labels).backward()
    optimizer.step()
    assert torch.count_nonzero(net.classifier.weight) > 0
    assert torch.count_nonzero(net(patches)) > 0


@pytest.mark.parametrize(("trunk", "bn"), [(dict(name="tiny"), False), (dict(name="tiny", bn=True), True),
                                           (dict(name="resnet18"), True)])
@pytest.mark.parametrize("pairwise", [False, True])
def test_pretext_head_is_batch_normalised_when_the_trunk_is(trunk: dict, bn: bool, pairwise: bool) -> None:
    """The reference's ModelPatches: fc6 goes through batch_norm() (bias dropped, BN before the ReLU) when the
    base net has BatchNorm."""
    net = PretextNet(build_trunk(**trunk), num_classes=306 if pairwise else 18, pairwise=pairwise)
    kinds = [type(m) for m in net.head]
    if bn:
        assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
        assert net.head[0].bias is None and net.head[1].num_features == 256
    else:
        assert kinds == [nn.Linear, nn.ReLU, nn.Linear] and net.head[0].bias is not None
    shape = (4, 2, 3, 32, 32) if pairwise else (4, 3, 32, 32)
    assert torch.count_nonzero(net(torch.randn(shape))) == 0  # still a uniform softmax at init
    assert all(k.startswith(("trunk.", "head.")) for k in net.state_dict())  # the transfer drops head.* whole


def test_pretext_dropout_option_and_hidden_size() -> None:
    net = PretextNet(build_trunk("tiny"), num_classes=8, hidden=64, dropout=0.5)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in net.head)
    assert net.head[0].out_features == 64 and net.classifier.in_features == 64


def test_pretext_rejects_wrong_input_shape() -> None:
    single = PretextNet(build_trunk("tiny"), num_classes=18)
    pairwise = PretextNet(build_trunk("tiny"), num_classes=306, pairwise=True)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        single(torch.randn(2, 2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 2, 3, 32, 32\]"):
        pairwise(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError):
        single(torch.randn(2, 3, 48, 48))


def test_pairwise_concatenates_features_of_one_shared_trunk() -> None:
    trunk = build_trunk("tiny", dropout=0.0)
    net = PretextNet(trunk, num_classes=18 * 17, pairwise=True)
    pairs = torch.randn(3, 2, 3, 32, 32)
    logits = net(pairs)
    assert logits.shape == (3, 306)
    # One trunk, no copy: parameter count is trunk + head.
    total = sum(p.numel() for p in net.parameters())
    assert total == sum(p.numel() for p in trunk.parameters()) + sum(p.numel() for p in net.head.parameters())
    assert net.head[0].in_features == 2 * trunk.feature_dim(32, 32)
    expected = torch.cat([trunk(pairs[:, 0]).flatten(1), trunk(pairs[:, 1]).flatten(1)], dim=1)
    assert torch.allclose(net.features(pairs), expected, atol=1e-6)


def test_pairwise_order_matters() -> None:
    net = PretextNet(build_trunk("tiny", dropout=0.0), num_classes=306, pairwise=True)
    _randomise_(net.classifier)
    pairs = torch.randn(2, 2, 3, 32, 32)
    swapped = pairs.flip(dims=[1])
    assert not torch.allclose(net(pairs), net(swapped))


def test_pairwise_gradient_is_sum_over_both_slots_into_one_trunk() -> None:
    trunk = build_trunk("tiny", dropout=0.0)
    net = PretextNet(trunk, num_classes=306, pairwise=True)
    _randomise_(net.classifier)
    pairs = torch.randn(2, 2, 3, 32, 32, requires_grad=True)
    labels = torch.tensor([3, 200])
    probe = trunk.stages[0][0].weight  # first conv

    F.cross_entropy(net(pairs), labels).backward()
    full_grad = probe.grad.clone()
    assert pairs.grad[:, 0].abs().sum() > 0 and pairs.grad[:, 1].abs().sum() > 0

    def grad_through_slot(slot: int) -> torch.Tensor:
        net.zero_grad()
        features = [trunk(pairs[:, s].detach()).flatten(1) for s in (0, 1)]
        features[1 - slot] = features[1 - slot].detach()
        F.cross_entropy(net.head(torch.cat(features, dim=1)), labels).backward()
        return probe.grad.clone()

    assert torch.allclose(full_grad, grad_through_slot(0) + grad_through_slot(1), atol=1e-6)


# -------------------------------------------------------------- AttributeNet


def test_attribute_net_outputs_one_zero_logit_tensor_per_attribute() -> None:
    net = AttributeNet(build_trunk("tiny"), attribute_classes=[4, 2, 2])
    outputs = net(torch.randn(2, 3, 200, 100))
    assert [tuple(o.shape) for o in outputs] == [(2, 4), (2, 2), (2, 2)]
    assert all(torch.count_nonzero(o) == 0 for o in outputs)
    assert isinstance(net.heads, nn.ModuleList) and len(net.heads) == 3
    assert net.fc[0].in_features == net.trunk.feature_dim(200, 100)
    assert net.fc[0].out_features == 512
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.fc)
    # Uniform softmax per attribute: the loss at init is sum(log K_a).
    labels = torch.tensor([[1, 2, 1], [4, 1, 2]])
    assert attribute_loss(outputs, labels).item() == pytest.approx(math.log(4) + 2 * math.log(2), rel=1e-6)


def test_attribute_net_uses_batchnorm_iff_trunk_has_it() -> None:
    net = AttributeNet(build_trunk("tiny", bn=True), attribute_classes=[2])
    assert isinstance(net.fc[1], nn.BatchNorm1d) and net.fc[0].bias is None
    outputs = net(torch.randn(2, 3, 200, 100))
    assert outputs[0].shape == (2, 2)


def test_attribute_net_on_vgg16_bn_crop() -> None:
    net = AttributeNet(build_trunk("vgg16_bn"), attribute_classes=[4, 2]).eval()
    with torch.no_grad():
        outputs = net(torch.randn(1, 3, 200, 100))
    assert [tuple(o.shape) for o in outputs] == [(1, 4), (1, 2)]
    assert net.fc[0].in_features == 512 * 6 * 3
    assert any(isinstance(m, nn.BatchNorm1d) for m in net.fc)


def test_attribute_net_pooling_option_shrinks_fc() -> None:
    net = AttributeNet(build_trunk("tiny"), attribute_classes=[3], pooled_hw=(2, 1))
    assert net.fc[0].in_features == 128 * 2 * 1
    assert net(torch.randn(2, 3, 200, 100))[0].shape == (2, 3)


def test_attribute_net_rejects_wrong_input_size_and_bad_classes() -> None:
    net = AttributeNet(build_trunk("tiny"), attribute_classes=[2])
    with pytest.raises(ValueError, match="200, 100"):
        net(torch.randn(1, 3, 100, 200))
    with pytest.raises(ValueError):
        AttributeNet(build_trunk("tiny"), attribute_classes=[])
    with pytest.raises(ValueError):
        AttributeNet(build_trunk("tiny"), attribute_classes=[2, 0])


# ------------------------------------------------------------ attribute_loss


def _manual_cross_entropy(row: list[float], target: int) -> float:
    return -(row[target] - math.log(sum(math.exp(v) for v in row)))


def test_attribute_loss_matches_hand_computation() -> None:
    logits_a = [[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 1.0, 1.0]]
    logits_b = [[0.0, 1.0], [2.0, -2.0], [0.3, 0.1]]
    # Label 0 = N/A; 1..K = class index + 1.
    labels = torch.tensor([[1, 0], [3, 2], [0, 1]])
    expected_a = (_manual_cross_entropy(logits_a[0], 0) + _manual_cross_entropy(logits_a[1], 2)) / 2
    expected_b = (_manual_cross_entropy(logits_b[1], 1) + _manual_cross_entropy(logits_b[2], 0)) / 2
    logits = [torch.tensor(logits_a), torch.tensor(logits_b)]
    per_attribute = attribute_losses(logits, labels)
    assert per_attribute.tolist() == pytest.approx([expected_a, expected_b], rel=1e-6)
    assert attribute_loss(logits, labels).item() == pytest.approx(expected_a + expected_b, rel=1e-6)


def test_attribute_loss_ignores_na_examples() -> None:
    labels = torch.tensor([[1, 0], [2, 2], [0, 1]])
    logits = [torch.randn(3, 2, requires_grad=True), torch.randn(3, 2, requires_grad=True)]
    loss = attribute_loss(logits, labels)
    changed = [logits[0].detach().clone(), logits[1].detach().clone()]
    changed[0][2] += torch.tensor([50.0, -50.0])  # example 2 is N/A for attribute 0
    changed[1][0] += torch.tensor([-7.0, 9.0])  # example 0 is N/A for attribute 1
    assert attribute_loss(changed, labels).item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(logits[0].grad[2]) == 0 and torch.count_nonzero(logits[1].grad[0]) == 0
    assert torch.count_nonzero(logits[0].grad[0]) > 0


def test_all_na_batch_gives_zero_without_nan() -> None:
    logits = [torch.randn(2, 4, requires_grad=True), torch.randn(2, 2, requires_grad=True)]
    labels = torch.zeros(2, 2, dtype=torch.long)
    loss = attribute_loss(logits, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(logit.grad).all() and torch.count_nonzero(logit.grad) == 0 for logit in logits)


def test_attribute_without_labels_adds_zero_but_others_count() -> None:
    logits = [torch.randn(2, 3), torch.randn(2, 2)]
    labels = torch.tensor([[0, 1], [0, 2]])
    per_attribute = attribute_losses(logits, labels)
    assert per_attribute[0].item() == 0.0
    assert per_attribute[1].item() == pytest.approx(F.cross_entropy(logits[1], torch.tensor([0, 1])).item())


def test_attribute_loss_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError):
        attribute_loss([torch.randn(2, 3)], torch.ones(2, 2, dtype=torch.long))


# ------------------------------------------------------------ attribute_loss, loss: balanced


def test_class_weighted_loss_matches_hand_computation() -> None:
    # Attribute a (3 classes, weights 0.5 / 2 / 1), attribute b (2 classes, weights 1 / 3). Batch of 3.
    logits_a = [[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 1.0, 1.0]]
    logits_b = [[0.0, 1.0], [2.0, -2.0], [0.3, 0.1]]
    labels = torch.tensor([[1, 0], [3, 2], [0, 1]])  # 0 = N/A
    weights = [[0.5, 2.0, 1.0], [1.0, 3.0]]
    # Weighted sum over the labeled examples, divided by the whole batch (3), N/A rows included.
    expected_a = (0.5 * _manual_cross_entropy(logits_a[0], 0) + 1.0 * _manual_cross_entropy(logits_a[1], 2)) / 3
    expected_b = (3.0 * _manual_cross_entropy(logits_b[1], 1) + 1.0 * _manual_cross_entropy(logits_b[2], 0)) / 3
    logits = [torch.tensor(logits_a), torch.tensor(logits_b)]
    per_attribute = attribute_losses(logits, labels, weights)
    assert per_attribute.tolist() == pytest.approx([expected_a, expected_b], rel=1e-6)
    assert attribute_loss(logits, labels, [torch.tensor(w) for w in weights]).item() == pytest.approx(
        expected_a + expected_b, rel=1e-6)
    # Unit weights: the plain cross-entropy's sum, over the whole batch instead of the labeled examples.
    ones = [[1.0] * 3, [1.0] * 2]
    assert attribute_losses(logits, labels, ones).tolist() == pytest.approx(
        (attribute_losses(logits, labels) * 2 / 3).tolist(), rel=1e-6)


def test_class_weighted_loss_na_and_zero_weight_examples_add_nothing() -> None:
    labels = torch.tensor([[1], [2], [0]])
    logits = [torch.randn(3, 2, requires_grad=True)]
    loss = attribute_loss(logits, labels, [[0.0, 2.0]])  # class 1 weighs 0: only row 1 counts
    assert loss.item() == pytest.approx(2.0 * F.cross_entropy(logits[0][1:2], torch.tensor([1])).item() / 3, rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(logits[0].grad[0]) == 0 and torch.count_nonzero(logits[0].grad[2]) == 0
    all_na = attribute_loss([torch.randn(2, 2)], torch.zeros(2, 1, dtype=torch.long), [[1.0, 1.0]])
    assert all_na.item() == 0.0
    with pytest.raises(ValueError, match="class weight"):
        attribute_loss([torch.randn(2, 3)], torch.ones(2, 1, dtype=torch.long), [[1.0, 1.0]])
    with pytest.raises(ValueError, match="class weight"):
        attribute_loss([torch.randn(2, 3)], torch.ones(2, 1, dtype=torch.long), [[1.0] * 3, [1.0] * 3])
