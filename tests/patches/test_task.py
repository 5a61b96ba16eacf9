from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from patchray.patches import (
    STATS_EPOCH,
    VALIDATION_EPOCH,
    PatchGrid,
    PatchTaskConfig,
    sample_patches,
    statistics_patches,
    training_patches,
    validation_patches,
)


def test_defaults_are_the_reference_pt18_task():
    cfg = PatchTaskConfig()
    assert cfg.grid() == PatchGrid()
    assert (cfg.preset, cfg.num_classes, cfg.patches_per_crop, cfg.normalize) == ("pt18", 18, 8, "patch")
    assert (cfg.patch_size, cfg.jitter, cfg.gap, cfg.crop_width, cfg.crop_height) == (32, 4, 0, 100, 200)
    assert not cfg.pairwise and cfg.channel_drop == 0 and cfg.grayscale == 0
    assert cfg.channel_drop_fill == "zero"  # the reference zeroes the dropped channel after normalising


@pytest.mark.parametrize(
    ("kwargs", "cells", "classes"),
    [
        (dict(), 18, 18),
        (dict(pairwise=True), 18, 306),
        (dict(preset="pt8"), 8, 8),
        (dict(preset="pt8", pairwise=True), 8, 56),
        (dict(preset=None, cols=2, rows=3), 6, 6),
        (dict(preset="pt18", cols=3, rows=6), 18, 18),  # spelled out, consistent
    ],
)
def test_class_counts(kwargs, cells, classes):
    cfg = PatchTaskConfig(**kwargs)
    assert cfg.num_cells == cells and cfg.num_classes == classes


def test_grid_follows_the_knobs():
    grid = PatchTaskConfig(preset="pt8", patch_size=24, jitter=2, gap=4, crop_width=64, crop_height=128).grid()
    assert grid == PatchGrid(crop_width=64, crop_height=128, cols=2, rows=4, patch_size=24, jitter=2, gap=4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(preset="pt99"), "pt18"),
        (dict(preset=None), "cols and rows"),
        (dict(preset=None, cols=3), "cols and rows"),
        (dict(preset="pt18", cols=4), "contradicts"),
        (dict(preset=None, cols=1, rows=1), "2 cells"),
        (dict(patch_size=40), "crop_width"),
        (dict(jitter=-1), "jitter"),
        (dict(patches_per_crop=0), "patches_per_crop"),
        (dict(patches_per_crop=2.5), "patches_per_crop"),
        (dict(pairwise="yes"), "pairwise"),
        (dict(channel_drop=1.5), "channel_drop"),
        (dict(grayscale=-0.1), "grayscale"),
        (dict(normalize="zca"), "normalize"),
        (dict(channel_drop_fill="gray"), "channel_drop_fill"),
        # 16 px cells 16 px apart: jitter 8 would let two cells cut the same patch (configs/tune.yaml allowed it)
        (dict(preset="pt8", patch_size=16, jitter=8), "jitter=8 px .*at most 7 px"),
        (dict(jitter=16), "jitter=16 px .*at most 15 px"),
    ],
)
def test_invalid_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PatchTaskConfig(**kwargs)


def test_dict_round_trip_and_unknown_keys():
    cfg = PatchTaskConfig(preset="pt8", pairwise=True, channel_drop=0.5)
    assert PatchTaskConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="patch_szie"):
        PatchTaskConfig.from_dict({"patch_szie": 24})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.jitter = 0  # type: ignore[misc]


def _images(count: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, 200, 100, 3), dtype=np.uint8), [f"c{i}" for i in range(count)]


def test_validation_set_is_fixed_and_apart_from_training():
    images, crop_ids = _images(6)
    cfg = PatchTaskConfig()
    patches, labels = validation_patches(images, crop_ids, cfg, seed=3)
    again, again_labels = validation_patches(images, crop_ids, cfg, seed=3)
    assert np.array_equal(patches, again) and np.array_equal(labels, again_labels)
    reference = sample_patches(images, crop_ids, cfg.grid(), 8, seed=3, epoch=VALIDATION_EPOCH)
    assert np.array_equal(patches, reference[0]) and np.array_equal(labels, reference[1])
    for epoch in (0, 1):
        train, _ = training_patches(images, crop_ids, cfg, seed=3, epoch=epoch)
        assert not np.array_equal(train, patches)
    with pytest.raises(ValueError, match="reserved"):
        training_patches(images, crop_ids, cfg, seed=3, epoch=VALIDATION_EPOCH)


def test_config_knobs_reach_the_sampler():
    images, crop_ids = _images(3)
    cfg = PatchTaskConfig(preset="pt8", pairwise=True, patches_per_crop=5, grayscale=1.0)
    patches, labels = training_patches(images, crop_ids, cfg, seed=0, epoch=0)
    assert patches.shape == (15, 2, 32, 32, 3)
    assert labels.max() < cfg.num_classes
    assert np.array_equal(patches[..., 0], patches[..., 1])


@pytest.mark.parametrize("kwargs", [dict(), dict(preset="pt8", pairwise=True, channel_drop=1.0, grayscale=1.0,
                                                 patches_per_crop=3)])
def test_statistics_patches_cover_every_cell_once_per_crop_with_the_tasks_geometry_and_no_colour_control(kwargs):
    images, crop_ids = _images(5)
    cfg = PatchTaskConfig(**kwargs)
    patches = statistics_patches(images, crop_ids, cfg, seed=3)
    cells = cfg.num_cells
    assert patches.shape == (5 * cells, 32, 32, 3)  # single patches, 3 planes: no colour drop or gray
    plain = dataclasses.replace(cfg, pairwise=False, channel_drop=0.0, grayscale=0.0)
    expected, labels = sample_patches(images, crop_ids, plain.grid(), cells, seed=3, epoch=STATS_EPOCH)
    assert np.array_equal(patches, expected)
    assert np.array_equal(np.sort(labels.reshape(5, cells), axis=1), np.tile(np.arange(cells), (5, 1)))
    assert STATS_EPOCH not in (VALIDATION_EPOCH, -2) and STATS_EPOCH < 0  # apart from validation and label budgets
    assert np.array_equal(statistics_patches(images, crop_ids, cfg, seed=3), patches)
