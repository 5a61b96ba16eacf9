"""Copy a pretrained conv trunk into a new network (pretext FC layers dropped)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["TransferReport", "transfer_trunk"]

REASON_MISSING = "missing in source"
REASON_PRETEXT_HEAD = "pretext head"
REASON_NOT_TRUNK = "not a trunk parameter"
REASON_SHAPE = "shape mismatch"

# Wrappers that prefix every key: DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class TransferReport:
    """Outcome of :func:`transfer_trunk`.

    ``copied``: target trunk keys whose tensor was overwritten from the source.
    ``skipped``: ``(key, reason)``; target keys left at their own init (missing in source, shape mismatch): the
    real skips, what the transfer failed to carry over.
    ``unused``: ``(key, reason)``; source keys that went nowhere: the pretext head (dropped by design) and
    tensors the target trunk has no place for (not a trunk parameter).
    """

    copied: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Every target tensor came from the source, and every source trunk tensor found its place."""
        return not self.skipped and all(reason == REASON_PRETEXT_HEAD for _, reason in self.unused)

    def summary(self) -> str:
        total = len(self.copied) + len(self.skipped)
        head = sum(reason == REASON_PRETEXT_HEAD for _, reason in self.unused)
        lines = [f"copied {len(self.copied)} of {total} trunk tensors, skipped {len(self.skipped)}"
                 + (f" (the pretext head's {head} tensors are dropped by design)" if head else "")]
        reasons = Counter(reason.split(":")[0] for _, reason in self.skipped)
        lines += [f"  {count} x {reason}" for reason, count in sorted(reasons.items())]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        lines += [f"  unused {name}: {reason}" for name, reason in self.unused if reason != REASON_PRETEXT_HEAD]
        return "\n".join(lines)


def _strip_wrapper_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                stripped = True
    return key


def _split_source(source_state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
    """Trunk tensors of the source keyed like the trunk's own state_dict, and unused keys."""
    keys = {_strip_wrapper_prefixes(k): v for k, v in source_state_dict.items()}
    is_full_net = any(k.startswith("trunk.") for k in keys)
    if not is_full_net:
        return keys, []
    trunk_tensors: dict[str, Tensor] = {}
    unused: list[tuple[str, str]] = []
    for key, value in keys.items():
        if key.startswith("trunk."):
            trunk_tensors[key[len("trunk.") :]] = value
        elif key.startswith("head."):
            unused.append((key, REASON_PRETEXT_HEAD))
        else:
            unused.append((key, REASON_NOT_TRUNK))
    return trunk_tensors, unused


def transfer_trunk(
    source_state_dict: Mapping[str, Tensor],
    target_trunk: nn.Module,
    *,
    strict: bool = False,
) -> TransferReport:
    """Copy trunk tensors (parameters and buffers) from a checkpoint into ``target_trunk``.

    ``source_state_dict`` is a trunk's state_dict, or a full network's (keys
    ``trunk.*``, e.g. a :class:`~patchray.models.heads.PretextNet`): its
    ``head.*`` keys are reported as unused "pretext head" and other non-trunk
    keys as unused "not a trunk parameter". ``module.``/``_orig_mod.`` prefixes are
    stripped. Tensors are copied by name where shapes match; everything else
    keeps the target's own initialisation. With ``strict`` a ValueError is
    raised unless every target tensor was copied.
    """
    source, unused = _split_source(source_state_dict)
    report = TransferReport()
    target_state = target_trunk.state_dict()
    with torch.no_grad():
        for key, target_tensor in target_state.items():
            if key not in source:
                report.skipped.append((key, REASON_MISSING))
                continue
            source_tensor = source[key]
            if source_tensor.shape != target_tensor.shape:
                report.skipped.append(
                    (key, f"{REASON_SHAPE}: source {tuple(source_tensor.shape)} vs target {tuple(target_tensor.shape)}")
                )
                continue
            # state_dict tensors share storage with the module, so this writes into it.
            target_tensor.copy_(source_tensor)
            report.copied.append(key)
    for key in source:
        if key not in target_state:
            report.unused.append((key, REASON_NOT_TRUNK))
    report.unused.extend(unused)
    if strict and len(report.copied) != len(target_state):
        raise ValueError("trunk transfer incomplete:\n" + report.summary())
    return report
