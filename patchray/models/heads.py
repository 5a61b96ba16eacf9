"""Networks built on a trunk: the PatchTask pretext net and the attribute net."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Trunk, build_trunk

__all__ = ["PretextNet", "build_pretext_net", "AttributeNet", "attribute_losses", "attribute_loss"]


def _he_normal_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A Linear layer followed by ReLU: He-normal weights, zero bias."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A classifier layer whose logits are all zero at init (uniform softmax), as the reference."""
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class PretextNet(nn.Module):
    """Trunk + FC-``hidden`` (+ BatchNorm1d if the trunk has BN) + ReLU + zero-initialised classifier for the
    PatchTask, as the reference's ``ModelPatches`` (model.py).

    Input ``[B, 3, P, P]``, or ``[B, 2, 3, P, P]`` when ``pairwise``: then both
    patches go through the same trunk and their flattened features are
    concatenated (first patch first) before the FC layer, so the ordered pair
    can be classified. Returns logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        trunk: Trunk,
        num_classes: int,
        patch_size: int = 32,
        pairwise: bool = False,
        hidden: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.pairwise = pairwise
        patches_per_example = 2 if pairwise else 1
        in_features = trunk.feature_dim(patch_size, patch_size) * patches_per_example
        use_bn = _has_batchnorm(trunk)
        # BN's shift makes the FC bias redundant (the reference's lasagne batch_norm() drops it too).
        head_layers: list[nn.Module] = [_he_normal_linear(in_features, hidden, bias=not use_bn)]
        if use_bn:
            head_layers.append(nn.BatchNorm1d(hidden))
        head_layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            head_layers.append(nn.Dropout(p=dropout))
        head_layers.append(_zero_linear(hidden, num_classes))
        self.head = nn.Sequential(*head_layers)

    @property
    def classifier(self) -> nn.Linear:
        return self.head[-1]  # type: ignore[return-value]

    def features(self, patches: Tensor) -> Tensor:
        """Flattened trunk features ``[B, D]`` (``[B, 2D]`` when pairwise)."""
        size = self.patch_size
        if self.pairwise:
            if patches.dim() != 5 or tuple(patches.shape[1:]) != (2, 3, size, size):
                raise ValueError(f"pairwise PretextNet expects [B, 2, 3, {size}, {size}], got {list(patches.shape)}")
            batch = patches.shape[0]
            # One trunk call over both slots: rows are (example 0 slot 0,
            # example 0 slot 1, example 1 slot 0, ...), so viewing back as
            # [B, 2D] concatenates each example's two feature vectors.
            flat = self.trunk(patches.reshape(batch * 2, 3, size, size)).flatten(1)
            return flat.reshape(batch, -1)
        if patches.dim() != 4 or tuple(patches.shape[1:]) != (3, size, size):
            raise ValueError(f"PretextNet expects [B, 3, {size}, {size}], got {list(patches.shape)}")
        return self.trunk(patches).flatten(1)

    def forward(self, patches: Tensor) -> Tensor:
        return self.head(self.features(patches))


def build_pretext_net(model: str, task) -> PretextNet:
    """The PatchTask net on the registered trunk ``model`` for ``task`` (a ``PatchTaskConfig``: its classes,
    patch size and pairwise setting): what pretraining trains and the training benchmarks time."""
    return PretextNet(build_trunk(model), task.num_classes, patch_size=task.patch_size, pairwise=task.pairwise)


class AttributeNet(nn.Module):
    """Trunk + FC-``hidden`` (+ BatchNorm1d if the trunk has BN) + ReLU + one head per attribute.

    ``attribute_classes[a]`` is the number of real classes of attribute ``a``;
    the N/A label has no output (it is excluded from the loss instead). Each
    head is zero-initialised. ``forward`` returns one ``[B, K_a]`` logits tensor
    per attribute.

    ``pooled_hw`` (default None = flatten the full map, as the reference)
    adaptively average-pools the trunk's map to that size first; useful for
    trunks that keep a high resolution (``resnet18`` with ``small_input`` gives
    25x13x512 on a 200x100 crop, i.e. an 85M-weight FC-512 without pooling).
    """

    def __init__(
        self,
        trunk: Trunk,
        attribute_classes: Sequence[int],
        input_hw: tuple[int, int] = (200, 100),
        hidden: int = 512,
        dropout: float = 0.0,
        pooled_hw: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if not attribute_classes or any(k < 1 for k in attribute_classes):
            raise ValueError(f"attribute_classes must be non-empty positive counts, got {attribute_classes}")
        self.trunk = trunk
        self.attribute_classes = list(attribute_classes)
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        use_bn = _has_batchnorm(trunk)
        if pooled_hw is None:
            self.pool: nn.Module = nn.Identity()
            in_features = trunk.feature_dim(*self.input_hw)
        else:
            self.pool = nn.AdaptiveAvgPool2d(pooled_hw)
            in_features = trunk.out_channels * pooled_hw[0] * pooled_hw[1]
        # BN's shift makes the FC bias redundant.
        fc_layers: list[nn.Module] = [_he_normal_linear(in_features, hidden, bias=not use_bn)]
        if use_bn:
            fc_layers.append(nn.BatchNorm1d(hidden))
        fc_layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            fc_layers.append(nn.Dropout(p=dropout))
        self.fc = nn.Sequential(*fc_layers)
        self.heads = nn.ModuleList(_zero_linear(hidden, k) for k in self.attribute_classes)

    def forward(self, images: Tensor) -> list[Tensor]:
        if images.dim() != 4 or tuple(images.shape[-2:]) != self.input_hw:
            raise ValueError(f"AttributeNet expects [B, 3, {self.input_hw[0]}, {self.input_hw[1]}], "
                             f"got {list(images.shape)}")
        shared = self.fc(self.pool(self.trunk(images)).flatten(1))
        return [head(shared) for head in self.heads]


def attribute_losses(logits_list: Sequence[Tensor], labels: Tensor,
                     class_weights: Sequence[Tensor | Sequence[float]] | None = None) -> Tensor:
    """Per-attribute cross-entropy ``[A]``.

    ``labels`` is ``[B, A]`` with 0 = N/A and 1..K_a the classes of attribute
    ``a`` (target = label - 1). N/A examples add no loss in either form.

    * ``class_weights`` None (``loss: ce``): each attribute's cross-entropy is
      averaged over the examples labeled for it; an attribute with no labeled
      example in the batch gives 0 (not NaN).
    * ``class_weights[a]`` (``K_a`` weights; ``loss: balanced``): the class-weighted
      cross-entropy, sum over the labeled examples of ``w[a][target] * CE``,
      divided by the whole batch size B, N/A examples included: the reference's
      convention (psudowe/patchit, ``attribute_datasets``: "N/A examples zero loss,
      averaged over the whole batch"). With weights normalised so that a labeled
      training example weighs 1 on average, it is the plain loss's scale times the
      labeled fraction of the batch.

    Computed without host syncs (no ``.any()``) so it does not stall the GPU.
    """
    if labels.dim() != 2 or labels.shape[1] != len(logits_list):
        raise ValueError(f"labels must be [B, {len(logits_list)}], got {list(labels.shape)}")
    if class_weights is not None and len(class_weights) != len(logits_list):
        raise ValueError(f"expected {len(logits_list)} class weight vectors (one per attribute), "
                         f"got {len(class_weights)}")
    labels = labels.long()
    losses = []
    for index, logits in enumerate(logits_list):
        column = labels[:, index]
        if class_weights is None:
            # N/A (0) becomes target -1, which cross_entropy ignores.
            summed = F.cross_entropy(logits, column - 1, ignore_index=-1, reduction="sum")
            labeled = (column != 0).sum().clamp(min=1)
            losses.append(summed / labeled)
            continue
        weights = torch.as_tensor(class_weights[index], dtype=logits.dtype, device=logits.device)
        if weights.shape != (logits.shape[1],):
            raise ValueError(f"class weights of attribute {index} must be [{logits.shape[1]}], "
                             f"got {list(weights.shape)}")
        summed = F.cross_entropy(logits, column - 1, weight=weights, ignore_index=-1, reduction="sum")
        losses.append(summed / max(len(column), 1))
    return torch.stack(losses)


def attribute_loss(logits_list: Sequence[Tensor], labels: Tensor,
                   class_weights: Sequence[Tensor | Sequence[float]] | None = None) -> Tensor:
    """Sum over attributes of :func:`attribute_losses` (the fine-tuning loss)."""
    return attribute_losses(logits_list, labels, class_weights).sum()
