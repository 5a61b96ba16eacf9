"""Registered conv trunks: ``tiny`` (and ``tiny_d25``), ``vgg16``, ``vgg16_bn``, ``resnet18``.

All trunks are fully convolutional, so the same weights run on 32x32 patches
(PatchTask pretraining) and on full 200x100 (H x W) person crops (fine-tuning).
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision import models as tv_models
from torchvision.models import vgg as tv_vgg

from .registry import Trunk, register_trunk

__all__ = ["TinyTrunk", "VGG16Trunk", "ResNet18Trunk", "he_normal_init_"]


def he_normal_init_(module: nn.Module) -> None:
    """He-normal init for every conv in ``module``, zero biases, identity BatchNorm.

    fan_in mode, as Keras' ``he_normal`` which the reference scripts used.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


@register_trunk("tiny")
class TinyTrunk(Trunk):
    """The reference's small 8-conv net: 3x3 convs 16,16 | 32,32 | 64,64 | 128,128.

    Each pair of convs is followed by 2x2 max pooling and dropout. A 32x32
    patch gives a 2x2x128 map, a 200x100 crop a 12x6x128 map.
    """

    stage_channels: tuple[int, ...] = (16, 32, 64, 128)

    def __init__(self, dropout: float = 0.5, bn: bool = False) -> None:
        super().__init__()
        # 0.5 after every pool, as the reference's tiny_10_dropout (nets.py).
        stages: list[nn.Module] = []
        in_channels = 3
        for channels in self.stage_channels:
            layers: list[nn.Module] = []
            for conv_in in (in_channels, channels):
                # With BN the conv bias would be cancelled by the BN shift.
                layers.append(nn.Conv2d(conv_in, channels, kernel_size=3, padding=1, bias=not bn))
                if bn:
                    layers.append(nn.BatchNorm2d(channels))
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            layers.append(nn.Dropout(p=dropout))
            stages.append(nn.Sequential(*layers))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.out_channels = in_channels
        he_normal_init_(self)

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.stages)

    def forward(self, images: Tensor) -> Tensor:
        return self.stages(images)


@register_trunk("tiny_d25")
def tiny_d25_trunk() -> TinyTrunk:
    """The tiny net with dropout 0.25 (patchray's ``tiny`` before it took the reference's 0.5), same layers and
    tensors. At 0.5 the tiny net needs the reference's long schedule: over the few hundred steps of a short job
    or an end-to-end test it stays near chance, where 0.25 is well above it."""
    return TinyTrunk(dropout=0.25)


class VGG16Trunk(Trunk):
    """torchvision's VGG16 ``features`` (13 convs, 5 max pools), no classifier.

    Parameters live under ``features.<index>`` exactly as in torchvision, so
    the ``features.*`` entries of an ImageNet VGG16 state dict match by name.
    A 32x32 patch gives a 1x1x512 map, a 200x100 crop a 6x3x512 map.
    """

    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        # torchvision's own ``vgg16[_bn](weights=None).features`` layout, built
        # without the 120M-parameter classifier that vgg16() would initialise
        # and throw away (1.7 s vs 0.2 s on CPU).
        self.features: nn.Sequential = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=bn)
        self.out_channels = 512
        he_normal_init_(self)

    @property
    def blocks(self) -> list[nn.Module]:
        # One block per resolution: the layers up to and including each pool.
        blocks: list[nn.Module] = []
        current: list[nn.Module] = []
        for layer in self.features:
            current.append(layer)
            if isinstance(layer, nn.MaxPool2d):
                blocks.append(nn.Sequential(*current))
                current = []
        if current:
            blocks.append(nn.Sequential(*current))
        return blocks

    def forward(self, images: Tensor) -> Tensor:
        return self.features(images)


@register_trunk("vgg16")
def vgg16_trunk() -> VGG16Trunk:
    """VGG16 without BatchNorm (the reference's large net)."""
    return VGG16Trunk(bn=False)


@register_trunk("vgg16_bn")
def vgg16_bn_trunk() -> VGG16Trunk:
    """VGG16 with BatchNorm after every conv."""
    return VGG16Trunk(bn=True)


@register_trunk("resnet18")
class ResNet18Trunk(Trunk):
    """torchvision ResNet-18 up to ``layer4`` (no avgpool, no fc).

    ``small_input=True`` replaces the 7x7 stride-2 ``conv1`` by a 3x3 stride-1
    conv and drops the max pool: the ImageNet stem would shrink a 32x32 patch
    to 8x8 before the first residual stage and to 1x1 at the end. Then a 32x32
    patch gives a 4x4x512 map and a 200x100 crop a 25x13x512 map. All other
    parameter names (``conv1``, ``bn1``, ``layer1``..``layer4``) are torchvision's.
    """

    def __init__(self, small_input: bool = True) -> None:
        super().__init__()
        reference = tv_models.resnet18(weights=None)
        self.small_input = small_input
        if small_input:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = reference.conv1
        self.bn1 = reference.bn1
        self.relu = reference.relu
        self.maxpool: nn.Module = nn.Identity() if small_input else reference.maxpool
        self.layer1 = reference.layer1
        self.layer2 = reference.layer2
        self.layer3 = reference.layer3
        self.layer4 = reference.layer4
        self.out_channels = 512
        he_normal_init_(self)

    @property
    def blocks(self) -> list[nn.Module]:
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, images: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)
