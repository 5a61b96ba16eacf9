"""One PNG that shows a PatchTask config on real crops: the grid, where each cell's patch may move, and the
patches one epoch actually trains on.

The first thing to look at when tuning ``patch_size``, ``jitter``, ``gap`` or the grid: whether the cells cover
the person, whether the jitter ranges overlap, whether the patches are informative. Everything drawn comes from
the task's own geometry (:class:`patchray.patches.PatchGrid`) and sampler (``task_plan`` and ``cut_patches``,
which ``training_patches`` is made of), so the sheet shows what training sees, not a re-derivation of it.

:func:`task_sheet_data` is the pure part (numbers only, tested against the sampler); :func:`plot_task_sheet`
draws it. Pure numpy + matplotlib: no Ray, no torch tensors.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # jobs run headless, on cluster nodes too
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from patchray.patches import PatchTaskConfig, cut_patches, pair_cells, pair_label  # noqa: E402
from patchray.patches.sampling import DROP_PLANE  # noqa: E402
from patchray.patches.task import task_plan  # noqa: E402

# Styles of the overlay, named once so that the legend and the drawing agree.
CELL_STYLE = {"edgecolor": "yellow", "linewidth": 0.8, "fill": False}
ORIGIN_RANGE_STYLE = {"facecolor": "cyan", "edgecolor": "cyan", "alpha": 0.55, "linewidth": 0.5}
SAMPLED_STYLE = {"edgecolor": "magenta", "linewidth": 0.9, "linestyle": "--", "fill": False}
CHANNEL_NAMES = "RGB"
# A dark outline keeps the overlay's numbers legible on light and busy crops alike.
OUTLINED = [patheffects.withStroke(linewidth=1.5, foreground="black")]
# A sheet with more patches per crop than this shows the first ones (the title says so): a row of 64 patches
# would be unreadable and tells nothing the first 16 do not.
MAX_PATCHES_SHOWN = 16


@dataclass(frozen=True)
class TaskSheetData:
    """What a task sheet shows, as numbers. ``C`` cells, ``N`` crops, ``K`` examples per crop (patches, or pairs
    of patches), ``V`` patches per example (1, or 2 when pairwise); rows of the per-example arrays are crop-major,
    as the sampler's: crop 0's K examples first."""

    task: PatchTaskConfig
    seed: int
    epoch: int
    crops: np.ndarray            # uint8 [N, H, W, 3]
    crop_ids: tuple[str, ...]
    cell_boxes: np.ndarray       # int64 [C, 4] (x0, y0, x1, y1), end exclusive: each cell's un-jittered patch
    origin_ranges: np.ndarray    # int64 [C, 4] (x_min, y_min, x_max, y_max), inclusive: where its top-left may fall
    patches: np.ndarray          # exactly training_patches' output: uint8 [N*K, P, P, 3|4] or [N*K, 2, P, P, 3|4]
    labels: np.ndarray           # int64 [N*K]: the class (cell index, or pair label)
    cells: np.ndarray            # int64 [N*K, V]: the cell each patch of an example was cut from
    top_left: np.ndarray         # int64 [N*K, V, 2] as (x, y): where it was cut in its crop
    gray: np.ndarray             # bool [N*K, V]: turned gray by the task's grayscale control
    dropped_channel: np.ndarray  # int64 [N*K, V]: channel removed by channel_drop (0 R, 1 G, 2 B), -1 for none
    pair_table: np.ndarray | None  # int64 [C, C]: pair label of (first = row, second = column); -1 on the diagonal

    @property
    def num_crops(self) -> int:
        return len(self.crops)

    @property
    def examples_per_crop(self) -> int:
        return self.task.patches_per_crop

    def crop_of(self, example: int) -> int:
        return example // self.examples_per_crop


def check_crops_fit(crops: np.ndarray, crop_ids: Sequence[str], task: PatchTaskConfig) -> None:
    """Refuse crops the task cannot be cut from, saying which setting to change."""
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be uint8 [N, H, W, 3], got {crops.dtype} {tuple(crops.shape)}")
    if len(crops) == 0:
        raise ValueError("a task sheet needs at least one crop")
    if len(crop_ids) != len(crops):
        raise ValueError(f"got {len(crop_ids)} crop ids for {len(crops)} crops")
    height, width = crops.shape[1:3]
    grid = task.grid()
    span_x, span_y = grid.span
    if span_x > width or span_y > height:
        # Only reachable when the crops are smaller than the task's crop size (the task checks its own).
        raise ValueError(f"the task's {grid.cols}x{grid.rows} grid of {grid.patch_size} px patches (gap {grid.gap}) "
                         f"spans {span_x}x{span_y} px and does not fit these {width}x{height} crops; use a "
                         "smaller task.patch_size, gap or grid, or larger crops (input.crop_width/crop_height)")
    if (width, height) != (task.crop_width, task.crop_height):
        raise ValueError(f"crops are {width}x{height} (w x h) but the task is laid out on "
                         f"{task.crop_width}x{task.crop_height} crops; decode them at the task's size")


def task_sheet_data(crops: np.ndarray, crop_ids: Sequence[str], task: PatchTaskConfig, seed: int,
                    epoch: int) -> TaskSheetData:
    """The grid geometry and training epoch ``epoch``'s patches of ``crops`` (uint8 [N, H, W, 3] at the task's
    crop size, ``crop_ids`` their N ids) under ``task`` and ``seed``: the patches equal
    ``training_patches(crops, crop_ids, task, seed, epoch)``."""
    crops = np.asarray(crops)
    crop_ids = tuple(str(c) for c in crop_ids)
    check_crops_fit(crops, crop_ids, task)
    if epoch < 0:
        raise ValueError(f"training epochs start at 0, got {epoch}")
    grid = task.grid()
    origins = grid.cell_origins()
    low, high = grid.jitter_bounds()
    cell_boxes = np.concatenate([origins, origins + grid.patch_size], axis=1)
    origin_ranges = np.concatenate([origins + low, origins + high], axis=1)

    # The training sampler's own two halves: its draws (which also say where each patch lies) and its pixels.
    plan = task_plan(crop_ids, task, seed, epoch)
    patches = cut_patches(crops, plan)
    views = 2 if task.pairwise else 1
    examples = len(plan.labels)
    if task.pairwise:
        cells = np.stack(pair_cells(plan.labels, grid.num_classes), axis=1)
    else:
        cells = plan.labels[:, None]
    gray = np.zeros(examples * views, dtype=bool)
    gray[plan.gray_index] = True
    dropped = np.full(examples * views, -1, dtype=np.int64)
    dropped[plan.drop_index] = plan.drop_channel
    pair_table = None
    if task.pairwise:
        first, second = np.divmod(np.arange(grid.num_classes ** 2), grid.num_classes)
        distinct = first != second
        pair_table = np.full(grid.num_classes ** 2, -1, dtype=np.int64)
        pair_table[distinct] = pair_label(first[distinct], second[distinct], grid.num_classes)
        pair_table = pair_table.reshape(grid.num_classes, grid.num_classes)
    return TaskSheetData(
        task=task, seed=int(seed), epoch=int(epoch), crops=crops, crop_ids=crop_ids, cell_boxes=cell_boxes,
        origin_ranges=origin_ranges, patches=patches, labels=plan.labels, cells=cells,
        top_left=plan.top_left.reshape(examples, views, 2), gray=gray.reshape(examples, views),
        dropped_channel=dropped.reshape(examples, views), pair_table=pair_table)


def display_pixels(patch: np.ndarray) -> np.ndarray:
    """uint8 [P, P, 3] as the net would perceive a patch: a zero-filled channel drop (4th plane naming the
    channel + 1) is zero after normalising, i.e. flat at the channel's mean; shown so rather than as cut."""
    if patch.shape[-1] == 3:
        return patch
    pixels = patch[..., :DROP_PLANE].copy()
    channel = int(patch[0, 0, DROP_PLANE]) - 1
    if channel >= 0:
        pixels[..., channel] = np.uint8(round(float(pixels[..., channel].mean())))
    return pixels


