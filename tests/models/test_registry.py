import pytest
import torch
from torch import nn

import patchray.models as models
from patchray.models import Trunk, build_trunk, list_trunks, register_trunk, registry
from patchray.models.trunks import TinyTrunk

EXPECTED_TRUNKS = {"tiny", "tiny_d25", "vgg16", "vgg16_bn", "resnet18"}


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register throwaway trunks without leaking them into other tests."""
    monkeypatch.setattr(registry, "_TRUNK_FACTORIES", dict(registry._TRUNK_FACTORIES))


class _PointwiseTrunk(Trunk):
    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, kernel_size=1)
        self.out_channels = channels

    @property
    def blocks(self) -> list[nn.Module]:
        return [self.conv]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)


def test_importing_package_registers_all_trunks() -> None:
    assert EXPECTED_TRUNKS <= set(list_trunks())
    assert list_trunks() == sorted(list_trunks())


def test_build_trunk_returns_configured_trunk() -> None:
    trunk = build_trunk("tiny", dropout=0.5, bn=True)
    assert type(trunk) is TinyTrunk
    assert trunk.out_channels == 128
    dropouts = [m for m in trunk.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.p == 0.5 for m in dropouts)
    assert any(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())


def test_unknown_trunk_error_lists_registered_names() -> None:
    with pytest.raises(ValueError) as error:
        build_trunk("alexnet")
    message = str(error.value)
    assert "alexnet" in message
    for name in EXPECTED_TRUNKS:
        assert name in message


@pytest.mark.usefixtures("isolated_registry")
def test_register_custom_trunk_and_duplicate_name() -> None:
    register_trunk("pointwise")(_PointwiseTrunk)
    trunk = build_trunk("pointwise", channels=7)
    assert isinstance(trunk, _PointwiseTrunk) and trunk.out_channels == 7
    assert trunk.feature_dim(5, 3) == 7 * 5 * 3
    with pytest.raises(ValueError, match="already registered"):
        register_trunk("pointwise")(_PointwiseTrunk)
    with pytest.raises(ValueError, match="already registered"):
        register_trunk("tiny")(_PointwiseTrunk)


@pytest.mark.usefixtures("isolated_registry")
def test_factory_must_return_a_trunk() -> None:
    register_trunk("not_a_trunk")(lambda: nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="not a Trunk"):
        build_trunk("not_a_trunk")


def test_throwaway_registrations_do_not_leak() -> None:
    # Runs after the tests above, which registered throwaway trunks.
    assert "pointwise" not in list_trunks()
    assert "not_a_trunk" not in list_trunks()
    assert models.build_trunk is registry.build_trunk


def test_freeze_first_blocks() -> None:
    trunk = build_trunk("tiny")
    trunk.freeze_blocks(2)
    frozen = [p.requires_grad for block in trunk.blocks[:2] for p in block.parameters()]
    trainable = [p.requires_grad for block in trunk.blocks[2:] for p in block.parameters()]
    assert frozen and not any(frozen)
    assert trainable and all(trainable)
    trunk.freeze_blocks(0)
    assert all(p.requires_grad for p in trunk.parameters())
    with pytest.raises(ValueError):
        trunk.freeze_blocks(len(trunk.blocks) + 1)


def test_feature_dim_dry_run_leaves_batchnorm_stats_and_mode_alone() -> None:
    trunk = build_trunk("tiny", bn=True)
    trunk.train()
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    assert trunk.feature_dim(32, 32) == 128 * 2 * 2
    assert trunk.training
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, before[key]), key
