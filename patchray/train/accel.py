"""Accelerator settings shared by the training loops and the training benchmark: channels-last memory
format and an optional ``torch.compile``. bf16 autocast lives in ``worker.autocast``.

Channels-last lets cuDNN pick its fastest (tensor-core) convolutions; it is on by default on GPUs only, where
it pays. ``torch.compile`` costs a minute of compilation before the first step and is off unless asked for.
"""
from __future__ import annotations

import torch
from torch import nn

COMPILE_BACKENDS = ("", "inductor", "aot_eager", "eager", "cudagraphs")  # "": no compilation


def check_compile(backend: str) -> None:
    if backend not in COMPILE_BACKENDS:
        raise ValueError(f"compile must be one of {COMPILE_BACKENDS} ('' for none), got {backend!r}")


def channels_last_for(setting: bool | None, device: torch.device) -> bool:
    """The configured choice, or by default: on for CUDA devices only."""
    return device.type == "cuda" if setting is None else bool(setting)


def to_memory_format(net: nn.Module, channels_last: bool) -> nn.Module:
    return net.to(memory_format=torch.channels_last) if channels_last else net


def maybe_compile(model: nn.Module, backend: str) -> nn.Module:
    """``torch.compile(model)`` with ``backend``; the model itself when backend is ''. Keep a reference to the
    uncompiled module for state_dicts: the compiled wrapper prefixes every key."""
    check_compile(backend)
    return torch.compile(model, backend=backend) if backend else model


def as_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch in the network's memory format (4-D image batches only; pairwise 5-D batches stay as they are)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x
