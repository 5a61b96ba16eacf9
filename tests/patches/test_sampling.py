from __future__ import annotations

import numpy as np
import pytest

from patchray.patches import PatchGrid, PatchTaskConfig, crop_seed, pair_cells, pair_label, sample_patches

GRID = PatchGrid()
PT8 = PatchTaskConfig(preset="pt8").grid()


def ids(count: int, prefix: str = "crop") -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def top_left_of(patches: np.ndarray) -> np.ndarray:
    """(x, y) of each patch's top-left pixel, read back from a position image."""
    return patches[..., 0, 0, :2].astype(np.int64)


def assert_patches_come_from_their_cells(patches, cells, crop_index, grid):
    """Each patch is an exact, unwrapped copy of a window inside its cell's jitter range."""
    origins = grid.cell_origins()
    low, high = grid.jitter_bounds()
    top_left = top_left_of(patches)
    offsets = top_left - origins[cells]
    assert np.all(offsets >= low[cells]) and np.all(offsets <= high[cells])
    steps = np.arange(grid.patch_size)
    # R = x grows along columns, G = y along rows: catches wrapped or misplaced windows.
    pixel_grid = patches.shape[:-1]
    expected_x = top_left[:, None, None, 0] + steps[None, None, :]
    expected_y = top_left[:, None, None, 1] + steps[None, :, None]
    assert np.array_equal(patches[..., 0], np.broadcast_to(expected_x, pixel_grid))
    assert np.array_equal(patches[..., 1], np.broadcast_to(expected_y, pixel_grid))
    assert np.array_equal(patches[..., 2], np.broadcast_to(crop_index[:, None, None], pixel_grid))
    return offsets


def test_shapes_and_dtypes(position_images):
    patches, labels = sample_patches(position_images(5), ids(5), GRID, 8, seed=0, epoch=0)
    assert patches.shape == (40, 32, 32, 3) and patches.dtype == np.uint8
    assert labels.shape == (40,) and labels.dtype == np.int64
    pairs, pair_labels = sample_patches(position_images(5), ids(5), GRID, 8, seed=0, epoch=0, pairwise=True)
    assert pairs.shape == (40, 2, 32, 32, 3) and pairs.dtype == np.uint8
    assert pair_labels.shape == (40,) and pair_labels.dtype == np.int64


def test_labels_match_patch_positions(position_images):
    num_crops, per_crop = 50, 8
    patches, labels = sample_patches(position_images(num_crops), ids(num_crops), GRID, per_crop, seed=1, epoch=0)
    crop_index = np.repeat(np.arange(num_crops), per_crop)
    assert_patches_come_from_their_cells(patches, labels, crop_index, GRID)


def test_jitter_window_is_centred_on_cell_origin_and_fully_used(position_images):
    num_crops = 60
    patches, labels = sample_patches(position_images(num_crops), ids(num_crops), GRID, 18, seed=2, epoch=0)
    offsets = top_left_of(patches) - GRID.cell_origins()[labels]
    low, high = GRID.jitter_bounds()
    for cell in range(GRID.num_classes):
        cell_offsets = offsets[labels == cell]
        # Every cell reaches both ends of its (clipped) window, on both axes.
        assert np.array_equal(cell_offsets.min(axis=0), low[cell])
        assert np.array_equal(cell_offsets.max(axis=0), high[cell])
    # The unclipped middle-column cells: window is +-4 around the origin, mean offset ~ 0.
    middle = offsets[labels % 3 == 1]
    assert np.all(np.abs(middle.mean(axis=0)) < 0.5)


def test_large_jitter_is_clipped_inside_the_crop(position_images):
    grid = PatchGrid(jitter=15)  # the most a 32 px pitch allows
    patches, labels = sample_patches(position_images(40), ids(40), grid, 18, seed=3, epoch=0)
    offsets = assert_patches_come_from_their_cells(patches, labels, np.repeat(np.arange(40), 18), grid)
    top_left = top_left_of(patches)
    assert top_left.min() == 0
    assert top_left[:, 0].max() == 100 - 32 and top_left[:, 1].max() == 200 - 32
    assert offsets.min() == -15 and offsets.max() == 15


def test_no_jitter_means_exact_cell_origins(position_images):
    grid = PatchGrid(jitter=0, gap=1)
    patches, labels = sample_patches(position_images(4), ids(4), grid, 8, seed=0, epoch=0)
    assert np.array_equal(top_left_of(patches), grid.cell_origins()[labels])


def test_a_full_grid_per_crop_is_exactly_balanced(position_images):
    num_crops = 30
    _, labels = sample_patches(position_images(num_crops), ids(num_crops), GRID, 18, seed=0, epoch=0)
    per_crop = labels.reshape(num_crops, 18)
    assert np.all(np.sort(per_crop, axis=1) == np.arange(18))


