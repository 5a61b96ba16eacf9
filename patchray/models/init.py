"""Initialising a trunk for fine-tuning: ``random`` (He), ``patchtask:<checkpoint>``, ``imagenet``.

ImageNet weights are taken only from the local torch cache (``torch.hub.get_dir()``):
nothing is downloaded, and a missing file is a clear error that says where it
was looked for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .transfer import TransferReport, transfer_trunk

__all__ = ["InitSpec", "parse_init", "load_init_state", "initialise_trunk", "InitError", "IMAGENET_MEAN",
           "IMAGENET_STD", "imagenet_cache_path"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# trunk name -> torchvision weights enum name
_IMAGENET_WEIGHTS = {"resnet18": "ResNet18_Weights", "vgg16": "VGG16_Weights", "vgg16_bn": "VGG16_BN_Weights"}
PRETEXT_CHECKPOINT = os.path.join("checkpoints", "pretext.pt")


class InitError(ValueError):
    pass


@dataclass(frozen=True)
class InitSpec:
    kind: str              # random | patchtask | imagenet
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else self.kind


def parse_init(spec: str) -> InitSpec:
    if spec in ("random", "imagenet"):
        return InitSpec(spec)
    if spec.startswith("patchtask:") and len(spec) > len("patchtask:"):
        return InitSpec("patchtask", spec[len("patchtask:"):])
    raise InitError(f"init {spec!r}: expected 'random', 'imagenet' or 'patchtask:<checkpoint or run folder>'")


def imagenet_cache_path(model: str) -> Path:
    import torchvision.models as tvm

    if model not in _IMAGENET_WEIGHTS:
        raise InitError(f"init imagenet: no ImageNet weights exist for trunk {model!r} "
                        f"(available for {sorted(_IMAGENET_WEIGHTS)})")
    weights = getattr(tvm, _IMAGENET_WEIGHTS[model]).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_init_state(spec: InitSpec, model: str) -> dict | None:
    """The state_dict to copy the trunk from, or None for a random init."""
    if spec.kind == "random":
        return None
    if spec.kind == "imagenet":
        path = imagenet_cache_path(model)
        if not path.is_file():
            raise InitError(f"init imagenet: {path} is not in the local torch cache, and patchray does not "
                            "download (this machine may be offline). Put the torchvision file there, or use "
                            "init=random or init=patchtask:<checkpoint>.")
    else:
        path = Path(os.path.expanduser(spec.path))
        if path.is_dir():
            path = path / PRETEXT_CHECKPOINT
        if not path.is_file():
            raise InitError(f"init {spec}: no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: say which, never unpickle anything else
        raise InitError(f"init {spec}: {path} is not a loadable state_dict ({e})") from None


def initialise_trunk(trunk: nn.Module, spec: InitSpec | str, model: str) -> TransferReport | None:
    """Copy pretrained tensors into ``trunk`` in place; returns what was copied and skipped (None: random)."""
    spec = parse_init(spec) if isinstance(spec, str) else spec
    state = load_init_state(spec, model)
    if state is None:
        return None
    report = transfer_trunk(state, trunk)
    if not report.copied:
        raise InitError(f"init {spec}: no tensor of the checkpoint fits trunk {model!r}:\n{report.summary()}")
    return report
