"""Turning uint8 patches into network input, on whatever device the batch lives on.

Patches travel through the data pipeline as uint8 channels-last (4x smaller than
float32); the training worker calls :func:`normalize_patches` after moving them
to its device. All modes first bring pixels to the [0, 1] scale, so dataset
mean/std are given in [0, 1] units (as :func:`dataset_channel_stats` returns them).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

NORMALIZE_MODES = ("patch", "dataset", "none")
# Variance floor on the [0, 1] scale (~2.5 gray levels of std): standardising a
# near-flat patch (sky, zero padding) would otherwise blow quantisation noise up
# to unit variance.
PATCH_VARIANCE_EPS = 1e-4


def _channel_vector(values: Sequence[float] | torch.Tensor, name: str, like: torch.Tensor) -> torch.Tensor:
    vector = torch.as_tensor(values, dtype=torch.float32, device=like.device).flatten()
    if vector.numel() != 3:
        raise ValueError(f"{name} must have one value per colour channel (3), got {vector.numel()}")
    return vector


def normalize_patches(
    patches: torch.Tensor,
    mode: str = "patch",
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    eps: float = PATCH_VARIANCE_EPS,
) -> torch.Tensor:
    """float32 channels-first network input from channels-last patches.

    patches: uint8 or float with pixel values on the 0..255 scale,
    [B, P, P, 3] -> [B, 3, P, P], or pairwise [B, 2, P, P, 3] -> [B, 2, 3, P, P].
    mode "patch": each patch and channel standardised to zero mean, unit std;
    "dataset": (x/255 - mean) / std with per-channel ``mean``, ``std`` in [0, 1] units;
    "none": x/255.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize mode {mode!r}; expected one of {NORMALIZE_MODES}")
    if mode != "dataset" and (mean is not None or std is not None):
        raise ValueError(f"mean/std are only used by mode 'dataset', not {mode!r}")
    if patches.dtype != torch.uint8 and not patches.dtype.is_floating_point:
        raise TypeError(f"patches must be uint8 or floating point, got {patches.dtype}")
    if patches.ndim not in (4, 5) or patches.shape[-1] != 3 or patches.shape[-2] != patches.shape[-3]:
        raise ValueError(f"patches must be [B, P, P, 3] or [B, 2, P, P, 3], got {tuple(patches.shape)}")
    if patches.ndim == 5 and patches.shape[1] != 2:
        raise ValueError(f"pairwise patches must be [B, 2, P, P, 3], got {tuple(patches.shape)}")

    return _standardise(patches, mode, mean, std, eps)


def normalize_images(
    images: torch.Tensor,
    mode: str = "patch",
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    eps: float = PATCH_VARIANCE_EPS,
) -> torch.Tensor:
    """Whole crops [B, H, W, 3] -> float32 [B, 3, H, W], with the same modes as ``normalize_patches``
    ("patch" standardises each crop), so that a fine-tuned trunk sees the statistics it was pretrained on."""
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize mode {mode!r}; expected one of {NORMALIZE_MODES}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
    return _standardise(images, mode, mean, std, eps)


def _standardise(patches: torch.Tensor, mode: str, mean, std, eps: float) -> torch.Tensor:
    pixels = patches.movedim(-1, -3).to(torch.float32) / 255.0
    if mode == "patch":
        variance, mean_value = torch.var_mean(pixels, dim=(-2, -1), keepdim=True, correction=0)
        pixels = (pixels - mean_value) * torch.rsqrt(variance + eps)
    elif mode == "dataset":
        if mean is None or std is None:
            raise ValueError("normalize mode 'dataset' needs per-channel mean and std")
        mean_vector = _channel_vector(mean, "mean", pixels)
        std_vector = _channel_vector(std, "std", pixels)
        if not bool(torch.all(std_vector > 0)):
            raise ValueError(f"std must be positive, got {std_vector.tolist()}")
        pixels = (pixels - mean_vector[:, None, None]) / std_vector[:, None, None]
    return pixels.contiguous()


def dataset_channel_stats(patches: np.ndarray | torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) in [0, 1] units over channels-last patches (0..255
    scale), in the form ``normalize_patches(mode="dataset")`` expects."""
    pixels = torch.as_tensor(patches).to(torch.float64) / 255.0
    if pixels.ndim < 2 or pixels.shape[-1] != 3 or pixels.numel() == 0:
        raise ValueError(f"need non-empty channels-last patches [..., 3], got {tuple(pixels.shape)}")
    flat = pixels.reshape(-1, 3)
    return flat.mean(dim=0).tolist(), flat.std(dim=0, correction=0).tolist()
