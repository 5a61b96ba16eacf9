"""Turning uint8 patches into network input, on whatever device the batch lives on.

Patches travel through the data pipeline as uint8 channels-last (4x smaller than
float32); the training worker calls :func:`normalize_patches` after moving them
to its device. All modes first bring pixels to the [0, 1] scale, so dataset
mean/std are given in [0, 1] units (as :class:`PixelStatistics` and
:func:`dataset_channel_stats` return them).

``normalize="dataset"`` is the reference scripts' (``make_patch_mean.py``): a mean and a
std per pixel, 3 x P x P, over training patches. Whole crops (fine-tuning) cannot take
per-pixel statistics of patches; :func:`channel_stats` pools them per channel.
"""
from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from .sampling import DROP_PLANE  # zero-filled channel drop: the plane after R, G, B naming the channel

NormalizeMode = Literal["patch", "dataset", "none"]
NORMALIZE_MODES = typing.get_args(NormalizeMode)
# Variance floor on the [0, 1] scale (~2.5 gray levels of std): standardising a
# near-flat patch (sky, zero padding) would otherwise blow quantisation noise up
# to unit variance.
PATCH_VARIANCE_EPS = 1e-4
# Floor of a per-pixel dataset std (the same ~2.5 gray levels): a pixel that never varies over the sample
# (zero padding in every sampled crop) would otherwise divide by zero.
DATASET_STD_FLOOR = PATCH_VARIANCE_EPS ** 0.5


def _stats_tensor(values: Sequence[float] | torch.Tensor | np.ndarray, name: str, like: torch.Tensor) -> torch.Tensor:
    """``values`` shaped to broadcast over channels-first ``like`` [..., 3, H, W]: 3 values (one per channel)
    or 3 x H x W (one per pixel, as the dataset statistics of patches)."""
    tensor = torch.as_tensor(values, dtype=torch.float32, device=like.device)
    if tensor.numel() == 3:
        return tensor.reshape(3, 1, 1)
    if tuple(tensor.shape) != tuple(like.shape[-3:]):
        raise ValueError(f"{name} must have one value per colour channel (3) or per pixel {list(like.shape[-3:])}, "
                         f"got shape {list(tensor.shape)}")
    return tensor


