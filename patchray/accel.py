"""Accelerator settings shared by the training loops and the training benchmark: channels-last memory
format, bf16 autocast and an optional ``torch.compile``. Free of Ray, so GPU benchmarks run without it.

Channels-last lets cuDNN pick its fastest (tensor-core) convolutions; it is on by default, as it also pays on
the CPU (docs/performance.md, Channels-last on the CPU). ``torch.compile`` costs a minute of compilation before
the first step and is off unless asked for.
"""
from __future__ import annotations

import threading
import typing
from contextlib import nullcontext
from typing import Literal

import torch
from torch import nn

# "": no compilation; "reduce-overhead": inductor replaying CUDA graphs of the step's kernels (one launch for many:
# for nets bound by kernel launches; the batches must keep one shape, which pretraining's do). Under DDP dynamo
# splits the graph at the gradient buckets, so the all-reduces run between the captured graphs, never inside one:
# Ray's TORCH_NCCL_ASYNC_ERROR_HANDLING (NCCL's watchdog) can stay on. A hand capture of the whole step, all-reduce
# included, would need it off; patchray does not make one.
CompileBackend = Literal["", "inductor", "reduce-overhead", "aot_eager", "eager", "cudagraphs"]
COMPILE_BACKENDS = typing.get_args(CompileBackend)
# DDP's all-reduce of gradients in float32 ("none") or halved (``patchray.train.epoch.compress_gradients``)
GradCompression = Literal["none", "fp16", "bf16"]
GRAD_COMPRESSIONS = typing.get_args(GradCompression)
Device = Literal["auto", "cpu", "cuda"]
DEVICES = typing.get_args(Device)


def check_device(name: str) -> None:
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {name!r}")


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu`` or ``cuda``; refuses ``cuda`` without a GPU."""
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no GPU")
    return torch.device(name)


def check_compile(backend: str) -> None:
    if backend not in COMPILE_BACKENDS:
        raise ValueError(f"compile must be one of {COMPILE_BACKENDS} ('' for none), got {backend!r}")


def channels_last_for(setting: bool | None, device: torch.device) -> bool:
    """The configured choice, or by default on, on every device: channels-last pays on GPUs (tensor cores) and
    on CPUs too, where oneDNN's convolutions run faster in it (docs/performance.md, "Channels-last on the CPU":
    1.2 to 1.5x a training step and 1.5 to 1.9x evaluation for tiny_d25). ``device`` stays in the signature for
    a device where it would not pay."""
    return True if setting is None else bool(setting)


def to_memory_format(net: nn.Module, channels_last: bool) -> nn.Module:
    return net.to(memory_format=torch.channels_last) if channels_last else net


def maybe_compile(model: nn.Module, backend: str) -> nn.Module:
    """``torch.compile(model)`` with ``backend``; the model itself when backend is ''. Keep a reference to the
    uncompiled module for state_dicts: the compiled wrapper prefixes every key."""
    check_compile(backend)
    if backend == "reduce-overhead":
        return torch.compile(model, mode="reduce-overhead")
    return torch.compile(model, backend=backend) if backend else model


def as_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch in the network's memory format (4-D image batches only; pairwise 5-D batches stay as they are)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on GPU; on the CPU a no-op (bf16 there is slower than fp32 for these nets)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def tune_for(device: torch.device) -> None:
    """Let cuDNN time its convolution algorithms once per input shape and keep the fastest: patch batches
    have one fixed shape, so the search pays back within a few steps. Nothing to do on the CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


_side_streams = threading.local()


def produce_for_default_stream(device: torch.device, produce):
    """``produce()`` for a consumer on ``device``'s default stream, possibly in another thread (Ray collates
    batches in a thread pool; the training step runs in the main thread).

    On a GPU its work runs on a stream of this thread's own and has finished when this returns, and every CUDA
    tensor it returns (top level, or in a returned dict or tuple) is marked as used by the default stream, so
    that its memory is not handed to the next batch while the step still reads it. Elsewhere: ``produce()``.
    """
    if device.type != "cuda":
        return produce()
    streams = _side_streams.__dict__.setdefault("by_device", {})
    stream = streams.setdefault(device, torch.cuda.Stream(device))
    with torch.cuda.stream(stream):
        result = produce()
    stream.synchronize()
    consumer = torch.cuda.default_stream(device)
    for value in result.values() if isinstance(result, dict) else result if isinstance(result, tuple) else [result]:
        if isinstance(value, torch.Tensor) and value.is_cuda:
            value.record_stream(consumer)
    return result