def example_caption(data: TaskSheetData, example: int) -> str:
    """The class of one example, and for a pair which two cells it means; colour controls after it."""
    cells = data.cells[example]
    label = int(data.labels[example])
    text = f"{label}: {cells[0]}\u2192{cells[1]}" if data.task.pairwise else f"cell {label}"
    controls = ["gray" if g else "" for g in data.gray[example]]
    controls = [c + (f"-{CHANNEL_NAMES[d]}" if d >= 0 else "") for c, d in zip(controls, data.dropped_channel[example])]
    if any(controls):
        text += "\n" + " | ".join(c or "-" for c in controls)
    return text


def _example_image(data: TaskSheetData, example: int) -> np.ndarray:
    """One example as an image: its patch, or a pair's two patches side by side with a white gutter."""
    patch = data.patches[example]
    if not data.task.pairwise:
        return display_pixels(patch)
    size = data.task.patch_size
    gutter = np.full((size, max(2, size // 8), 3), 255, dtype=np.uint8)
    return np.concatenate([display_pixels(patch[0]), gutter, display_pixels(patch[1])], axis=1)


def _draw_grid(ax, data: TaskSheetData, crop: int, number_cells: bool) -> None:
    ax.imshow(data.crops[crop], interpolation="nearest")
    font = max(4.0, min(8.0, data.task.patch_size / 5))
    for cell, (x0, y0, x1, y1) in enumerate(data.cell_boxes):
        # Pixel centres are at integer coordinates in imshow, so a box of pixels x0..x1-1 spans x0-0.5..x1-0.5.
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, **CELL_STYLE))
        lx, ly, hx, hy = data.origin_ranges[cell]
        ax.add_patch(Rectangle((lx - 0.5, ly - 0.5), hx - lx + 1, hy - ly + 1, **ORIGIN_RANGE_STYLE))
        if number_cells:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, str(cell), color="yellow", fontsize=font + 1, ha="center",
                    va="center", fontweight="bold", path_effects=OUTLINED)
    size = data.task.patch_size
    first = crop * data.examples_per_crop
    for example in range(first, first + data.examples_per_crop):
        for view, (x, y) in enumerate(data.top_left[example]):
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), size, size, **SAMPLED_STYLE))
            mark = f"{example - first}" + ("ab"[view] if data.task.pairwise else "")
            ax.text(x + 1, y + 1, mark, color="magenta", fontsize=font, ha="left", va="top", path_effects=OUTLINED)
    ax.set_title(data.crop_ids[crop], fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_pair_table(ax, data: TaskSheetData) -> None:
    table = data.pair_table
    cells = len(table)
    # Shaded by first cell: a pair label is first * (C - 1) + rank of second, so each row is one block of labels.
    first_cell = np.broadcast_to(np.arange(cells)[:, None], table.shape)
    ax.imshow(np.where(table >= 0, first_cell, np.nan), cmap="Pastel1" if cells <= 9 else "tab20",
              alpha=1.0 if cells <= 9 else 0.35, interpolation="nearest")
    font = max(3.0, min(8.0, 90.0 / cells))
    for first in range(cells):
        for second in range(cells):
            if first != second:
                ax.text(second, first, str(table[first, second]), fontsize=font, ha="center", va="center")
    ax.set_xlabel("second cell", fontsize=7)
    ax.set_ylabel("first cell", fontsize=7)
    ax.set_title("pair label of (first cell, second cell)", fontsize=8)
    ticks = range(cells)
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=max(4.0, font))
    ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=max(4.0, font))


