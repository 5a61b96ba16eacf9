"""Cutting labeled patches out of crops, vectorised over the whole batch.

Randomness is drawn per crop from a generator seeded by (seed, epoch, crop id),
so a crop yields the same patches wherever it lands in a batch, on whichever
worker, and a different set every epoch. The per-crop loop only draws numbers;
the pixels of all patches are gathered with a single advanced-indexing call.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .grid import PatchGrid

# BT.601 luma (0.299 R + 0.587 G + 0.114 B) in 8-bit fixed point: weights sum to 256,
# so uint16 cannot overflow; ~4x faster than float and at most 1 gray level off.
_LUMA_WEIGHTS_X256 = (77, 150, 29)
_HASH_DOMAIN = b"patchray.patches"  # keeps these seeds apart from other blake2b uses


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


def _balanced_labels(rng: np.random.Generator, num_classes: int, count: int) -> np.ndarray:
    """``count`` labels: a prefix of back-to-back random permutations of all classes,
    so a crop never repeats a class before it has used every class once."""
    permutations = -(-count // num_classes)
    order = np.argsort(rng.random((permutations, num_classes)), axis=1)
    return order.ravel()[:count]


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


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
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``patches_per_crop`` labeled patches (or patch pairs) from every crop.

    images: uint8 [N, crop_height, crop_width, 3]; crop_ids: N stable ids (a crop's
    patches depend only on (seed, epoch, crop id), so give a mirrored copy its own id).
    Returns (patches, labels): patches uint8 [N*K, P, P, 3], or [N*K, 2, P, P, 3]
    when ``pairwise``; labels int64 [N*K] (cell index, or :func:`pair_label` of the
    two distinct cells). Rows are crop-major: crop 0's K patches come first.

    Per patch, with probability ``grayscale`` it is turned gray, then with probability
    ``channel_drop`` one random colour channel is replaced by uniform noise (both
    are there to take away colour shortcuts such as chromatic aberration).
    Geometry is drawn before the colour controls, so changing those probabilities
    does not move any patch.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if images.shape[1:3] != (grid.crop_height, grid.crop_width):
        raise ValueError(
            f"images are {images.shape[2]}x{images.shape[1]} (w x h) but the grid expects "
            f"{grid.crop_width}x{grid.crop_height} crops"
        )
    num_crops = images.shape[0]
    if len(crop_ids) != num_crops:
        raise ValueError(f"got {len(crop_ids)} crop ids for {num_crops} images")
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

    per_crop = int(patches_per_crop)
    views = 2 if pairwise else 1  # patches per example
    num_classes = num_cells * (num_cells - 1) if pairwise else num_cells
    size = grid.patch_size
    origins = grid.cell_origins()
    jitter_low, jitter_high = grid.jitter_bounds()

    labels = np.empty((num_crops, per_crop), dtype=np.int64)
    top_left = np.empty((num_crops, per_crop, views, 2), dtype=np.int64)
    make_gray = np.zeros((num_crops, per_crop * views), dtype=bool)
    drop_mask = np.zeros((num_crops, per_crop * views), dtype=bool)
    drop_channel = np.zeros((num_crops, per_crop * views), dtype=np.int64)
    drop_noise: list[np.ndarray] = []

    for crop, crop_id in enumerate(crop_ids):
        rng = np.random.default_rng(crop_seed(seed, epoch, crop_id))
        crop_labels = _balanced_labels(rng, num_classes, per_crop)
        if pairwise:
            cells = np.stack(pair_cells(crop_labels, num_cells), axis=1)
        else:
            cells = crop_labels[:, None]
        offsets = rng.integers(jitter_low[cells], jitter_high[cells], endpoint=True)
        labels[crop] = crop_labels
        top_left[crop] = origins[cells] + offsets
        # Only draw what is used: p=0 leaves the stream (and the cost) untouched.
        if grayscale > 0:
            make_gray[crop] = rng.random(per_crop * views) < grayscale
        if channel_drop > 0:
            drop_mask[crop] = rng.random(per_crop * views) < channel_drop
            drop_channel[crop] = rng.integers(0, 3, per_crop * views)
            drop_noise.append(rng.integers(0, 256, (int(drop_mask[crop].sum()), size, size), dtype=np.uint8))

    # One gather for every patch. The window view (no copy) has a whole P x P x 3
    # patch per (image, y, x), so the gather picks M patches with M indices per axis
    # and copies contiguous pixel rows, ~10x faster than indexing every pixel.
    windows = sliding_window_view(images, (size, size, 3), axis=(1, 2, 3))
    flat_top_left = top_left.reshape(-1, 2)
    image_index = np.repeat(np.arange(num_crops), per_crop * views)
    patches = windows[image_index, flat_top_left[:, 1], flat_top_left[:, 0], 0]

    gray_index = np.flatnonzero(make_gray)
    if gray_index.size:
        colour = patches[gray_index].astype(np.uint16)
        red, green, blue = _LUMA_WEIGHTS_X256
        luma = (red * colour[..., 0] + green * colour[..., 1] + blue * colour[..., 2] + 128) >> 8
        patches[gray_index] = luma.astype(np.uint8)[..., None]
    drop_index = np.flatnonzero(drop_mask)
    if drop_index.size:
        # Advanced indices on axes 0 and 3 around two slices -> selection shape [m, P, P].
        patches[drop_index, :, :, drop_channel.ravel()[drop_index]] = np.concatenate(drop_noise)

    if pairwise:
        patches = patches.reshape(num_crops * per_crop, 2, size, size, 3)
    return patches, labels.ravel()
