"""Copy a pretrained conv trunk into a new network (pretext FC layers dropped)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["TransferReport", "transfer_trunk", "block_of_keys"]

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
    ``fresh``: target keys that would have transferred but were left at their own (fresh) init by choice: a
    partial transfer (``blocks`` of ``block_count`` trunk blocks copied) leaves the later blocks so.
    ``block_of``: target key -> index of its trunk block (None: in no block), recorded by a partial transfer.
    """

    copied: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unused: list[tuple[str, str]] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    blocks: int | None = None
    block_count: int | None = None
    block_of: dict[str, int | None] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        """Every target tensor came from the source, and every source trunk tensor found its place."""
        return not self.skipped and all(reason == REASON_PRETEXT_HEAD for _, reason in self.unused)

    def summary(self) -> str:
        total = len(self.copied) + len(self.skipped) + len(self.fresh)
        head = sum(reason == REASON_PRETEXT_HEAD for _, reason in self.unused)
        # The first line is what a job logs: it says how much of the trunk came from the source.
        lines = [f"copied {len(self.copied)} of {total} trunk tensors" + self._partial_note()
                 + f", skipped {len(self.skipped)}"
                 + (f" (the pretext head's {head} tensors are dropped by design)" if head else "")]
        reasons = Counter(reason.split(":")[0] for _, reason in self.skipped)
        lines += [f"  {count} x {reason}" for reason, count in sorted(reasons.items())]
        lines += self._block_lines()
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        lines += [f"  unused {name}: {reason}" for name, reason in self.unused if reason != REASON_PRETEXT_HEAD]
        return "\n".join(lines)

    def _partial_note(self) -> str:
        if self.blocks is None:
            return ""
        k, n = self.blocks, self.block_count
        if k == n:
            return f" (transfer_blocks={k}: all {n} blocks)"
        copied = f"none of the {n} blocks" if k == 0 else f"{_block_range(1, k)} of {n}"
        return (f" (transfer_blocks={k}: {copied}; {len(self.fresh)} tensors of "
                f"{_block_range(k + 1, n)} left at their fresh init)")

    def _block_lines(self) -> list[str]:
        """Per trunk block of a partial transfer: copied or left fresh, and its tensors."""
        if self.blocks is None:
            return []
        k, n = self.blocks, self.block_count
        lines = []
        for index in [*range(n), None]:
            keys = [key for key, block in self.block_of.items() if block == index]
            if not keys:
                continue
            where = f"block {index + 1}" if index is not None else "outside every block"
            copied = k == n or (index is not None and index < k)
            lines.append(f"  {where} {'copied' if copied else 'left fresh'}: {', '.join(keys)}")
        return lines


def _block_range(first: int, last: int) -> str:
    """``first``..``last`` (1-based, inclusive, not empty) in words: "block 2", "blocks 2-4"."""
    return f"block {first}" if first == last else f"blocks {first}-{last}"


def block_of_keys(trunk: nn.Module) -> dict[str, int | None]:
    """State-dict key -> index of the block of ``trunk.blocks`` that holds the tensor (None: no block).

    Blocks are views onto the trunk's own layers under other names, so tensors are matched by identity."""
    owner = {}
    for index, block in enumerate(trunk.blocks):
        for tensor in [*block.parameters(), *block.buffers()]:
            owner.setdefault(id(tensor), index)
    named = dict(trunk.named_parameters()) | dict(trunk.named_buffers())
    return {key: owner.get(id(named[key])) if key in named else None for key in trunk.state_dict()}


def _chosen_keys(target_trunk: nn.Module, blocks: int, report: TransferReport) -> set[str]:
    """The target keys of the first ``blocks`` trunk blocks (every key when ``blocks`` is all of them)."""
    count = len(target_trunk.blocks)
    if not 0 <= blocks <= count:
        raise ValueError(f"transfer_blocks={blocks}, but the trunk has {count} blocks: choose 0..{count}, "
                         "or null for the whole trunk")
    report.blocks, report.block_count = blocks, count
    report.block_of = block_of_keys(target_trunk)
    # A tensor in no block goes with the whole trunk only: a partial transfer copies blocks, nothing else.
    return {key for key, index in report.block_of.items()
            if (index is not None and index < blocks) or blocks == count}


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
    blocks: int | None = None,
) -> TransferReport:
    """Copy trunk tensors (parameters and buffers) from a checkpoint into ``target_trunk``.

    ``source_state_dict`` is a trunk's state_dict, or a full network's (keys
    ``trunk.*``, e.g. a :class:`~patchray.models.heads.PretextNet`): its
    ``head.*`` keys are reported as unused "pretext head" and other non-trunk
    keys as unused "not a trunk parameter". ``module.``/``_orig_mod.`` prefixes are
    stripped. Tensors are copied by name where shapes match; everything else
    keeps the target's own initialisation. With ``strict`` a ValueError is
    raised unless every target tensor was copied (or left fresh by ``blocks``).

    ``blocks``: copy only the tensors of the first ``blocks`` of ``target_trunk.blocks`` (a
    :class:`~patchray.models.registry.Trunk`); the others keep their own init and are reported as ``fresh``.
    Every tensor is still matched by name and shape, so that a source of another trunk shows in ``skipped``
    whatever part of it is copied. None: the whole trunk. A count outside 0..len(blocks): ValueError.
    """
    source, unused = _split_source(source_state_dict)
    report = TransferReport()
    target_state = target_trunk.state_dict()
    chosen = set(target_state) if blocks is None else _chosen_keys(target_trunk, blocks, report)
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
            if key not in chosen:
                report.fresh.append(key)
                continue
            # state_dict tensors share storage with the module, so this writes into it.
            target_tensor.copy_(source_tensor)
            report.copied.append(key)
    for key in source:
        if key not in target_state:
            report.unused.append((key, REASON_NOT_TRUNK))
    report.unused.extend(unused)
    if strict and len(report.copied) + len(report.fresh) != len(target_state):
        raise ValueError("trunk transfer incomplete:\n" + report.summary())
    return report
