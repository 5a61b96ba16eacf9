"""Cutting labeled patches out of crops, vectorised over the whole batch.

Randomness is a function of (seed, epoch, crop id) alone, so a crop yields the
same patches wherever it lands in a batch, on whichever worker, and a different
set every epoch. Each crop's numbers come from a counter-based hash (SplitMix64)
keyed by its 64-bit seed, so every draw of the batch is one array expression:
no per-crop generator, which had cost more than cutting the pixels. The pixels
of all patches are gathered with a single advanced-indexing call.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from .grid import PatchGrid

# BT.601 luma (0.299 R + 0.587 G + 0.114 B) in 8-bit fixed point: weights sum to 256,
# so uint16 cannot overflow; ~4x faster than float and at most 1 gray level off.
_LUMA_WEIGHTS_X256 = (77, 150, 29)
_HASH_DOMAIN = b"patchray.patches"  # keeps these seeds apart from other blake2b uses
# What a dropped colour channel becomes (see sample_patches).
CHANNEL_DROP_FILLS = ("zero", "noise")
# With channel_drop_fill="zero", patches carry a 4th plane after R, G, B: the channel to zero after
# normalisation plus one, the same in every pixel of a patch (0: none); see normalize_patches.
DROP_PLANE = 3


def crop_seed(seed: int, epoch: int, crop_id: str) -> int:
    """Stable unsigned 64-bit seed for one crop in one epoch (same on every
    machine and Python process, unlike ``hash``)."""
    # The ints are written in decimal and contain no ':', so the key is unambiguous
    # even when crop_id itself contains ':'.
    key = f"{int(seed)}:{int(epoch)}:{crop_id}".encode()
    digest = hashlib.blake2b(key, digest_size=8, person=_HASH_DOMAIN).digest()
    return int.from_bytes(digest, "little")


def pair_label(first: np.ndarray | int, second: np.ndarray | int, num_cells: int) -> np.ndarray:
    """Label of the ordered pair of distinct cells (first, second), in [0, C*(C-1))."""
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    if num_cells < 2:
        raise ValueError(f"pairs need at least 2 cells, got num_cells={num_cells}")
    for name, cells in (("first", first), ("second", second)):
        if np.any((cells < 0) | (cells >= num_cells)):
            raise ValueError(f"{name} cell out of range [0, {num_cells})")
    if np.any(first == second):
        raise ValueError("a pair needs two distinct cells")
    # Within the block of `first`, the second cell skips over `first` itself.
    return first * (num_cells - 1) + second - (second > first)


def pair_cells(label: np.ndarray | int, num_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pair_label`: (first, second) cells of a pair label."""
    label = np.asarray(label, dtype=np.int64)
    if num_cells < 2:
        raise ValueError(f"pairs need at least 2 cells, got num_cells={num_cells}")
    if np.any((label < 0) | (label >= num_cells * (num_cells - 1))):
        raise ValueError(f"pair label out of range [0, {num_cells * (num_cells - 1)})")
    first, rest = np.divmod(label, num_cells - 1)
    return first, rest + (rest >= first)


# Independent streams of one crop's random numbers (see _random_bits).
_LABEL_STREAM, _JITTER_STREAM, _GRAY_STREAM, _DROP_STREAM, _CHANNEL_STREAM, _NOISE_STREAM = range(1, 7)
_GOLDEN = 0x9E3779B97F4A7C15
_GOLDEN_GAMMA = np.uint64(_GOLDEN)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 whose outputs pass BigCrush for counter inputs."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _random_bits(seeds: np.ndarray, stream: int, counters: np.ndarray) -> np.ndarray:
    """uint64 random words: ``seeds`` [N] (or [N, 1]) x ``counters`` broadcast; one key per (crop, stream)."""
    keys = _mix64(seeds + np.uint64(stream * _GOLDEN % 2**64))
    return _mix64(keys + (counters.astype(np.uint64) + np.uint64(1)) * _GOLDEN_GAMMA)


