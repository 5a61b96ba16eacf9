from __future__ import annotations

import numpy as np
import pytest
import torch

from patchray.patches import PixelStatistics, channel_stats, dataset_channel_stats, normalize_images, normalize_patches
from patchray.patches.normalize import DATASET_STD_FLOOR
from patchray.patches.sampling import DROP_PLANE


def random_patches(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("mode", ["patch", "none"])
def test_shapes_become_channels_first_float32(mode):
    single = normalize_patches(random_patches(4, 32, 32, 3), mode)
    assert single.shape == (4, 3, 32, 32) and single.dtype == torch.float32 and single.is_contiguous()
    pairs = normalize_patches(random_patches(4, 2, 32, 32, 3), mode)
    assert pairs.shape == (4, 2, 3, 32, 32) and pairs.dtype == torch.float32


@pytest.mark.parametrize("mode", ["patch", "none", "dataset"])
def test_channels_last_output_holds_the_same_values_in_the_nets_layout(mode):
    stats = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]} if mode == "dataset" else {}
    for make, normalize in ((lambda: random_patches(4, 32, 32, 4), normalize_patches),   # with a channel drop
                            (lambda: random_patches(3, 40, 20, 3), normalize_images)):
        inputs = make()
        if inputs.shape[-1] == 4:
            inputs[..., DROP_PLANE] = torch.tensor([0, 1, 2, 3]).view(4, 1, 1)
        plain = normalize(inputs, mode, **stats)
        fast = normalize(inputs, mode, **stats, channels_last=True)
        assert plain.is_contiguous() and fast.is_contiguous(memory_format=torch.channels_last)
        assert not fast.is_contiguous()
        torch.testing.assert_close(fast, plain)
    pairs = random_patches(2, 2, 16, 16, 3)   # pairs are 5-D: no channels-last format, left contiguous
    assert normalize_patches(pairs, "patch", channels_last=True).is_contiguous()


def test_none_scales_to_unit_range_and_keeps_channel_identity():
    patches = random_patches(3, 8, 8, 3)
    out = normalize_patches(patches, "none")
    assert torch.equal(out, patches.permute(0, 3, 1, 2).float() / 255)
    pairs = random_patches(3, 2, 8, 8, 3)
    assert torch.equal(normalize_patches(pairs, "none")[:, 1, 2], pairs[:, 1, :, :, 2].float() / 255)


def test_patch_mode_standardises_each_patch_and_channel():
    out = normalize_patches(random_patches(16, 32, 32, 3), "patch")
    assert torch.allclose(out.mean(dim=(-2, -1)), torch.zeros(16, 3), atol=1e-5)
    assert torch.allclose(out.std(dim=(-2, -1), correction=0), torch.ones(16, 3), atol=2e-3)
    pairs = normalize_patches(random_patches(4, 2, 32, 32, 3), "patch")
    assert torch.allclose(pairs.mean(dim=(-2, -1)), torch.zeros(4, 2, 3), atol=1e-5)
    assert torch.allclose(pairs.std(dim=(-2, -1), correction=0), torch.ones(4, 2, 3), atol=2e-3)


def test_patch_mode_ignores_brightness_and_contrast():
    # Such global cues (lighting varies with height in the crop) should not reach the net.
    patches = random_patches(4, 16, 16, 3).float() * 0.5 + 20
    brighter = patches * 1.5 + 40
    # Without the variance floor the invariance is exact; with it, it holds for contrasty patches.
    exact = dict(mode="patch", eps=1e-12)
    assert torch.allclose(normalize_patches(patches, **exact), normalize_patches(brighter, **exact), atol=1e-4)
    assert torch.allclose(normalize_patches(patches, "patch"), normalize_patches(brighter, "patch"), atol=1e-2)


def test_patch_mode_keeps_flat_patches_finite():
    flat = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    flat[1] = 200
    out = normalize_patches(flat, "patch")
    assert torch.all(out == 0)
    # One gray level of noise must not be amplified to unit variance.
    almost_flat = flat.clone()
    almost_flat[0, ::2] = 1
    assert normalize_patches(almost_flat, "patch")[0].std() < 0.5


def test_uint8_and_float_inputs_agree():
    patches = random_patches(4, 16, 16, 3)
    for mode in ("patch", "none"):
        assert torch.allclose(normalize_patches(patches, mode), normalize_patches(patches.double(), mode), atol=1e-6)