def test_fewer_patches_than_cells_are_distinct_and_balanced_overall(position_images):
    num_crops, per_crop = 900, 8
    _, labels = sample_patches(position_images(num_crops), ids(num_crops), GRID, per_crop, seed=0, epoch=0)
    per_crop_labels = labels.reshape(num_crops, per_crop)
    assert all(len(set(row)) == per_crop for row in per_crop_labels)
    counts = np.bincount(labels, minlength=18)
    expected = num_crops * per_crop / 18  # 400, binomial std ~ 19.4
    assert counts.min() > 0
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    chi_square = np.sum((counts - expected) ** 2 / expected)
    assert chi_square < 45  # 17 dof: p ~ 3e-4


def test_more_patches_than_cells_cycle_through_permutations(position_images):
    _, labels = sample_patches(position_images(20), ids(20), GRID, 40, seed=0, epoch=0)
    for row in labels.reshape(20, 40):
        counts = np.bincount(row, minlength=18)
        # 40 = 2 full permutations + 4: every cell twice, four cells a third time.
        assert counts.min() == 2 and counts.max() == 3 and np.sum(counts == 3) == 4
        assert np.array_equal(np.sort(row[:18]), np.arange(18))


def test_same_seed_same_patches_and_epoch_or_seed_change_them(random_images):
    images, crop_ids = random_images(6), ids(6)
    first = sample_patches(images, crop_ids, GRID, 8, seed=5, epoch=2)
    again = sample_patches(images, crop_ids, GRID, 8, seed=5, epoch=2)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    for other in (dict(seed=5, epoch=3), dict(seed=6, epoch=2)):
        patches, labels = sample_patches(images, crop_ids, GRID, 8, **other)
        assert not np.array_equal(patches, first[0])
        assert not np.array_equal(labels, first[1])


def test_a_crops_patches_do_not_depend_on_the_batch(random_images):
    images, crop_ids = random_images(7), ids(7)
    options = dict(seed=0, epoch=1, channel_drop=0.5, grayscale=0.5)
    patches, labels = sample_patches(images, crop_ids, GRID, 5, **options)
    order = np.array([4, 0, 6, 2, 1, 5, 3])
    shuffled, shuffled_labels = sample_patches(images[order], [crop_ids[i] for i in order], GRID, 5, **options)
    by_crop = patches.reshape(7, 5, 32, 32, 4)  # the 4th plane: the zero-filled channel drop
    assert np.array_equal(shuffled.reshape(7, 5, 32, 32, 4), by_crop[order])
    assert np.array_equal(shuffled_labels.reshape(7, 5), labels.reshape(7, 5)[order])
    alone, alone_labels = sample_patches(images[3:4], crop_ids[3:4], GRID, 5, **options)
    assert np.array_equal(alone, by_crop[3]) and np.array_equal(alone_labels, labels.reshape(7, 5)[3])


def test_crop_seed_is_stable_and_distinguishes_its_inputs():
    # Pinned: a change here silently changes every dataset's patches.
    assert crop_seed(0, 0, "seq1/000001") == 4911959874701090022
    assert crop_seed(7, 3, "a:b") == 6558850512608387176
    seeds = {
        crop_seed(0, 0, "x"), crop_seed(1, 0, "x"), crop_seed(0, 1, "x"), crop_seed(0, 0, "y"), crop_seed(0, -1, "x")
    }
    assert len(seeds) == 5
    assert all(0 <= s < 2**64 for s in seeds)


@pytest.mark.parametrize("num_cells", [2, 8, 18])
def test_pair_label_and_pair_cells_are_inverse_over_all_pairs(num_cells):
    first, second = np.meshgrid(np.arange(num_cells), np.arange(num_cells), indexing="ij")
    distinct = first != second
    first, second = first[distinct], second[distinct]
    labels = pair_label(first, second, num_cells)
    assert np.array_equal(np.sort(labels), np.arange(num_cells * (num_cells - 1)))
    back_first, back_second = pair_cells(labels, num_cells)
    assert np.array_equal(back_first, first) and np.array_equal(back_second, second)
    assert int(pair_label(1, 0, num_cells)) == num_cells - 1  # scalars work too


def test_pair_label_rejects_bad_pairs():
    with pytest.raises(ValueError, match="distinct"):
        pair_label(3, 3, 18)
    with pytest.raises(ValueError, match="range"):
        pair_label(0, 18, 18)
    with pytest.raises(ValueError, match="range"):
        pair_cells(306, 18)


def test_pairwise_patches_come_from_two_distinct_labeled_cells(position_images):
    num_crops, per_crop = 10, 56  # pt8: 8 * 7 = 56 ordered pairs
    pairs, labels = sample_patches(
        position_images(num_crops), ids(num_crops), PT8, per_crop, seed=0, epoch=0, pairwise=True
    )
    first, second = pair_cells(labels, PT8.num_classes)
    assert np.all(first != second)
    crop_index = np.repeat(np.arange(num_crops), per_crop)
    assert_patches_come_from_their_cells(pairs[:, 0], first, crop_index, PT8)
    assert_patches_come_from_their_cells(pairs[:, 1], second, crop_index, PT8)
    assert np.array_equal(np.bincount(labels, minlength=56), np.full(56, num_crops))


