"""Trunk contract and a name -> factory registry (timm style).

A *trunk* is the convolutional part of a network: it maps images
``[B, 3, H, W]`` to a feature map ``[B, C, h, w]``. It is the only part that
survives the transfer from the PatchTask to the fine-tuning task, so it is
kept separate from any head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

__all__ = ["Trunk", "register_trunk", "build_trunk", "list_trunks"]


class Trunk(nn.Module):
    """Base class of every registered trunk.

    Subclasses set ``out_channels`` and implement ``forward`` and ``blocks``.
    """

    out_channels: int

    def __init__(self) -> None:
        super().__init__()
        # (height, width) -> flattened feature size; the architecture is fixed
        # after construction, so a dry run per input size is enough.
        self._feature_dim_cache: dict[tuple[int, int], int] = {}

    @property
    def blocks(self) -> list[nn.Module]:
        """Stages from input to output, for freezing the first N of them.

        The returned modules are views onto the trunk's own layers; they are
        deliberately not registered as submodules so that parameter names
        (and thus checkpoint keys) stay as the subclass defines them.
        """
        raise NotImplementedError

    def feature_dim(self, height: int, width: int) -> int:
        """Length of the flattened feature map for a ``height x width`` input."""
        key = (int(height), int(width))
        if key not in self._feature_dim_cache:
            self._feature_dim_cache[key] = self._dry_run_feature_dim(*key)
        return self._feature_dim_cache[key]

    def _dry_run_feature_dim(self, height: int, width: int) -> int:
        reference = next(self.parameters())
        probe = torch.zeros(1, 3, height, width, device=reference.device, dtype=reference.dtype)
        was_training = self.training
        # Eval mode so that the probe does not update BatchNorm running stats.
        self.eval()
        try:
            with torch.no_grad():
                features = self(probe)
        finally:
            self.train(was_training)
        return int(features[0].numel())

    def freeze_blocks(self, count: int) -> None:
        """Stop gradients for the first ``count`` blocks (0 freezes nothing).

        Only ``requires_grad`` is changed; keeping frozen BatchNorm layers in
        eval mode is the training loop's job.
        """
        blocks = self.blocks
        if not 0 <= count <= len(blocks):
            raise ValueError(f"count must be in [0, {len(blocks)}], got {count}")
        for index, block in enumerate(blocks):
            for parameter in block.parameters():
                parameter.requires_grad_(index >= count)


TrunkFactory = Callable[..., Trunk]
FactoryT = TypeVar("FactoryT", bound=TrunkFactory)

_TRUNK_FACTORIES: dict[str, TrunkFactory] = {}


def register_trunk(name: str) -> Callable[[FactoryT], FactoryT]:
    """Decorator registering a trunk factory (a class or function) under ``name``."""

    def decorator(factory: FactoryT) -> FactoryT:
        if name in _TRUNK_FACTORIES:
            raise ValueError(f"trunk {name!r} is already registered")
        _TRUNK_FACTORIES[name] = factory
        return factory

    return decorator


def list_trunks() -> list[str]:
    """Names of all registered trunks, sorted."""
    return sorted(_TRUNK_FACTORIES)


def build_trunk(name: str, **kwargs: object) -> Trunk:
    """Instantiate the trunk registered as ``name`` with ``kwargs``."""
    try:
        factory = _TRUNK_FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown trunk {name!r}; registered trunks: {', '.join(list_trunks()) or '(none)'}"
        ) from None
    trunk = factory(**kwargs)
    if not isinstance(trunk, Trunk):
        raise TypeError(f"factory for {name!r} returned {type(trunk).__name__}, not a Trunk")
    return trunk
