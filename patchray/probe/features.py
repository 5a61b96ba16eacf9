"""Pooled trunk features of whole person crops, for the online probe.

The probe asks "what does the trunk know about attributes now", so the trunk is frozen while it is asked: no
gradients, eval mode (dropout off, BatchNorm on its running statistics), and the caller's mode restored after,
since the probe runs in the middle of a training loop.

Pooling. Fine-tuning flattens the whole map, but a probe fitted on a few hundred crops cannot fit 12x6x128
weights per class; a global pool keeps C numbers per crop. ``"avgmax"`` (the default) concatenates the
average and the maximum of each channel: the average describes the whole person (gender, posture,
orientation), while the small, local cues most PARSE-27k attributes name (a bag in a hand, a phone, a
trolley) fill a few cells of a 12x6 map and are diluted up to 72-fold by averaging alone; the maximum keeps
their strongest response. 2C features stay well below the train crop count and the probe standardises and
L2-penalises them. ``"avg"`` gives the plain C.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from torch import nn

from patchray.patches import channel_stats, normalize_images
from patchray.shards.attributes import NA, AttributeSet

# uint8 crops [B, H, W, 3] already on the device -> float32 network input [B, 3, H, W]: the signature of
# ``normalize_images`` (with its mode and statistics bound) and of fine-tuning's ``CropNormalization``.
Normalize = Callable[[torch.Tensor], torch.Tensor]
Pool = Literal["avg", "avgmax"]
POOLS = ("avg", "avgmax")
EMBED_BATCH = 64
STD_FLOOR = 1e-8  # below it a feature counts as constant over the train crops


def crop_normalizer(record: Mapping) -> Normalize:
    """The crop normalisation matching a pretraining's record ``{"mode"[, "mean", "std"]}``
    (``patchray.train.pretrain.input_normalization``): pretraining's per-pixel patch statistics [3, P, P] cannot
    apply to whole crops, so they are pooled per channel (``channel_stats``), as fine-tuning from that
    checkpoint does; 3 values per channel are taken as they are."""
    mode = record["mode"]
    if mode != "dataset":
        return lambda images: normalize_images(images, mode)
    mean, std = (torch.as_tensor(record[key], dtype=torch.float32) for key in ("mean", "std"))
    if mean.ndim == 3:
        mean, std = channel_stats(mean, std)
    return lambda images: normalize_images(images, "dataset", mean=mean, std=std)


def feature_dim(trunk: nn.Module, pool: Pool = "avgmax") -> int:
    """Length of one crop's feature vector from :func:`embed`."""
    return trunk.out_channels * (2 if pool == "avgmax" else 1)


def embed(trunk: nn.Module, pixels: np.ndarray, normalize: Normalize, device: torch.device | str,
          batch: int = EMBED_BATCH, pool: Pool = "avgmax") -> np.ndarray:
    """float32 features [N, C] (``avg``) or [N, 2C] (``avgmax``: averages then maxima) of uint8 crops
    [N, H, W, 3] under the frozen ``trunk`` (which must already live on ``device``). The trunk's
    training mode is restored afterwards, its weights untouched."""
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; expected one of {POOLS}")
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8 [N, H, W, 3], got {pixels.dtype} {tuple(pixels.shape)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    # Every module's own flag, not just the trunk's: a caller may hold some blocks in eval (frozen BatchNorm),
    # which trunk.train(True) would undo.
    modes = [(module, module.training) for module in trunk.modules()]
    trunk.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, len(pixels), batch):
                # A copy: crops may come read-only from Ray's object store, which torch.from_numpy warns about.
                images = torch.from_numpy(pixels[start:start + batch].copy()).to(device)
                feature_map = trunk(normalize(images)).float()
                pooled = [feature_map.mean(dim=(2, 3))]
                if pool == "avgmax":
                    pooled.append(feature_map.amax(dim=(2, 3)))
                chunks.append(torch.cat(pooled, dim=1).cpu().numpy())
    finally:
        for module, training in modes:
            module.training = training
    if not chunks:
        return np.zeros((0, feature_dim(trunk, pool)), dtype=np.float32)
    return np.concatenate(chunks)


def standardise(train: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    """float64 tensors of ``train`` and ``others`` standardised with ``train``'s per-feature mean and std, so that
    the probe's penalty and the kNN's cosine weigh every channel alike, whatever its scale (the averages and
    maxima of ``avgmax`` differ several-fold). A constant feature (a dead ReLU channel) is only centred."""
    train_tensor = torch.as_tensor(np.asarray(train), dtype=torch.float64)
    if train_tensor.ndim != 2 or len(train_tensor) == 0:
        raise ValueError(f"train features must be a non-empty [N, D] array, got {tuple(train_tensor.shape)}")
    std, mean = torch.std_mean(train_tensor, dim=0, correction=0)
    std = torch.where(std > STD_FLOOR, std, torch.ones_like(std))
    out = []
    for features in (train_tensor, *others):
        tensor = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        if tensor.ndim != 2 or tensor.shape[1] != train_tensor.shape[1]:
            raise ValueError(f"features must be [N, {train_tensor.shape[1]}] like the train features, "
                             f"got {tuple(tensor.shape)}")
        out.append((tensor - mean) / std)
    return out


@contextmanager
def single_threaded() -> Iterator[None]:
    """torch on one CPU thread for the probe fits, restored after. Their operations are tiny (a 500 x 256 by
    256 x 23 product), so a parallel region costs more to start and join than the work it shares, and on a busy
    host each one waits for descheduled threads: a linear probe of 500 crops took 0.2 s of CPU on one thread
    and 11 s (50 s wall) on two, on a 2-core machine under load. One thread also makes the numbers independent
    of the host's thread count (BLAS reductions split by thread count round differently)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_labels(labels: np.ndarray, num_rows: int, attributes: AttributeSet) -> np.ndarray:
    """int64 stored labels [N, A] (0 = N/A, 1..K) matching ``num_rows`` feature rows, checked the way
    ``attribute_metrics`` checks its own, so that a bad label fails at the fit rather than as an index error."""
    labels = np.asarray(labels)
    if labels.shape != (num_rows, len(attributes)):
        raise ValueError(f"labels must be [{num_rows}, {len(attributes)}] (a row per feature row, a column per "
                         f"attribute), got {labels.shape}")
    labels = labels.astype(np.int64, copy=False)
    for column, attribute in enumerate(attributes):
        if labels[:, column].min(initial=NA) < NA or labels[:, column].max(initial=NA) > attribute.num_classes:
            raise ValueError(f"labels of {attribute.name!r} must lie in 0..{attribute.num_classes}")
    return labels