def _describe(data: TaskSheetData) -> str:
    task, grid = data.task, data.task.grid()
    name = task.preset or "custom grid"
    kind = f"pairwise, {task.num_classes} ordered pairs" if task.pairwise else f"{task.num_classes} classes"
    controls = []
    if task.grayscale:
        controls.append(f"grayscale p={task.grayscale:g}")
    if task.channel_drop:
        controls.append(f"channel drop p={task.channel_drop:g} ({task.channel_drop_fill})")
    return (f"PatchTask {name}: {grid.cols}x{grid.rows} cells ({kind}), patch {grid.patch_size} px, jitter "
            f"\u00b1{grid.jitter} px, gap {grid.gap} px, crop {grid.crop_width}x{grid.crop_height}; "
            f"{task.patches_per_crop} {'pairs' if task.pairwise else 'patches'}/crop"
            + (f"; {', '.join(controls)}" if controls else "") + f"  |  seed {data.seed}, epoch {data.epoch}")


LEGEND = ("yellow box: a cell's patch without jitter (number = its class)\n"
          "cyan: where that patch's top-left corner may fall (jitter, clipped to the crop)\n"
          "magenta dashed: the patches sampled this epoch (number = its place in the crop's row below)")


def draw_task_sheet(data: TaskSheetData, path: str | Path, max_patches_shown: int = MAX_PATCHES_SHOWN) -> Path:
    """Draw ``data`` (see :func:`task_sheet_data`) to a PNG at ``path``: the crops with the grid laid over them,
    the pair table when the task is pairwise, then per crop the examples sampled from it, captioned by class."""
    crops_n, per_crop = data.num_crops, data.examples_per_crop
    pairwise = data.task.pairwise
    shown = min(per_crop, max_patches_shown)
    # A crop's examples wrap onto several rows rather than stretch the sheet sideways.
    per_row = min(shown, 8 if pairwise else 12)
    rows_per_crop = -(-shown // per_row)
    aspect = data.crops.shape[1] / data.crops.shape[2]  # height / width of a crop
    crop_width_in = 1.9
    pair_width_in = max(4.2, 0.3 * data.task.num_cells) if pairwise else 0.0
    example_width_in = 1.5 if pairwise else 0.85
    example_height_in = (example_width_in / 2.1 if pairwise else example_width_in) + 0.45
    top_height = min(5.0, crop_width_in * aspect) + 0.3
    bottom_height = crops_n * rows_per_crop * example_height_in
    width = max(crops_n * crop_width_in + pair_width_in, per_row * example_width_in + 0.8, 7.0)
    fig = plt.figure(figsize=(width, top_height + bottom_height + 0.9), layout="constrained")
    fig.suptitle(_describe(data) + "\n" + LEGEND, fontsize=7.5)
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_height, bottom_height])

    panels = crops_n + (1 if pairwise else 0)
    ratios = [crop_width_in] * crops_n + ([pair_width_in] if pairwise else [])
    crop_axes = top.subplots(1, panels, gridspec_kw={"width_ratios": ratios}, squeeze=False)[0]
    for crop in range(crops_n):
        _draw_grid(crop_axes[crop], data, crop, number_cells=crop == 0)
    if pairwise:
        _draw_pair_table(crop_axes[-1], data)

    caption = ("the examples sampled from each crop, captioned '#place  class'"
               + (" (pair label: first\u2192second cell)" if pairwise else "")
               + (f"; first {shown} of {per_crop} per crop" if shown < per_crop else ""))
    bottom.suptitle(caption, fontsize=7)
    example_axes = bottom.subplots(crops_n * rows_per_crop, per_row, squeeze=False)
    for ax in example_axes.flat:
        ax.set_axis_off()  # the slots past a crop's last example stay blank
    for crop in range(crops_n):
        for slot in range(shown):
            ax = example_axes[crop * rows_per_crop + slot // per_row, slot % per_row]
            example = crop * per_crop + slot
            ax.set_axis_on()
            ax.imshow(_example_image(data, example), interpolation="nearest")
            ax.set_title(f"#{slot}  " + example_caption(data, example), fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            if slot % per_row == 0:
                ax.set_ylabel(data.crop_ids[crop], fontsize=6)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_task_sheet(crops_uint8_nhwc: np.ndarray, crop_ids: Sequence[str], task: PatchTaskConfig, seed: int,
                    epoch: int, path: str | Path, max_patches_shown: int = MAX_PATCHES_SHOWN) -> Path:
    """Draw the task sheet of ``task`` on these crops at (``seed``, training ``epoch``) to ``path`` (PNG); see
    :func:`task_sheet_data` for the arguments. A handful of crops (4 or so) makes a readable sheet."""
    return draw_task_sheet(task_sheet_data(crops_uint8_nhwc, crop_ids, task, seed, epoch), path, max_patches_shown)