def _uniform(seeds: np.ndarray, stream: int, count: int) -> np.ndarray:
    """float64 [N, count] uniform on [0, 1): 53 random bits each."""
    bits = _random_bits(seeds[:, None], stream, np.arange(count)[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _balanced_labels(seeds: np.ndarray, num_classes: int, count: int) -> np.ndarray:
    """[N, count] labels: per crop a prefix of back-to-back random permutations of all classes,
    so a crop never repeats a class before it has used every class once."""
    permutations = -(-count // num_classes)
    keys = _uniform(seeds, _LABEL_STREAM, permutations * num_classes).reshape(len(seeds), permutations, num_classes)
    return np.argsort(keys, axis=2).reshape(len(seeds), permutations * num_classes)[:, :count]


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class PatchPlan:
    """Where every patch of a batch is cut and what is done to its colours: the random part of sampling,
    drawn once on the CPU and then applied to pixels wherever they are (NumPy here, a torch device in
    ``patchray.patches.on_device``), so both give the same patches.

    Rows are patches in crop-major order (crop 0's K patches, or 2K for pairs, first).
    """

    num_crops: int
    patch_size: int
    pairwise: bool
    labels: np.ndarray        # int64 [N*K]
    image_index: np.ndarray   # int64 [M]: the crop each patch is cut from
    top_left: np.ndarray      # int64 [M, 2] as (x, y)
    gray_index: np.ndarray    # int64 [g]: patches turned gray (first)
    drop_index: np.ndarray    # int64 [d]: patches with one channel dropped (after gray)
    drop_channel: np.ndarray  # int64 [d]
    drop_noise: np.ndarray    # uint8 [d, P, P] with fill "noise" ([0, P, P] with "zero")
    # None when channel_drop is 0; "noise": the channel's pixels replaced; "zero": marked in the DROP_PLANE
    # (every patch then has 4 planes), zeroed after normalisation.
    drop_fill: str | None = None


def plan_patches(
    crop_ids: Sequence[str],
    grid: PatchGrid,
    patches_per_crop: int,
    seed: int,
    epoch: int,
    pairwise: bool = False,
    channel_drop: float = 0.0,
    grayscale: float = 0.0,
    channel_drop_fill: str = "zero",
) -> PatchPlan:
    """The :class:`PatchPlan` of one batch of crops (see :func:`sample_patches` for the arguments)."""
    if channel_drop_fill not in CHANNEL_DROP_FILLS:
        raise ValueError(f"channel_drop_fill must be one of {CHANNEL_DROP_FILLS}, got {channel_drop_fill!r}")
    for crop_id in crop_ids:
        if not isinstance(crop_id, str):
            raise TypeError(f"crop ids must be str, got {type(crop_id).__name__} {crop_id!r}")
    if isinstance(patches_per_crop, bool) or not isinstance(patches_per_crop, (int, np.integer)) \
            or patches_per_crop <= 0:
        raise ValueError(f"patches_per_crop must be a positive int, got {patches_per_crop!r}")
    _check_probability("channel_drop", channel_drop)
    _check_probability("grayscale", grayscale)
    num_cells = grid.num_classes
    if pairwise and num_cells < 2:
        raise ValueError("pairwise sampling needs a grid with at least 2 cells")

    num_crops = len(crop_ids)
    per_crop = int(patches_per_crop)
    views = 2 if pairwise else 1  # patches per example
    num_classes = num_cells * (num_cells - 1) if pairwise else num_cells
    size = grid.patch_size
    origins = grid.cell_origins()
    jitter_low, jitter_high = grid.jitter_bounds()

    seeds = np.array([crop_seed(seed, epoch, crop_id) for crop_id in crop_ids], dtype=np.uint64)
    slots = per_crop * views  # patches cut per crop
    labels = _balanced_labels(seeds, num_classes, per_crop)  # [N, K]
    if pairwise:
        cells = np.stack(pair_cells(labels, num_cells), axis=-1)  # [N, K, 2]
    else:
        cells = labels[..., None]  # [N, K, 1]
    low, high = jitter_low[cells], jitter_high[cells]  # [N, K, views, 2] as (x, y)
    u = _uniform(seeds, _JITTER_STREAM, slots * 2).reshape(low.shape)
    # floor(u * n) is uniform on 0..n-1 up to 2^-53 bias.
    top_left = origins[cells] + low + np.floor(u * (high - low + 1)).astype(np.int64)
    # Only draw what is used: p=0 leaves the cost untouched (geometry never depends on these).
    gray_index = np.flatnonzero(_uniform(seeds, _GRAY_STREAM, slots) < grayscale) if grayscale > 0 \
        else np.zeros(0, dtype=np.int64)
    drop_index = np.flatnonzero(_uniform(seeds, _DROP_STREAM, slots) < channel_drop) if channel_drop > 0 \
        else np.zeros(0, dtype=np.int64)
    crop_of, slot_of = np.divmod(drop_index, slots)
    channel = np.floor(_uniform(seeds[crop_of], _CHANNEL_STREAM, slots)[np.arange(len(drop_index)), slot_of]
                       * 3).astype(np.int64)
    pixels = size * size
    if channel_drop_fill == "noise":
        counters = slot_of[:, None] * pixels + np.arange(pixels)[None, :]
        noise = (_random_bits(seeds[crop_of][:, None], _NOISE_STREAM, counters) >> np.uint64(56)).astype(np.uint8)
    else:  # zeroed after normalisation: no noise to draw
        noise = np.zeros((0, pixels), dtype=np.uint8)
    return PatchPlan(num_crops=num_crops, patch_size=size, pairwise=pairwise, labels=labels.ravel(),
                     image_index=np.repeat(np.arange(num_crops), slots), top_left=top_left.reshape(-1, 2),
                     gray_index=gray_index, drop_index=drop_index, drop_channel=channel,
                     drop_noise=noise.reshape(-1, size, size),
                     drop_fill=channel_drop_fill if channel_drop > 0 else None)


def check_images(images: np.ndarray | torch.Tensor, grid: PatchGrid, num_crop_ids: int) -> None:
    """Refuse anything but uint8 [N, crop_height, crop_width, 3] with one crop id per image."""
    if images.dtype not in (np.uint8, torch.uint8) or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {tuple(images.shape)}")
    if tuple(images.shape[1:3]) != (grid.crop_height, grid.crop_width):
        raise ValueError(
            f"images are {images.shape[2]}x{images.shape[1]} (w x h) but the grid expects "
            f"{grid.crop_width}x{grid.crop_height} crops"
        )
    if num_crop_ids != images.shape[0]:
        raise ValueError(f"got {num_crop_ids} crop ids for {images.shape[0]} images")


def cut_patches(images: np.ndarray, plan: PatchPlan) -> np.ndarray:
    """Apply ``plan`` to uint8 [N, H, W, 3] crops: uint8 [N*K, P, P, 3] (pairwise [N*K, 2, P, P, 3]); with a
    channel drop filled with zeros, 4 planes instead of 3 (the 4th: ``DROP_PLANE``)."""
    size = plan.patch_size
    # One gather for every patch. The window view (no copy) has a whole P x P x 3
    # patch per (image, y, x), so the gather picks M patches with M indices per axis
    # and copies contiguous pixel rows, ~10x faster than indexing every pixel.
    windows = sliding_window_view(images, (size, size, 3), axis=(1, 2, 3))
    patches = windows[plan.image_index, plan.top_left[:, 1], plan.top_left[:, 0], 0]
    if plan.gray_index.size:
        colour = patches[plan.gray_index].astype(np.uint16)
        red, green, blue = _LUMA_WEIGHTS_X256
        luma = (red * colour[..., 0] + green * colour[..., 1] + blue * colour[..., 2] + 128) >> 8
        patches[plan.gray_index] = luma.astype(np.uint8)[..., None]
    if plan.drop_fill == "zero":
        marks = np.zeros((*patches.shape[:3], 1), dtype=np.uint8)
        marks[plan.drop_index] = (plan.drop_channel + 1).astype(np.uint8)[:, None, None, None]
        patches = np.concatenate([patches, marks], axis=-1)
    elif plan.drop_index.size:
        # Advanced indices on axes 0 and 3 around two slices -> selection shape [d, P, P].
        patches[plan.drop_index, :, :, plan.drop_channel] = plan.drop_noise
    if plan.pairwise:
        patches = patches.reshape(len(plan.labels), 2, size, size, patches.shape[-1])
    return patches


def sample_patches(
    images: np.ndarray,
    crop_ids: Sequence[str],
    grid: PatchGrid,
    patches_per_crop: int,
    seed: int,
    epoch: int,
    pairwise: bool = False,
    channel_drop: float = 0.0,
    grayscale: float = 0.0,
    channel_drop_fill: str = "zero",
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``patches_per_crop`` labeled patches (or patch pairs) from every crop.

    images: uint8 [N, crop_height, crop_width, 3]; crop_ids: N stable ids (a crop's
    patches depend only on (seed, epoch, crop id), so give a mirrored copy its own id).
    Returns (patches, labels): patches uint8 [N*K, P, P, 3], or [N*K, 2, P, P, 3]
    when ``pairwise``; labels int64 [N*K] (cell index, or :func:`pair_label` of the
    two distinct cells). Rows are crop-major: crop 0's K patches come first.

    Per patch, with probability ``grayscale`` it is turned gray, then with probability
    ``channel_drop`` one random colour channel is dropped (both are there to take away
    colour shortcuts such as chromatic aberration): with ``channel_drop_fill="zero"``
    (the reference scripts) it is set to 0 after normalisation, so the patches carry a
    4th plane naming it (``DROP_PLANE``: channel + 1, 0 for none; ``normalize_patches``
    reads it), with ``"noise"`` its pixels are replaced by uniform noise here.
    Geometry is drawn before the colour controls, so changing those probabilities
    does not move any patch.
    """
    images = np.asarray(images)
    check_images(images, grid, len(crop_ids))
    plan = plan_patches(crop_ids, grid, patches_per_crop, seed, epoch, pairwise, channel_drop, grayscale,
                        channel_drop_fill)
    return cut_patches(images, plan), plan.labels
