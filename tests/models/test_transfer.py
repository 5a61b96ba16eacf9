from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from patchray.models import AttributeNet, PretextNet, TransferReport, build_trunk, transfer_trunk


def _trained_pretext_net(trunk_name: str, **trunk_kwargs: object) -> PretextNet:
    """A PretextNet whose weights and BN statistics differ from any fresh init."""
    net = PretextNet(build_trunk(trunk_name, **trunk_kwargs), num_classes=18)
    with torch.no_grad():
        net.classifier.weight.normal_(std=0.1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    loss = F.cross_entropy(net(torch.randn(4, 3, 32, 32)), torch.tensor([0, 3, 9, 17]))
    loss.backward()
    optimizer.step()
    return net


def _reasons(report: TransferReport) -> dict[str, str]:
    return dict(report.skipped)


def test_transfer_from_pretext_net_copies_trunk_and_skips_head() -> None:
    source = _trained_pretext_net("tiny", bn=True)
    target = build_trunk("tiny", bn=True)
    report = transfer_trunk(source.state_dict(), target)

    assert set(report.copied) == set(target.state_dict())
    for key, value in target.state_dict().items():
        assert torch.equal(value, source.trunk.state_dict()[key]), key
    head_keys = {f"head.{k}" for k in source.head.state_dict()}
    assert {k for k, r in report.unused if r == "pretext head"} == head_keys
    # the dropped pretext head is no skip: the summary counts only tensors the transfer failed to carry
    assert report.skipped == [] and report.exact
    n = len(report.copied)
    assert report.summary().splitlines()[0] == (f"copied {n} of {n} trunk tensors, skipped 0 (the pretext head's "
                                                f"{len(head_keys)} tensors are dropped by design)")


def test_transfer_from_bare_trunk_state_dict() -> None:
    source = _trained_pretext_net("tiny").trunk
    target = build_trunk("tiny")
    report = transfer_trunk(source.state_dict(), target)
    assert report.skipped == []
    assert all(torch.equal(a, b) for a, b in zip(source.parameters(), target.parameters()))


def test_attribute_net_heads_stay_fresh_after_transfer() -> None:
    source = _trained_pretext_net("tiny")
    net = AttributeNet(build_trunk("tiny"), attribute_classes=[4, 2])
    fc_before = net.fc[0].weight.clone()
    transfer_trunk(source.state_dict(), net.trunk)
    assert torch.equal(net.fc[0].weight, fc_before)
    assert all(torch.count_nonzero(p) == 0 for p in net.heads.parameters())
    assert torch.equal(net.trunk.stages[0][0].weight, source.trunk.stages[0][0].weight)


def test_shape_mismatch_is_reported_and_left_at_init() -> None:
    source = build_trunk("resnet18", small_input=False)  # 7x7 conv1
    target = build_trunk("resnet18", small_input=True)  # 3x3 conv1
    conv1_before = target.conv1.weight.clone()
    report = transfer_trunk(source.state_dict(), target)
    reasons = _reasons(report)
    assert reasons.keys() == {"conv1.weight"}
    assert reasons["conv1.weight"].startswith("shape mismatch")
    assert "(64, 3, 7, 7)" in reasons["conv1.weight"] and "(64, 3, 3, 3)" in reasons["conv1.weight"]
    assert torch.equal(target.conv1.weight, conv1_before)
    assert torch.equal(target.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert len(report.copied) == len(target.state_dict()) - 1
    assert "conv1.weight" in report.summary()


def test_missing_and_extra_keys_are_reported() -> None:
    source = build_trunk("tiny", bn=False)  # conv biases, no BN
    target = build_trunk("tiny", bn=True)  # no conv biases, BN
    report = transfer_trunk(source.state_dict(), target)
    reasons = _reasons(report)
    assert reasons["stages.0.1.weight"] == "missing in source"  # BN scale
    assert dict(report.unused)["stages.0.0.bias"] == "not a trunk parameter"  # conv bias target lacks
    assert not report.exact
    assert "stages.0.0.weight" in report.copied
    with pytest.raises(ValueError, match="incomplete"):
        transfer_trunk(source.state_dict(), build_trunk("tiny", bn=True), strict=True)


def test_non_trunk_keys_of_a_full_net_and_wrapper_prefixes() -> None:
    attribute_net = AttributeNet(build_trunk("tiny"), attribute_classes=[2])
    # As saved from a DistributedDataParallel-wrapped model.
    wrapped = {f"module.{k}": v for k, v in attribute_net.state_dict().items()}
    target = build_trunk("tiny")
    report = transfer_trunk(wrapped, target, strict=True)
    assert set(report.copied) == set(target.state_dict())
    unused = dict(report.unused)
    assert unused["fc.0.weight"] == "not a trunk parameter"
    assert unused["heads.0.weight"] == "not a trunk parameter"


@pytest.mark.parametrize(("trunk_name", "trunk_kwargs"), [("tiny", {"bn": True}), ("vgg16", {})])
def test_save_load_round_trip_into_attribute_net(tmp_path: Path, trunk_name: str, trunk_kwargs: dict) -> None:
    source = _trained_pretext_net(trunk_name, **trunk_kwargs)
    checkpoint = tmp_path / "pretext.pt"
    torch.save(source.state_dict(), checkpoint)
    loaded = torch.load(checkpoint, weights_only=True)

    net = AttributeNet(build_trunk(trunk_name, **trunk_kwargs), attribute_classes=[4, 2, 2])
    report = transfer_trunk(loaded, net.trunk, strict=True)
    assert set(report.copied) == set(net.trunk.state_dict())
    for key, value in net.trunk.state_dict().items():
        assert torch.equal(value, source.trunk.state_dict()[key]), key
    if trunk_kwargs.get("bn"):
        # BN running statistics (buffers) travel too, not only parameters.
        assert "stages.0.1.running_mean" in report.copied
        assert torch.count_nonzero(net.trunk.stages[0][1].running_mean) > 0

    net.eval()
    with torch.no_grad():
        outputs = net(torch.randn(1, 3, 200, 100))
    assert [tuple(o.shape) for o in outputs] == [(1, 4), (1, 2), (1, 2)]
