"""What a pretrained PatchTask net learned, as pictures: its first-layer filters and, on a few validation crops,
how sure it is of each grid cell for a patch whose cell is known.

Pure numpy + matplotlib (torch only to accept tensors); no Ray. To feed :func:`plot_cell_predictions` from a
run, :func:`one_patch_per_crop` cuts one validation patch per crop with the task's own sampler.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # jobs run headless, on cluster nodes too
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from patchray.patches import VALIDATION_EPOCH, PatchTaskConfig, cut_patches  # noqa: E402
from patchray.patches.task import task_plan  # noqa: E402
from patchray.report.task_sheet import check_crops_fit  # noqa: E402

# ------------------------------------------------------------------------------------------------------------------
# First-layer filters


def _as_numpy(array) -> np.ndarray:
    """A float64 copy of a numpy array or torch tensor (on any device, in any dtype, bf16 included)."""
    if hasattr(array, "detach"):  # torch, without importing it here: a state dict's tensor may live on a GPU
        array = array.detach().float().cpu().numpy()
    return np.asarray(array, dtype=np.float64)


def first_conv_weight(state_dict: Mapping[str, object]):
    """The weight of the first convolution that reads RGB in a model's ``state_dict`` (the first 4-d entry
    ``[O, 3, k, k]`` in registration order, which is the trunk's first conv for every registered trunk): what
    :func:`plot_first_layer_filters` draws, e.g. ``first_conv_weight(net.state_dict())`` or the ``model`` of a
    pretraining checkpoint."""
    for name, value in state_dict.items():
        shape = tuple(getattr(value, "shape", ()))
        if name.endswith("weight") and len(shape) == 4 and shape[1] == 3:
            return value
    raise ValueError("no convolution weight of shape [O, 3, k, k] in this state dict")


def filter_tiles(conv_weight) -> np.ndarray:
    """float64 [O, k, k, 3] in [0, 1]: each of the ``O`` filters of ``conv_weight`` [O, 3, k, k] as an RGB image,
    min-max scaled on its own (a flat filter becomes mid-gray), so that every filter's pattern is visible
    whatever its norm, at the price of hiding how the norms compare."""
    weight = _as_numpy(conv_weight)
    if weight.ndim != 4 or weight.shape[1] != 3 or weight.shape[2] != weight.shape[3] or weight.shape[0] == 0:
        raise ValueError(f"expected first-layer conv weights [O, 3, k, k] (RGB in), got shape {list(weight.shape)}")
    if not np.isfinite(weight).all():
        raise ValueError("the conv weights hold NaN or infinite values: the run diverged")
    tiles = weight.transpose(0, 2, 3, 1)
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    span = tiles.max(axis=(1, 2, 3), keepdims=True) - low
    return np.divide(tiles - low, span, out=np.full_like(tiles, 0.5), where=span > 0)


def plot_first_layer_filters(conv_weight, path: str | Path, title: str = "") -> Path:
    """The filters of a trunk's first convolution (``conv_weight``: torch.Tensor or np.ndarray [O, 3, k, k], see
    :func:`first_conv_weight`) as a grid of ``O`` RGB tiles, each min-max scaled on its own. PNG at ``path``."""
    tiles = filter_tiles(conv_weight)
    count, size = len(tiles), tiles.shape[1]
    cols = int(np.ceil(np.sqrt(count)))
    rows = -(-count // cols)
    side = 0.55 if size <= 5 else 0.8
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.0, cols * side), rows * side + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for index, tile in enumerate(tiles):
        ax = axes.flat[index]
        ax.imshow(tile, interpolation="nearest")
    heading = f"First-layer filters: {count} x 3x{size}x{size}, each min-max scaled on its own"
    fig.suptitle(f"{title}\n{heading}" if title else heading, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


# ------------------------------------------------------------------------------------------------------------------
# Per-cell predictions


@dataclass(frozen=True)
class CropPatches:
    """One patch per crop, cut by the task's sampler: what :func:`plot_cell_predictions` shows."""
    patches: np.ndarray     # uint8 [n, P, P, 3|4]: as the sampler cuts them (a 4th plane with channel_drop zero)
    true_cells: np.ndarray  # int64 [n]: the cell each was cut from
    top_left: np.ndarray    # int64 [n, 2] as (x, y): where in its crop


def one_patch_per_crop(crops: np.ndarray, crop_ids: Sequence[str], task: PatchTaskConfig, seed: int,
                       epoch: int = VALIDATION_EPOCH) -> CropPatches:
    """The first patch of each crop at ``epoch`` (default: the fixed validation epoch, so these are patches of
    ``validation_patches(crops, crop_ids, task, seed)``, every ``task.patches_per_crop``-th one), with its cell
    and place. Only for a single-patch task: a pairwise net's classes are pairs, not cells."""
    if task.pairwise:
        raise ValueError("per-cell predictions need a single-patch task (task.pairwise=false): a pairwise net "
                         "scores ordered pairs of cells, not cells")
    crops = np.asarray(crops)
    check_crops_fit(crops, crop_ids, task)
    plan = task_plan([str(c) for c in crop_ids], task, seed, epoch)
    first = np.arange(len(crops)) * task.patches_per_crop
    return CropPatches(patches=cut_patches(crops, plan)[first], true_cells=plan.labels[first],
                       top_left=plan.top_left[first])