def test_dataset_mode_uses_given_stats():
    patches = random_patches(8, 16, 16, 3)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    out = normalize_patches(patches, "dataset", mean=mean, std=std)
    channels_first = patches.permute(0, 3, 1, 2).float() / 255
    expected = (channels_first - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(out, expected, atol=1e-6)


def test_dataset_stats_round_trip():
    generator = torch.Generator().manual_seed(1)
    # Channels with clearly different statistics.
    scale = torch.tensor([255.0, 100.0, 30.0])
    patches = (torch.rand(64, 16, 16, 3, generator=generator) * scale).to(torch.uint8)
    mean, std = dataset_channel_stats(patches.numpy())
    assert len(mean) == len(std) == 3 and mean[0] > mean[1] > mean[2]
    out = normalize_patches(patches, "dataset", mean=mean, std=std)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(out.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(mode="dataset"), ValueError, "mean and std"),
        (dict(mode="dataset", mean=[0.5] * 3, std=[0.0, 1.0, 1.0]), ValueError, "positive"),
        (dict(mode="dataset", mean=[0.5] * 2, std=[1.0] * 3), ValueError, "3"),
        (dict(mode="patch", mean=[0.5] * 3, std=[1.0] * 3), ValueError, "only used"),
        (dict(mode="zca"), ValueError, "zca"),
    ],
)
def test_invalid_modes_and_stats(kwargs, error, match):
    with pytest.raises(error, match=match):
        normalize_patches(random_patches(2, 8, 8, 3), **kwargs)


