"""Initialising a trunk for fine-tuning: ``random`` (He), ``patchtask:<checkpoint>``, ``imagenet``.

ImageNet weights are taken only from the local torch cache (``torch.hub.get_dir()``):
nothing is downloaded, and a missing file is a clear error that says where it
was looked for.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .transfer import TransferReport, transfer_trunk

__all__ = ["InitSpec", "parse_init", "load_init_state", "initialise_trunk", "InitError", "IMAGENET_MEAN",
           "IMAGENET_STD", "imagenet_cache_path", "trunk_block_count", "check_transfer_blocks"]

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


def recorded_trunk(spec: InitSpec) -> str | None:
    """The ``model`` a PatchTask checkpoint was pretrained with, from its run folder's ``config.yaml`` (a run
    folder, or ``<run>/checkpoints/pretext.pt``), or None when there is no such record."""
    import yaml

    path = Path(os.path.expanduser(spec.path or ""))
    run = path if path.is_dir() else path.parent.parent
    try:
        return (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("model")
    except (OSError, yaml.YAMLError, AttributeError):
        return None


@functools.cache
def trunk_block_count(model: str) -> int:
    """How many blocks (``Trunk.blocks``) trunk ``model`` has: 4 for ``tiny``, 5 for ``vgg16`` and ``resnet18``."""
    from . import build_trunk

    return len(build_trunk(model).blocks)


def check_transfer_blocks(blocks: int | None, model: str, count: int | None = None) -> None:
    """Refuse a ``transfer_blocks`` outside 0..(the trunk's block count), naming that count."""
    if blocks is None:
        return
    count = trunk_block_count(model) if count is None else count
    if not 0 <= blocks <= count:
        raise InitError(f"transfer_blocks={blocks}, but trunk {model!r} has {count} blocks: choose 0..{count} "
                        "(0 copies none, a random init with the run's seed), or null for the whole trunk")


def initialise_trunk(trunk: nn.Module, spec: InitSpec | str, model: str,
                     blocks: int | None = None) -> TransferReport | None:
    """Copy pretrained tensors into ``trunk`` in place; returns what was copied and skipped (None: random).

    ``blocks`` (``FinetuneConfig.transfer_blocks``): copy only the first ``blocks`` of ``trunk.blocks`` and leave
    the others at the trunk's own (fresh, seeded) init, which the report lists as ``fresh``; None: the whole
    trunk. The checkpoint must still fit the whole trunk: copying two blocks of another architecture is as
    wrong as copying all of them.

    A PatchTask checkpoint must hold exactly this trunk's tensors: every one by name and shape, none left over
    (trunks that differ only in what holds no weights, ``tiny`` and ``tiny_d25``'s dropout, transfer). Tensors
    of another architecture can share names and shapes (vgg16's conv biases and vgg16_bn's BatchNorm biases),
    so a partial match would copy weights into the wrong layers and succeed quietly.
    ImageNet weights may differ by design (the small-input stem of ``resnet18``): those skips are reported.
    """
    spec = parse_init(spec) if isinstance(spec, str) else spec
    if blocks is not None:
        if spec.kind == "random":
            raise InitError(f"transfer_blocks={blocks} with init random: there is nothing to copy")
        check_transfer_blocks(blocks, model, len(trunk.blocks))
    state = load_init_state(spec, model)
    if state is None:
        return None
    report = transfer_trunk(state, trunk, blocks=blocks)
    if spec.kind == "patchtask" and not report.exact:
        recorded = recorded_trunk(spec)
        theirs = f"trunk {recorded!r}" if recorded else "another trunk"
        raise InitError(
            f"init {spec}: the checkpoint holds {theirs}, fine-tuning builds trunk {model!r}; "
            f"{len(report.skipped)} of {len(report.copied) + len(report.skipped) + len(report.fresh)} tensors "
            f"would not transfer by name and shape. Fine-tune with model={recorded or '<the pretraining model>'}, "
            f"or pretrain with model={model}.\n{report.summary()}")
    if not report.copied and not report.fresh:
        raise InitError(f"init {spec}: no tensor of the checkpoint fits trunk {model!r}:\n{report.summary()}")
    return report


# Beside pretext.pt: the input normalisation of the pretraining ({"mode", and for "dataset" per-pixel "mean" and
# "std" [3, P, P]}), written by patchray.train.pretrain.
NORMALIZATION_FILE = "normalization.pt"


def recorded_normalization(spec: InitSpec) -> dict | None:
    """How a PatchTask checkpoint's pretraining normalised its input: ``checkpoints/normalization.pt`` beside the
    checkpoint (loaded with ``weights_only``), else the normalisation its run folder's ``config.yaml`` records (runs
    from before that file; ``dataset`` then has lost its statistics and is refused); None without either."""
    import yaml

    from patchray.patches import NORMALIZE_MODES

    path = Path(os.path.expanduser(spec.path or ""))
    checkpoints, run = (path / "checkpoints", path) if path.is_dir() else (path.parent, path.parent.parent)
    file = checkpoints / NORMALIZATION_FILE
    if file.is_file():
        try:
            record = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # never unpickle anything else
            raise InitError(f"init {spec}: {file} is not a loadable normalisation record ({e})") from None
        mode = record.get("mode") if isinstance(record, dict) else None
        stats = [record.get(k) for k in ("mean", "std")] if mode == "dataset" else []
        if mode not in NORMALIZE_MODES or not all(isinstance(t, torch.Tensor) and t.ndim == 3 and t.shape[0] == 3
                                                  for t in stats):
            raise InitError(f"init {spec}: {file} holds no valid normalisation record")
        return record
    try:
        recorded = yaml.safe_load((run / "config.yaml").read_text()) or {}
        # input.normalize since the shared input section; task.normalize before it
        mode = (recorded.get("input") or {}).get("normalize") or (recorded.get("task") or {}).get("normalize")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if mode == "dataset":
        raise InitError(f"init {spec}: its pretraining normalised with input.normalize=dataset, but its statistics "
                        f"({file}) are missing; fine-tuning cannot feed the trunk what it was trained on")
    return {"mode": mode} if mode in NORMALIZE_MODES else None


def settle_normalization(spec: InitSpec, normalize: str | None, mean: list | None, std: list | None,
                         who: str = "fine-tuning") -> tuple[str | None, list | None, list | None]:
    """(normalize, mean, std) of whole crops fed to the trunk of init ``spec``, as fine-tuning settles them; ``who``
    names the asker in refusals. A PatchTask init follows its pretraining's recorded normalisation carried over
    to whole crops (``patch`` per crop and channel; ``dataset``: the per-pixel statistics pooled per channel,
    ``channel_stats``; ``none``); a set value that differs is refused, naming both. A random init, or a
    PatchTask checkpoint without any record (hand-made), takes the given value or ``patch``. An imagenet init is
    returned as given: its callers feed ImageNet's mean/std."""
    if spec.kind == "imagenet":
        return normalize, mean, std
    record = recorded_normalization(spec) if spec.kind == "patchtask" else None
    if record is None:
        if spec.kind == "patchtask" and normalize == "dataset" and mean is None:
            raise InitError(f"input.normalize=dataset, but init {spec} records no pretraining statistics")
        return normalize or "patch", mean, std
    pretrained = record["mode"]
    if normalize is not None and normalize != pretrained:
        raise InitError(f"{who} input.normalize={normalize!r}, but init {spec} was pretrained with "
                        f"input.normalize={pretrained!r}: the trunk must see input normalised as in pretraining. "
                        f"Leave input.normalize unset (it follows the pretraining), or pretrain with "
                        f"input.normalize={normalize}")
    if pretrained != "dataset":
        return pretrained, None, None
    import numpy as np

    from patchray.patches import channel_stats

    pooled_mean, pooled_std = channel_stats(record["mean"], record["std"])
    if mean is not None and not np.allclose([mean, std], [pooled_mean, pooled_std], rtol=1e-6, atol=1e-9):
        raise InitError(f"input.normalize_mean/normalize_std {mean} / {std} differ from init {spec}'s pretraining "
                        f"statistics {pooled_mean} / {pooled_std}; leave them unset")
    return "dataset", pooled_mean, pooled_std