def cell_probability_map(probabilities: np.ndarray, task: PatchTaskConfig) -> np.ndarray:
    """float64 [H, W] over one crop: each pixel of a cell's un-jittered patch box holds that cell's probability,
    pixels outside every box NaN (drawn transparent). ``probabilities``: [num_cells]."""
    grid = task.grid()
    heat = np.full((grid.crop_height, grid.crop_width), np.nan)
    for (x, y), p in zip(grid.cell_origins(), probabilities):
        heat[y:y + grid.patch_size, x:x + grid.patch_size] = p
    return heat


def _check_predictions(crops: np.ndarray, task: PatchTaskConfig, probabilities: np.ndarray, true_cells: np.ndarray,
                       patch_origins: np.ndarray | None) -> None:
    if task.pairwise:
        raise ValueError("per-cell predictions need a single-patch task (task.pairwise=false): a pairwise net "
                         "scores ordered pairs of cells, not cells")
    check_crops_fit(crops, [""] * len(crops), task)
    count, cells = len(crops), task.num_cells
    if probabilities.shape != (count, cells):
        raise ValueError(f"probabilities must be [n_crops, num_cells] = [{count}, {cells}], "
                         f"got {list(probabilities.shape)}")
    if not np.isfinite(probabilities).all() or probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError("probabilities must be in [0, 1] (softmax outputs, not logits)")
    if true_cells.shape != (count,) or true_cells.min() < 0 or true_cells.max() >= cells:
        raise ValueError(f"true_cells must be [n_crops] = [{count}] cell indices in [0, {cells}), "
                         f"got {true_cells.tolist()}")
    if patch_origins is not None and patch_origins.shape != (count, 2):
        raise ValueError(f"patch_origins must be [n_crops, 2] (x, y), got {list(patch_origins.shape)}")


def plot_cell_predictions(crops: np.ndarray, task: PatchTaskConfig, probabilities_per_crop, path: str | Path, *,
                          true_cells, patch_origins=None, title: str = "") -> Path:
    """A few crops, each with the net's probability of every grid cell for one patch cut from it, as a heat overlay
    on the cell boxes; the true cell outlined in green, the predicted (most probable) cell in red dashes, the patch
    where it was cut in white dots and shown above the crop. PNG at ``path``.

    crops: uint8 [n, H, W, 3] at the task's crop size (``task.crop_width x crop_height``), a handful (n <= ~8).
    task: the single-patch (``pairwise=False``) PatchTaskConfig the net was trained on.
    probabilities_per_crop: float [n, task.num_cells] (np.ndarray or torch.Tensor): row i is the softmax of the
        net's logits for crop i's patch, column c the probability that it came from cell c (row-major cell index,
        the pretext label).
    true_cells: int [n]: the cell each crop's patch was cut from (its pretext label).
    patch_origins: optional int [n, 2] as (x, y): the patch's top-left in its crop, to show the patch itself.

    :func:`one_patch_per_crop` gives ``true_cells``, ``patch_origins`` (its ``top_left``) and the patches to run
    through the net for one validation patch per crop.
    """
    crops = np.asarray(crops)
    probabilities = _as_numpy(probabilities_per_crop)
    true_cells = np.asarray(_as_numpy(true_cells), dtype=np.int64)
    origins = None if patch_origins is None else np.asarray(_as_numpy(patch_origins), dtype=np.int64)
    _check_predictions(crops, task, probabilities, true_cells, origins)
    grid = task.grid()
    size, count = grid.patch_size, len(crops)
    aspect = grid.crop_height / grid.crop_width
    fig, axes = plt.subplots(2, count, figsize=(max(4.0, 1.9 * count + 0.9), 1.9 * aspect + 1.9), squeeze=False,
                             gridspec_kw={"height_ratios": [0.45, aspect]}, layout="constrained")
    image = None
    cell_origins = grid.cell_origins()
    for i in range(count):
        patch_ax, ax = axes[0, i], axes[1, i]
        patch_ax.set_axis_off()
        if origins is not None:
            x, y = origins[i]
            patch_ax.imshow(crops[i, y:y + size, x:x + size], interpolation="nearest")
            patch_ax.set_title("patch", fontsize=7)
        ax.imshow(crops[i], interpolation="nearest")
        image = ax.imshow(cell_probability_map(probabilities[i], task), cmap="inferno", vmin=0.0, vmax=1.0,
                          alpha=0.6, interpolation="nearest")
        predicted = int(np.argmax(probabilities[i]))
        for cell, style in ((int(true_cells[i]), {"edgecolor": "lime", "linewidth": 2.0}),
                            (predicted, {"edgecolor": "red", "linewidth": 1.4, "linestyle": "--"})):
            cx, cy = cell_origins[cell]
            ax.add_patch(Rectangle((cx - 0.5, cy - 0.5), size, size, fill=False, **style))
        if origins is not None:
            ax.add_patch(Rectangle((origins[i, 0] - 0.5, origins[i, 1] - 0.5), size, size, fill=False,
                                   edgecolor="white", linewidth=1.0, linestyle=":"))
        ax.set_title(f"true {true_cells[i]}: p={probabilities[i, true_cells[i]]:.2f}\n"
                     f"pred {predicted}: p={probabilities[i, predicted]:.2f}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[1, :].tolist(), fraction=0.05, label="P(cell | patch)")
    heading = ("Per-cell probabilities of one patch per crop (green: true cell, red dashed: predicted, "
               "white dotted: the patch)")
    fig.suptitle(f"{title}\n{heading}" if title else heading, fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