def test_invalid_inputs():
    with pytest.raises(TypeError, match="uint8"):
        normalize_patches(torch.zeros(2, 8, 8, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="P, P, 3"):
        normalize_patches(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))  # already channels-first
    with pytest.raises(ValueError, match="2, P, P, 3"):
        normalize_patches(torch.zeros(2, 3, 8, 8, 3, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("mode", ["patch", "dataset", "none"])
def test_runs_on_the_batch_device(mode):
    patches = random_patches(4, 16, 16, 3)
    stats = dict(mean=[0.5] * 3, std=[0.25] * 3) if mode == "dataset" else {}
    on_gpu = normalize_patches(patches.cuda(), mode, **stats)
    assert on_gpu.is_cuda
    assert torch.allclose(on_gpu.cpu(), normalize_patches(patches, mode, **stats), atol=1e-5)


def test_normalize_images_standardises_whole_crops():
    import torch

    from patchray.patches import normalize_images

    images = torch.randint(0, 256, (3, 20, 10, 3), dtype=torch.uint8)
    out = normalize_images(images, "patch")
    assert out.shape == (3, 3, 20, 10)
    assert torch.allclose(out.mean(dim=(-2, -1)), torch.zeros(3, 3), atol=1e-5)
    assert torch.allclose(out.std(dim=(-2, -1), unbiased=False), torch.ones(3, 3), atol=1e-3)
    imagenet = normalize_images(images, "dataset", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    expected = (images[0, 0, 0, 0].float() / 255 - 0.485) / 0.229
    assert torch.isclose(imagenet[0, 0, 0, 0], expected)


def test_dataset_mode_takes_per_pixel_stats_as_the_reference():
    """make_patch_mean.py's default: a mean and std per pixel and channel (3 x P x P), in [0, 1] units."""
    patches = random_patches(6, 8, 8, 3)
    generator = torch.Generator().manual_seed(3)
    mean, std = torch.rand(3, 8, 8, generator=generator), 0.1 + torch.rand(3, 8, 8, generator=generator)
    out = normalize_patches(patches, "dataset", mean=mean, std=std)
    assert torch.allclose(out, (patches.permute(0, 3, 1, 2).float() / 255 - mean) / std, atol=1e-6)
    pairs = normalize_patches(random_patches(2, 2, 8, 8, 3), "dataset", mean=mean, std=std)
    assert pairs.shape == (2, 2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"per pixel \[3, 16, 16\], got shape \[3, 8, 8\]"):
        normalize_patches(random_patches(2, 16, 16, 3), "dataset", mean=mean, std=std)
    with pytest.raises(ValueError, match=r"per pixel \[3, 20, 10\]"):
        normalize_images(torch.zeros(1, 20, 10, 3, dtype=torch.uint8), "dataset", mean=mean, std=std)


def test_pixel_statistics_are_the_per_pixel_mean_and_std_of_the_patches():
    patches = random_patches(300, 8, 8, 3).numpy()
    patches[:, 0, 0, :] = 7  # a pixel that never varies: its std is floored, not 0
    stats = PixelStatistics()
    stats.add(patches[:100])
    stats.add(patches[100:])  # batch by batch, as the driver adds them
    mean, std = stats.mean_std()
    assert stats.count == 300 and mean.dtype == std.dtype == torch.float32 and mean.shape == (3, 8, 8)
    reference = np.moveaxis(patches.astype(np.float64) / 255, -1, 1)  # [N, 3, P, P], as the reference's X
    assert np.allclose(mean.numpy(), reference.mean(axis=0), atol=1e-6)
    assert np.allclose(std.numpy()[:, 1:, 1:], reference.std(axis=0)[:, 1:, 1:], atol=1e-6)
    assert torch.all(std[:, 0, 0] == DATASET_STD_FLOOR)
    normalised = normalize_patches(torch.from_numpy(patches), "dataset", mean=mean, std=std)
    assert torch.allclose(normalised.mean(dim=0)[:, 1:, 1:], torch.zeros(3, 7, 7), atol=1e-4)
    assert torch.allclose(normalised.std(dim=0, correction=0)[:, 1:, 1:], torch.ones(3, 7, 7), atol=1e-4)
    with pytest.raises(ValueError, match="no patches"):
        PixelStatistics().mean_std()


def test_channel_stats_pool_per_pixel_stats_into_those_of_every_pixel_of_the_sample():
    """Fine-tuning's rule for whole crops after a dataset-normalised pretraining."""
    scale = torch.tensor([255.0, 100.0, 30.0])
    patches = (torch.rand(200, 8, 8, 3, generator=torch.Generator().manual_seed(2)) * scale).to(torch.uint8)
    stats = PixelStatistics()
    stats.add(patches.numpy())
    pooled_mean, pooled_std = channel_stats(*stats.mean_std())
    direct_mean, direct_std = dataset_channel_stats(patches.numpy())
    assert np.allclose(pooled_mean, direct_mean, atol=1e-6) and np.allclose(pooled_std, direct_std, atol=1e-6)


@pytest.mark.parametrize("mode", ["patch", "dataset", "none"])
def test_a_marked_channel_is_zeroed_after_normalising(mode):
    """Patches with a 4th plane (channel_drop_fill=zero) get that channel set to exactly 0 after normalising,
    as the reference drops it; the other channels are normalised as without the plane."""
    patches = random_patches(6, 2, 8, 8, 3)  # pairs: each patch of a pair has its own mark
    marks = torch.tensor([[0, 1], [2, 3], [0, 0], [3, 3], [1, 0], [2, 2]], dtype=torch.uint8)
    marked = torch.cat([patches, marks[:, :, None, None, None].expand(-1, -1, 8, 8, 1)], dim=-1)
    stats = dict(mean=torch.full((3, 8, 8), 0.6), std=torch.full((3, 8, 8), 0.2)) if mode == "dataset" else {}
    out = normalize_patches(marked, mode, **stats)
    expected = normalize_patches(patches, mode, **stats)
    for example in range(6):
        for view in range(2):
            channel = int(marks[example, view]) - 1
            for c in range(3):
                got = out[example, view, c]
                if c == channel:
                    assert torch.equal(got, torch.zeros_like(got))
                else:
                    assert torch.equal(got, expected[example, view, c])
    if mode == "dataset":  # zeroing the uint8 pixels instead would have given (0 - mean) / std = -3
        assert not torch.equal(normalize_patches(torch.zeros(1, 8, 8, 3, dtype=torch.uint8), mode, **stats),
                               torch.zeros(1, 3, 8, 8))


def test_statistics_checked_once_normalise_as_the_checked_call_does():
    from patchray.patches import checked_stats

    patches = torch.randint(0, 256, (5, 8, 8, 3), dtype=torch.uint8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    stats = checked_stats(mean, std, torch.device("cpu"))
    assert stats["mean"].dtype == torch.float32 and stats["std"].device.type == "cpu"
    assert torch.equal(normalize_patches(patches, "dataset", **stats, std_checked=True),
                       normalize_patches(patches, "dataset", mean=mean, std=std))
    with pytest.raises(ValueError, match="std must be positive"):
        checked_stats(mean, [0.2, 0.0, 0.3], torch.device("cpu"))
    with pytest.raises(ValueError, match="needs mean and std"):
        checked_stats(None, std, torch.device("cpu"))