def normalize_patches(
    patches: torch.Tensor,
    mode: str = "patch",
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    eps: float = PATCH_VARIANCE_EPS,
    channels_last: bool = False,
    std_checked: bool = False,
) -> torch.Tensor:
    """float32 channels-first network input from channels-last patches.

    patches: uint8 or float with pixel values on the 0..255 scale,
    [B, P, P, 3] -> [B, 3, P, P], or pairwise [B, 2, P, P, 3] -> [B, 2, 3, P, P].
    mode "patch": each patch and channel standardised to zero mean, unit std;
    "dataset": (x/255 - mean) / std with ``mean``, ``std`` in [0, 1] units, per pixel
    (3 x P x P, the reference's) or per channel (3 values);
    "none": x/255.
    Patches with a 4th plane (a zero-filled channel drop, see ``sample_patches``) have the
    channel it names set to 0 after normalising, as the reference scripts drop a channel.
    ``channels_last``: a [B, 3, P, P] result in the channels-last memory format (a net in that format takes it
    without a copy; the uint8 input's layout already is, so it costs none here either); pairs stay contiguous.
    ``std_checked``: ``std`` is known to be positive (``checked_stats``), so the check, which reads a GPU tensor
    on the host and waits for the device, is skipped.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize mode {mode!r}; expected one of {NORMALIZE_MODES}")
    if mode != "dataset" and (mean is not None or std is not None):
        raise ValueError(f"mean/std are only used by mode 'dataset', not {mode!r}")
    if patches.dtype != torch.uint8 and not patches.dtype.is_floating_point:
        raise TypeError(f"patches must be uint8 or floating point, got {patches.dtype}")
    if patches.ndim not in (4, 5) or patches.shape[-1] not in (3, 4) or patches.shape[-2] != patches.shape[-3]:
        raise ValueError(f"patches must be [B, P, P, 3] or [B, 2, P, P, 3] (4 planes with a channel drop), "
                         f"got {tuple(patches.shape)}")
    if patches.ndim == 5 and patches.shape[1] != 2:
        raise ValueError(f"pairwise patches must be [B, 2, P, P, 3], got {tuple(patches.shape)}")
    if patches.shape[-1] == 3:
        return _in_layout(_standardise(patches, mode, mean, std, eps, std_checked), channels_last)
    dropped = patches[..., 0, 0, DROP_PLANE].long()  # [B] or [B, 2]: channel + 1, 0 for none
    pixels = _standardise(patches[..., :DROP_PLANE], mode, mean, std, eps, std_checked)
    channels = torch.arange(1, 4, device=pixels.device)
    return _in_layout(pixels.masked_fill((dropped[..., None] == channels)[..., None, None], 0.0), channels_last)


def normalize_images(
    images: torch.Tensor,
    mode: str = "patch",
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    eps: float = PATCH_VARIANCE_EPS,
    channels_last: bool = False,
    std_checked: bool = False,
) -> torch.Tensor:
    """Whole crops [B, H, W, 3] -> float32 [B, 3, H, W], with the same modes as ``normalize_patches``
    ("patch" standardises each crop), so that a fine-tuned trunk sees the statistics it was pretrained on;
    ``channels_last`` and ``std_checked`` as there."""
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize mode {mode!r}; expected one of {NORMALIZE_MODES}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
    return _in_layout(_standardise(images, mode, mean, std, eps, std_checked), channels_last)


def _in_layout(pixels: torch.Tensor, channels_last: bool) -> torch.Tensor:
    # _standardise's arithmetic keeps the channels-last layout of movedim's view of the [..., H, W, 3] input:
    # the plain layout costs a copy here, channels-last none.
    if channels_last and pixels.ndim == 4:
        return pixels.contiguous(memory_format=torch.channels_last)
    return pixels.contiguous()


def _standardise(patches: torch.Tensor, mode: str, mean, std, eps: float, std_checked: bool = False) -> torch.Tensor:
    pixels = patches.movedim(-1, -3).to(torch.float32) / 255.0
    if mode == "patch":
        variance, mean_value = torch.var_mean(pixels, dim=(-2, -1), keepdim=True, correction=0)
        pixels = (pixels - mean_value) * torch.rsqrt(variance + eps)
    elif mode == "dataset":
        if mean is None or std is None:
            raise ValueError("normalize mode 'dataset' needs mean and std (per pixel or per channel)")
        mean_tensor = _stats_tensor(mean, "mean", pixels)
        std_tensor = _stats_tensor(std, "std", pixels)
        if not std_checked:
            check_std(std_tensor)
        pixels = (pixels - mean_tensor) / std_tensor
    return pixels


def check_std(std: torch.Tensor) -> None:
    if not bool(torch.all(std > 0)):
        raise ValueError(f"std must be positive, got min {std.min().item()}")


def checked_stats(mean, std, device) -> dict[str, torch.Tensor]:
    """``{"mean", "std"}`` as float32 tensors on ``device``, the std checked positive: what a training loop
    builds once and passes with ``std_checked=True`` every step (no host-to-device copy, no host read)."""
    if mean is None or std is None:
        raise ValueError("normalize mode 'dataset' needs mean and std (per pixel or per channel)")
    stats = {name: torch.as_tensor(values, dtype=torch.float32).to(device)
             for name, values in (("mean", mean), ("std", std))}
    check_std(stats["std"])
    return stats


class PixelStatistics:
    """Per-pixel mean and std (3 x P x P, [0, 1] units) of channels-last uint8 patches added batch by batch:
    ``normalize="dataset"``'s statistics, as the reference's ``make_patch_mean.py`` computes them (sums in
    float64, so a sample of any size costs one chunk of memory)."""

    CHUNK = 1024  # patches converted to float64 at a time: 25 MB for 32 px

    def __init__(self) -> None:
        self.count = 0
        self._sum: np.ndarray | None = None
        self._squares: np.ndarray | None = None

    def add(self, patches: np.ndarray) -> None:
        patches = np.asarray(patches)
        if patches.ndim != 4 or patches.shape[-1] != 3 or patches.shape[1] != patches.shape[2]:
            raise ValueError(f"need single patches [N, P, P, 3], got {tuple(patches.shape)}")
        if self._sum is not None and patches.shape[1:] != self._sum.shape:
            raise ValueError(f"patches of {tuple(patches.shape[1:])} after {self._sum.shape}")
        for start in range(0, len(patches), self.CHUNK):
            pixels = patches[start:start + self.CHUNK].astype(np.float64) / 255.0
            sums, squares = pixels.sum(axis=0), np.einsum("npqc,npqc->pqc", pixels, pixels)
            self._sum = sums if self._sum is None else self._sum + sums
            self._squares = squares if self._squares is None else self._squares + squares
        self.count += len(patches)

    def mean_std(self, std_floor: float = DATASET_STD_FLOOR) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (mean, std), each [3, P, P] (channels first, as the network input); std at least
        ``std_floor``."""
        if not self.count:
            raise ValueError("no patches were added")
        mean = self._sum / self.count
        variance = np.maximum(self._squares / self.count - mean * mean, 0.0)
        std = np.maximum(np.sqrt(variance), std_floor)
        return _channels_first(mean), _channels_first(std)


def _channels_first(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(values, -1, 0))).to(torch.float32)


def channel_stats(mean: torch.Tensor | np.ndarray, std: torch.Tensor | np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) pooled from per-pixel statistics [3, H, W]: the mean and std of all the pixels
    of each channel over the same sample (law of total variance). Fine-tuning's ``dataset`` normalisation of
    whole crops after a pretraining on patches normalised with these per-pixel statistics."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64)
    if mean.ndim != 3 or mean.shape[0] != 3 or mean.shape != std.shape:
        raise ValueError(f"need per-pixel mean and std [3, H, W], got {list(mean.shape)} and {list(std.shape)}")
    channel_mean = mean.mean(dim=(1, 2))
    second_moment = (std * std + mean * mean).mean(dim=(1, 2))
    channel_std = (second_moment - channel_mean * channel_mean).clamp_min(0).sqrt()
    return channel_mean.tolist(), channel_std.tolist()


def dataset_channel_stats(patches: np.ndarray | torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) in [0, 1] units over channels-last patches (0..255
    scale), in the form ``normalize_patches(mode="dataset")`` expects."""
    pixels = torch.as_tensor(patches).to(torch.float64) / 255.0
    if pixels.ndim < 2 or pixels.shape[-1] != 3 or pixels.numel() == 0:
        raise ValueError(f"need non-empty channels-last patches [..., 3], got {tuple(pixels.shape)}")
    flat = pixels.reshape(-1, 3)
    return flat.mean(dim=0).tolist(), flat.std(dim=0, correction=0).tolist()