def test_channel_drop_replaces_exactly_one_channel_with_noise(random_images):
    images, crop_ids = random_images(20), ids(20)
    clean, labels = sample_patches(images, crop_ids, GRID, 8, seed=0, epoch=0)
    dropped, dropped_labels = sample_patches(images, crop_ids, GRID, 8, seed=0, epoch=0, channel_drop=1.0,
                                             channel_drop_fill="noise")
    assert np.array_equal(labels, dropped_labels)  # the controls never move a patch
    changed = np.any(dropped != clean, axis=(1, 2))  # [M, 3]
    assert np.all(changed.sum(axis=1) == 1)
    channel = changed.argmax(axis=1)
    assert set(np.unique(channel)) == {0, 1, 2}
    noise = dropped[np.arange(len(dropped)), :, :, channel]
    assert abs(noise.mean() - 127.5) < 3 and noise.min() == 0 and noise.max() == 255

    some, _ = sample_patches(images, crop_ids, GRID, 8, seed=0, epoch=0, channel_drop=0.5, channel_drop_fill="noise")
    fraction = np.any(some != clean, axis=(1, 2, 3)).mean()
    assert 0.35 < fraction < 0.65


@pytest.mark.parametrize("pairwise", [False, True])
def test_zero_filled_channel_drop_keeps_the_pixels_and_names_the_channel_for_after_normalising(random_images,
                                                                                               pairwise):
    """The reference zeroes a channel after normalising: the sampler leaves the pixels alone and names, per
    patch, the channel to zero in a 4th plane (channel + 1; 0 for none): the same channel the noise fill picks."""
    images, crop_ids = random_images(20), ids(20)
    options = dict(seed=0, epoch=0, pairwise=pairwise, channel_drop=0.5)
    clean, labels = sample_patches(images, crop_ids, GRID, 8, seed=0, epoch=0, pairwise=pairwise)
    marked, marked_labels = sample_patches(images, crop_ids, GRID, 8, **options)
    noisy, _ = sample_patches(images, crop_ids, GRID, 8, **options, channel_drop_fill="noise")
    assert marked.shape == (*clean.shape[:-1], 4) and np.array_equal(labels, marked_labels)
    assert np.array_equal(marked[..., :3], clean)
    plane = marked[..., 3]
    assert np.all(plane == plane[..., :1, :1])  # one value per patch
    channel = plane[..., 0, 0].astype(int) - 1  # -1: kept whole
    assert set(np.unique(channel)) == {-1, 0, 1, 2} and 0.35 < (channel >= 0).mean() < 0.65
    changed = np.any(noisy != clean, axis=(-3, -2))  # [..., 3]: channels the noise fill replaced
    assert np.array_equal(changed.any(-1), channel >= 0)
    assert np.array_equal(changed.argmax(-1)[channel >= 0], channel[channel >= 0])
    with pytest.raises(ValueError, match="channel_drop_fill"):
        sample_patches(images, crop_ids, GRID, 8, **options, channel_drop_fill="gray")


def test_grayscale_makes_equal_luma_channels(random_images):
    images, crop_ids = random_images(10), ids(10)
    clean, _ = sample_patches(images, crop_ids, GRID, 8, seed=0, epoch=0)
    gray, _ = sample_patches(images, crop_ids, GRID, 8, seed=0, epoch=0, grayscale=1.0)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    luma = clean.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray[..., 0] - luma).max() <= 1.0  # fixed-point rounding
    assert np.abs(gray[..., 0] - luma).mean() < 0.3


def test_zero_probabilities_change_nothing(random_images):
    images, crop_ids = random_images(5), ids(5)
    clean, labels = sample_patches(images, crop_ids, GRID, 8, seed=0, epoch=0)
    same, same_labels = sample_patches(images, crop_ids, GRID, 8, seed=0, epoch=0, channel_drop=0.0, grayscale=0.0)
    assert np.array_equal(clean, same) and np.array_equal(labels, same_labels)
    # Random colour images: no clean patch happens to be gray.
    assert np.all(np.any(clean[..., 0] != clean[..., 1], axis=(1, 2)))


def test_empty_batch(position_images):
    patches, labels = sample_patches(position_images(0), [], GRID, 8, seed=0, epoch=0)
    assert patches.shape == (0, 32, 32, 3) and labels.shape == (0,)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(images=np.zeros((2, 128, 64, 3), np.uint8)), ValueError, "100x200"),
        (dict(images=np.zeros((2, 200, 100, 3), np.float32)), ValueError, "uint8"),
        (dict(crop_ids=["a"]), ValueError, "crop ids"),
        (dict(crop_ids=[1, 2]), TypeError, "str"),
        (dict(patches_per_crop=0), ValueError, "patches_per_crop"),
        (dict(channel_drop=1.5), ValueError, "channel_drop"),
        (dict(grayscale=float("nan")), ValueError, "grayscale"),
        (dict(grid=PatchGrid(cols=1, rows=1), pairwise=True), ValueError, "2 cells"),
    ],
)
def test_invalid_arguments(change, error, match):
    arguments = dict(
        images=np.zeros((2, 200, 100, 3), np.uint8), crop_ids=["a", "b"], grid=GRID, patches_per_crop=4,
        seed=0, epoch=0,
    )
    arguments.update(change)
    with pytest.raises(error, match=match):
        sample_patches(**arguments)
