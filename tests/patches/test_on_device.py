"""Patches cut on a torch device equal the NumPy sampler's, bit for bit (CPU always; CUDA where there is one)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from patchray.patches import (
    VALIDATION_EPOCH,
    PatchTaskConfig,
    normalize_patches,
    task_patches_on,
    training_patches,
    validation_patches,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TASKS = {
    "pt18": PatchTaskConfig(),
    "pt8-pairs": PatchTaskConfig(preset="pt8", pairwise=True, patches_per_crop=5),
    "colour-controls": PatchTaskConfig(channel_drop=0.6, grayscale=0.3),
    "colour-controls-noise": PatchTaskConfig(channel_drop=0.6, grayscale=0.3, channel_drop_fill="noise"),
    "pairs-and-controls": PatchTaskConfig(preset="pt8", pairwise=True, channel_drop=0.5, grayscale=0.5),
    "pairs-and-noise": PatchTaskConfig(preset="pt8", pairwise=True, channel_drop=0.5, channel_drop_fill="noise"),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_patches_and_labels_as_the_numpy_sampler(random_images, device, name):
    task = TASKS[name]
    images = random_images(13, seed=len(name))
    crop_ids = [f"{name}-{i}" for i in range(13)]
    expected, expected_labels = training_patches(images, crop_ids, task, seed=4, epoch=3)
    patches, labels = task_patches_on(torch.from_numpy(images).to(device), crop_ids, task, seed=4, epoch=3)
    assert patches.device.type == device and labels.device.type == device
    assert patches.dtype == torch.uint8 and labels.dtype == torch.int64
    assert np.array_equal(patches.cpu().numpy(), expected)
    assert np.array_equal(labels.cpu().numpy(), expected_labels)
    if task.channel_drop or task.grayscale:  # the controls were exercised, not skipped
        plain, _ = training_patches(images, crop_ids, PatchTaskConfig(preset=task.preset, pairwise=task.pairwise,
                                    patches_per_crop=task.patches_per_crop), seed=4, epoch=3)
        zero_fill = task.channel_drop and task.channel_drop_fill == "zero"
        assert expected.shape[-1] == (4 if zero_fill else 3)  # zero fill: the channel to zero named in a 4th plane
        assert not np.array_equal(plain, expected[..., :3]) if task.grayscale or not zero_fill \
            else np.array_equal(plain, expected[..., :3]) and expected[..., 3].any()
        # normalised on the device as on the CPU, the dropped channel zeroed after normalising
        for mode in ("patch", "none"):
            on_cpu = normalize_patches(torch.from_numpy(expected), mode)
            assert torch.allclose(normalize_patches(patches, mode).cpu(), on_cpu, atol=1e-5)


def test_validation_epoch_matches_validation_patches(random_images):
    task = PatchTaskConfig()
    images = random_images(4)
    crop_ids = list("abcd")
    expected, expected_labels = validation_patches(images, crop_ids, task, seed=1)
    patches, labels = task_patches_on(torch.from_numpy(images), crop_ids, task, seed=1, epoch=VALIDATION_EPOCH)
    assert np.array_equal(patches.numpy(), expected) and np.array_equal(labels.numpy(), expected_labels)


def test_refuses_wrong_crops_and_epochs(random_images):
    task = PatchTaskConfig()
    with pytest.raises(ValueError, match="grid expects"):
        task_patches_on(torch.from_numpy(random_images(2, width=90)), ["a", "b"], task, 0, 0)
    with pytest.raises(ValueError, match="2 crop ids for 3 images"):
        task_patches_on(torch.from_numpy(random_images(3)), ["a", "b"], task, 0, 0)
    with pytest.raises(ValueError, match="uint8"):
        task_patches_on(torch.zeros((1, 200, 100, 3)), ["a"], task, 0, 0)
    with pytest.raises(ValueError, match="epoch"):
        task_patches_on(torch.from_numpy(random_images(1)), ["a"], task, 0, -2)
