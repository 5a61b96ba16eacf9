"""Model zoo for patchray: trunks, PatchTask / attribute heads, trunk transfer.

Importing this package registers all trunks (``tiny``, ``vgg16``,
``vgg16_bn``, ``resnet18``).
"""

from . import trunks as _trunks  # noqa: F401  (registers the trunks)
from .heads import AttributeNet, PretextNet, attribute_loss, attribute_losses, build_pretext_net
from .registry import Trunk, build_trunk, list_trunks, register_trunk
from .transfer import TransferReport, transfer_trunk
from .trunks import ResNet18Trunk, TinyTrunk, VGG16Trunk, he_normal_init_

__all__ = [
    "Trunk",
    "register_trunk",
    "build_trunk",
    "list_trunks",
    "TinyTrunk",
    "VGG16Trunk",
    "ResNet18Trunk",
    "he_normal_init_",
    "PretextNet",
    "build_pretext_net",
    "AttributeNet",
    "attribute_loss",
    "attribute_losses",
    "TransferReport",
    "transfer_trunk",
]
