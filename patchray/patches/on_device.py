"""Cutting patches from crops that are already on a torch device (a GPU after nvJPEG decoding).

The random part, a :class:`PatchPlan`, is drawn on the CPU by the same code as the NumPy sampler; only the
pixel work (one gather, the gray and channel-drop controls) runs on the device. Given the same crops, the
patches and labels equal :func:`patchray.patches.training_patches`' bit for bit.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .sampling import _LUMA_WEIGHTS_X256, PatchPlan, check_images
from .task import VALIDATION_EPOCH, PatchTaskConfig, task_plan


def cut_patches_on(images: torch.Tensor, plan: PatchPlan) -> torch.Tensor:
    """Apply ``plan`` to uint8 [N, H, W, 3] crops on any device: uint8 [N*K, P, P, 3] (pairwise
    [N*K, 2, P, P, 3]; 4 planes with a zero-filled channel drop, as ``cut_patches``) on the same device."""
    device, size = images.device, plan.patch_size
    offsets = torch.arange(size, device=device)
    top_left = torch.from_numpy(plan.top_left).to(device)
    rows = top_left[:, 1, None] + offsets  # [M, P]
    cols = top_left[:, 0, None] + offsets
    image_index = torch.from_numpy(plan.image_index).to(device)
    # One gather of every patch's pixels: indices broadcast to [M, P, P], each picking a whole RGB pixel.
    patches = images[image_index[:, None, None], rows[:, :, None], cols[:, None, :]]
    if plan.gray_index.size:
        gray_index = torch.from_numpy(plan.gray_index).to(device)
        colour = patches[gray_index].to(torch.int32)
        red, green, blue = _LUMA_WEIGHTS_X256
        luma = (red * colour[..., 0] + green * colour[..., 1] + blue * colour[..., 2] + 128) >> 8
        patches[gray_index] = luma.to(torch.uint8)[..., None].expand(-1, -1, -1, 3)
    if plan.drop_fill == "zero":
        marks = torch.zeros((*patches.shape[:3], 1), dtype=torch.uint8, device=device)
        marks[torch.from_numpy(plan.drop_index).to(device)] = \
            torch.from_numpy(plan.drop_channel + 1).to(device=device, dtype=torch.uint8)[:, None, None, None]
        patches = torch.cat([patches, marks], dim=-1)
    elif plan.drop_index.size:
        # Channels-first view: the two advanced indices are adjacent, so the selection is [d, P, P].
        planes = patches.permute(0, 3, 1, 2)
        planes[torch.from_numpy(plan.drop_index).to(device), torch.from_numpy(plan.drop_channel).to(device)] = \
            torch.from_numpy(plan.drop_noise).to(device)
    if plan.pairwise:
        patches = patches.reshape(len(plan.labels), 2, size, size, patches.shape[-1])
    return patches


def task_patches_on(images: torch.Tensor, crop_ids: Sequence[str], cfg: PatchTaskConfig, seed: int,
                    epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`patchray.patches.training_patches` (or, at ``VALIDATION_EPOCH``, the validation patches) for
    crops on a device: (patches uint8, labels int64), both on ``images.device``."""
    if epoch < VALIDATION_EPOCH:
        raise ValueError(f"epoch must be >= {VALIDATION_EPOCH}, got {epoch}")
    check_images(images, cfg.grid(), len(crop_ids))
    plan = task_plan(crop_ids, cfg, seed, epoch)
    return cut_patches_on(images, plan), torch.from_numpy(plan.labels).to(images.device)
