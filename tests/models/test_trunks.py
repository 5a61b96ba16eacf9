import math

import pytest
import torch
import torchvision
from torch import nn

from patchray.models import build_trunk, list_trunks

# (trunk name, build kwargs) -> expected (C, h, w) for 32x32 patches and 200x100 (H x W) crops.
EXPECTED_SHAPES = {
    ("tiny", ()): ((128, 2, 2), (128, 12, 6)),
    ("tiny", (("bn", True),)): ((128, 2, 2), (128, 12, 6)),
    ("tiny_d25", ()): ((128, 2, 2), (128, 12, 6)),
    ("vgg16", ()): ((512, 1, 1), (512, 6, 3)),
    ("vgg16_bn", ()): ((512, 1, 1), (512, 6, 3)),
    ("resnet18", ()): ((512, 4, 4), (512, 25, 13)),
    ("resnet18", (("small_input", False),)): ((512, 1, 1), (512, 7, 4)),
}


def test_every_registered_trunk_has_a_shape_case() -> None:
    assert {name for name, _ in EXPECTED_SHAPES} == set(list_trunks())


def _case_id(value) -> str:
    """A trunk name as is; its kwargs as ``k=v`` joined by ``-``, or ``default`` when there are none."""
    return value if isinstance(value, str) else "-".join(f"{k}={x}" for k, x in value) or "default"


@pytest.mark.parametrize(("name", "kwargs"), list(EXPECTED_SHAPES), ids=_case_id)
def test_output_shape_and_feature_dim_on_patches_and_crops(name: str, kwargs: tuple) -> None:
    trunk = build_trunk(name, **dict(kwargs)).eval()
    patch_shape, crop_shape = EXPECTED_SHAPES[(name, kwargs)]
    with torch.no_grad():
        patch_features = trunk(torch.randn(2, 3, 32, 32))
        crop_features = trunk(torch.randn(1, 3, 200, 100))
    assert tuple(patch_features.shape) == (2, *patch_shape)
    assert tuple(crop_features.shape) == (1, *crop_shape)
    assert trunk.out_channels == patch_shape[0]
    assert trunk.feature_dim(32, 32) == patch_features[0].numel()
    assert trunk.feature_dim(200, 100) == crop_features[0].numel()


@pytest.mark.parametrize("name", ["tiny", "vgg16", "vgg16_bn", "resnet18"])
def test_blocks_partition_the_parameters_without_renaming_them(name: str) -> None:
    trunk = build_trunk(name)
    block_params = [p for block in trunk.blocks for p in block.parameters()]
    assert len({id(p) for p in block_params}) == len(block_params)
    assert {id(p) for p in block_params} == {id(p) for p in trunk.parameters()}
    assert not any(key.startswith("blocks") for key in trunk.state_dict())


def test_tiny_trunk_trains_in_train_mode() -> None:
    trunk = build_trunk("tiny", dropout=0.25)
    patches = torch.randn(4, 3, 32, 32, requires_grad=True)
    trunk(patches).sum().backward()
    assert all(p.grad is not None for p in trunk.parameters())
    convs = [m for m in trunk.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64, 128, 128]


@pytest.mark.parametrize("bn", [False, True])
def test_vgg16_state_dict_loads_torchvision_features_strictly(bn: bool) -> None:
    # The torchvision model is what ImageNet weights are saved from: its
    # features.* entries must load into the trunk by name, strictly.
    full = (torchvision.models.vgg16_bn if bn else torchvision.models.vgg16)(weights=None)
    features_only = {k: v for k, v in full.state_dict().items() if k.startswith("features.")}
    trunk = build_trunk("vgg16_bn" if bn else "vgg16")
    trunk.load_state_dict(features_only, strict=True)
    last_conv = max(i for i, m in enumerate(full.features) if isinstance(m, nn.Conv2d))
    assert torch.equal(trunk.features[last_conv].weight, full.features[last_conv].weight)
    assert sum(isinstance(m, nn.Conv2d) for m in trunk.modules()) == 13


@pytest.mark.parametrize("small_input", [True, False])
def test_resnet18_keeps_torchvision_parameter_names(small_input: bool) -> None:
    trunk = build_trunk("resnet18", small_input=small_input)
    reference = {
        k: tuple(v.shape)
        for k, v in torchvision.models.resnet18(weights=None).state_dict().items()
        if not k.startswith("fc.")
    }
    actual = {k: tuple(v.shape) for k, v in trunk.state_dict().items()}
    assert actual.keys() == reference.keys()
    differing = {k for k in actual if actual[k] != reference[k]}
    if small_input:
        assert differing == {"conv1.weight"}
        assert actual["conv1.weight"] == (64, 3, 3, 3)
        assert trunk.conv1.stride == (1, 1)
        assert not any(isinstance(m, nn.MaxPool2d) for m in trunk.modules())
    else:
        assert differing == set()


def test_he_normal_init_on_a_big_conv() -> None:
    trunk = build_trunk("vgg16")
    conv = trunk.features[28]  # last conv: 512 x 512 x 3 x 3, 2.4M weights
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == 512
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    expected_std = math.sqrt(2.0 / fan_in)
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.02)
    assert abs(conv.weight.mean().item()) < 0.01 * expected_std
    assert torch.count_nonzero(conv.bias) == 0


@pytest.mark.parametrize(("name", "kwargs"), [("tiny", {}), ("resnet18", {}), ("vgg16_bn", {})])
def test_he_normal_init_every_conv(name: str, kwargs: dict) -> None:
    trunk = build_trunk(name, **kwargs)
    for conv in (m for m in trunk.modules() if isinstance(m, nn.Conv2d)):
        fan_in = conv.weight[0].numel()
        # Small layers (e.g. 16x3x3x3) have few samples: loose tolerance.
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.25)
        if conv.bias is not None:
            assert torch.count_nonzero(conv.bias) == 0
    for bn in (m for m in trunk.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_tiny_trunk_drops_half_after_every_pool_as_the_reference() -> None:
    """nets.py tiny_10_dropout: DropoutLayer(p=0.5) after each of the 4 pools."""
    layers = list(build_trunk("tiny").modules())
    pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 4
    assert all(isinstance(layers[i + 1], nn.Dropout) and layers[i + 1].p == 0.5 for i in pools)


def test_tiny_d25_is_the_tiny_net_with_a_quarter_dropout() -> None:
    light, reference = build_trunk("tiny_d25"), build_trunk("tiny")
    assert light.state_dict().keys() == reference.state_dict().keys()
    assert {m.p for m in light.modules() if isinstance(m, nn.Dropout)} == {0.25}
