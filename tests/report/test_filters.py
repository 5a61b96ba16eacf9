"""First-layer filter grids and per-cell prediction maps draw what they are given, one tile or cell at a time."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from PIL import Image

from patchray.patches import PatchTaskConfig, validation_patches
from patchray.report import filters
from patchray.report.filters import (
    cell_probability_map,
    filter_tiles,
    first_conv_weight,
    one_patch_per_crop,
    plot_cell_predictions,
    plot_first_layer_filters,
)


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots close, kept open for inspection (they are still saved first)."""
    kept = []
    close = plt.close
    monkeypatch.setattr(filters.plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def _images(fig):
    return [artist for ax in fig.axes for artist in ax.get_children() if isinstance(artist, AxesImage)]


def test_tiles_are_each_filter_min_max_scaled_on_its_own():
    weight = np.random.default_rng(0).normal(size=(5, 3, 3, 3))
    weight[3] = 0.7  # a flat filter: nothing to scale
    tiles = filter_tiles(weight)
    assert tiles.shape == (5, 3, 3, 3)
    expected = weight[0].transpose(1, 2, 0)
    np.testing.assert_allclose(tiles[0], (expected - expected.min()) / np.ptp(expected))
    for i in (0, 1, 2, 4):
        assert tiles[i].min() == 0.0 and tiles[i].max() == pytest.approx(1.0)
    np.testing.assert_array_equal(tiles[3], 0.5)
    louder = weight.copy()
    louder[1] *= 100.0  # one filter's norm says nothing about another's tile, nor its own
    np.testing.assert_allclose(filter_tiles(louder), tiles)


def test_tiles_take_torch_weights_in_any_dtype_and_refuse_other_shapes():
    weight = torch.randn(4, 3, 5, 5, dtype=torch.bfloat16)
    np.testing.assert_allclose(filter_tiles(weight), filter_tiles(weight.float().numpy()))
    for bad in (np.zeros((4, 1, 3, 3)), np.zeros((4, 3, 3, 5)), np.zeros((3, 3, 3))):
        with pytest.raises(ValueError, match=r"\[O, 3, k, k\]"):
            filter_tiles(bad)
    with pytest.raises(ValueError, match="diverged"):
        filter_tiles(np.full((2, 3, 3, 3), np.nan))


def test_first_conv_weight_is_the_trunks_first_conv():
    from patchray.models.heads import build_pretext_net

    net = build_pretext_net("tiny_d25", PatchTaskConfig())
    weight = first_conv_weight(net.state_dict())
    assert weight.data_ptr() == net.trunk.stages[0][0].weight.data_ptr()
    with pytest.raises(ValueError, match="no convolution weight"):
        first_conv_weight({"head.weight": torch.zeros(3, 4)})


def test_filter_grid_has_one_tile_per_filter_and_says_how_it_scales(figures, tmp_path):
    weight = torch.randn(13, 3, 3, 3)
    path = plot_first_layer_filters(weight, tmp_path / "filters.png", title="run x")
    assert Image.open(path).format == "PNG"
    fig = figures[0]
    images = _images(fig)
    assert len(images) == 13
    tiles = filter_tiles(weight)
    for image, tile in zip(images, tiles):  # in filter order
        np.testing.assert_allclose(image.get_array(), tile)
    assert "each min-max scaled on its own" in fig._suptitle.get_text()
    assert "run x" in fig._suptitle.get_text()


def test_one_patch_per_crop_is_the_validation_sets_first_patch_of_each_crop():
    task = PatchTaskConfig(preset="pt8", patches_per_crop=3)
    crops = np.random.default_rng(1).integers(0, 256, (4, 200, 100, 3), dtype=np.uint8)
    ids = [f"v{i}" for i in range(4)]
    picked = one_patch_per_crop(crops, ids, task, seed=5)
    patches, labels = validation_patches(crops, ids, task, 5)
    np.testing.assert_array_equal(picked.patches, patches[::3])
    np.testing.assert_array_equal(picked.true_cells, labels[::3])
    for crop, (x, y), patch in zip(crops, picked.top_left, picked.patches):
        np.testing.assert_array_equal(crop[y:y + 32, x:x + 32], patch)
    with pytest.raises(ValueError, match="single-patch task"):
        one_patch_per_crop(crops, ids, PatchTaskConfig(pairwise=True), seed=5)


def test_probability_map_fills_each_cells_box_with_its_probability():
    task = PatchTaskConfig(preset=None, cols=2, rows=2, patch_size=30, jitter=2, gap=10, crop_width=100,
                           crop_height=100)
    heat = cell_probability_map(np.array([0.1, 0.2, 0.3, 0.4]), task)
    assert heat.shape == (100, 100)
    for cell, (x, y) in enumerate(task.grid().cell_origins()):
        np.testing.assert_array_equal(heat[y:y + 30, x:x + 30], [0.1, 0.2, 0.3, 0.4][cell])
    assert np.isnan(heat[:, :task.grid().cell_origins()[0, 0]]).all()   # left margin
    assert np.isnan(heat[50, 45:55]).all()                               # the gap between columns
    assert np.isfinite(heat).sum() == 4 * 30 * 30


def _probabilities(count, cells, seed=0):
    logits = np.random.default_rng(seed).normal(size=(count, cells)) * 3
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_cell_predictions_outline_the_true_and_predicted_cells(figures, tmp_path):
    task = PatchTaskConfig(preset="pt8")
    crops = np.random.default_rng(2).integers(0, 256, (3, 200, 100, 3), dtype=np.uint8)
    picked = one_patch_per_crop(crops, ["a", "b", "c"], task, seed=0)
    probabilities = _probabilities(3, task.num_cells)
    path = plot_cell_predictions(crops, task, torch.from_numpy(probabilities), tmp_path / "cells.png",
                                 true_cells=picked.true_cells, patch_origins=picked.top_left)
    assert Image.open(path).format == "PNG"
    fig = figures[0]
    origins = task.grid().cell_origins()
    crop_axes = [ax for ax in fig.axes if ax.get_title().startswith("true")]
    assert len(crop_axes) == 3
    for ax, true_cell, p in zip(crop_axes, picked.true_cells, probabilities):
        boxes = {(tuple(np.round(r.get_edgecolor(), 3)), r.get_xy()) for r in ax.patches if isinstance(r, Rectangle)}
        lime, red = (0.0, 1.0, 0.0, 1.0), (1.0, 0.0, 0.0, 1.0)
        assert (lime, tuple(origins[true_cell] - 0.5)) in boxes
        assert (red, tuple(origins[int(np.argmax(p))] - 0.5)) in boxes
        heat = [im for im in ax.get_images() if im.get_array().ndim == 2][0].get_array()
        x, y = origins[true_cell]
        assert heat[y + 5, x + 5] == pytest.approx(p[true_cell])
        assert f"p={p[true_cell]:.2f}" in ax.get_title()


def test_cell_predictions_refuse_inputs_they_cannot_show(tmp_path):
    task = PatchTaskConfig(preset="pt8")
    crops = np.zeros((2, 200, 100, 3), dtype=np.uint8)
    good = _probabilities(2, 8)
    cases = [
        (dict(probabilities_per_crop=good[:, :7], true_cells=[0, 1]), r"\[n_crops, num_cells\] = \[2, 8\]"),
        (dict(probabilities_per_crop=np.log(good), true_cells=[0, 1]), "softmax outputs, not logits"),
        (dict(probabilities_per_crop=good, true_cells=[0, 8]), r"cell indices in \[0, 8\)"),
        (dict(probabilities_per_crop=good, true_cells=[0, 1], patch_origins=[[0, 0]]), r"\[n_crops, 2\]"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            plot_cell_predictions(crops, task, path=tmp_path / "x.png", **kwargs)
    with pytest.raises(ValueError, match="single-patch task"):
        plot_cell_predictions(crops, PatchTaskConfig(preset="pt8", pairwise=True), good, tmp_path / "x.png",
                              true_cells=[0, 1])
    with pytest.raises(ValueError, match="decode them at the task's size"):
        plot_cell_predictions(np.zeros((2, 210, 100, 3), dtype=np.uint8), task, good, tmp_path / "x.png",
                              true_cells=[0, 1])
    assert not (tmp_path / "x.png").exists()
