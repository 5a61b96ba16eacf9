"""The PatchTask as one configuration: which grid, how many patches, which controls.

Grid defaults are read from :class:`PatchGrid` so they are written down once.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .grid import DEFAULT_PRESET, PRESETS, PatchGrid
from .normalize import NORMALIZE_MODES
from .sampling import CHANNEL_DROP_FILLS, PatchPlan, check_images, cut_patches, plan_patches

# Epoch reserved for the fixed validation patch set; training epochs are >= 0,
# so validation patches never coincide with any epoch's training draw.
VALIDATION_EPOCH = -1
# Epoch reserved for the patches of task.normalize=dataset's statistics (-2 seeds fine-tuning's label budget).
STATS_EPOCH = -3

_GRID_DEFAULTS = PatchGrid()


@dataclass(frozen=True)
class PatchTaskConfig:
    # Named grid ("pt8", "pt18"), or None to give cols and rows yourself.
    preset: str | None = DEFAULT_PRESET
    cols: int | None = None
    rows: int | None = None
    patch_size: int = _GRID_DEFAULTS.patch_size
    jitter: int = _GRID_DEFAULTS.jitter
    gap: int = _GRID_DEFAULTS.gap
    crop_width: int = _GRID_DEFAULTS.crop_width
    crop_height: int = _GRID_DEFAULTS.crop_height
    # Patches (or pairs) cut from every crop each epoch.
    patches_per_crop: int = 8
    # Classify the ordered pair of two distinct cells instead of a single cell.
    pairwise: bool = False
    # Per-patch probabilities of the colour shortcut controls (see sample_patches).
    channel_drop: float = 0.0
    grayscale: float = 0.0
    # What a dropped channel becomes: "zero", set to 0 after normalisation (the reference scripts), or "noise",
    # uniform noise in its pixels before normalisation (Doersch et al.'s variant).
    channel_drop_fill: str = "zero"
    # How the training worker turns uint8 patches into input (see normalize_patches).
    normalize: str = "patch"

    def __post_init__(self) -> None:
        if self.preset is None:
            if self.cols is None or self.rows is None:
                raise ValueError("PatchTaskConfig: with preset=None, give both cols and rows")
        elif self.preset not in PRESETS:
            raise ValueError(f"PatchTaskConfig.preset {self.preset!r} unknown; known presets: {sorted(PRESETS)}")
        else:
            # Explicit cols/rows next to a preset are fine only if they agree with it,
            # so a config file may spell out the grid without silently changing it.
            for name, preset_value in zip(("cols", "rows"), PRESETS[self.preset]):
                value = getattr(self, name)
                if value is not None and value != preset_value:
                    raise ValueError(
                        f"PatchTaskConfig.{name}={value} contradicts preset {self.preset!r} "
                        f"({name}={preset_value}); set preset=None for a custom grid"
                    )
        grid = self.grid()  # validates the geometry
        if grid.num_classes < 2:
            raise ValueError("PatchTaskConfig: the grid needs at least 2 cells to classify")
        count = self.patches_per_crop
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count <= 0:
            raise ValueError(f"PatchTaskConfig.patches_per_crop must be a positive int, got {count!r}")
        if not isinstance(self.pairwise, (bool, np.bool_)):
            raise ValueError(f"PatchTaskConfig.pairwise must be a bool, got {self.pairwise!r}")
        for name in ("channel_drop", "grayscale"):
            value = getattr(self, name)
            is_number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            if not is_number or not 0.0 <= value <= 1.0:
                raise ValueError(f"PatchTaskConfig.{name} must be a probability in [0, 1], got {value!r}")
        if self.channel_drop_fill not in CHANNEL_DROP_FILLS:
            raise ValueError(f"PatchTaskConfig.channel_drop_fill {self.channel_drop_fill!r} unknown; expected one of "
                             f"{CHANNEL_DROP_FILLS}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(
                f"PatchTaskConfig.normalize {self.normalize!r} unknown; expected one of {NORMALIZE_MODES}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PatchTaskConfig:
        """Config from a mapping (e.g. parsed YAML); unknown keys are an error, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PatchTaskConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def grid(self) -> PatchGrid:
        cols, rows = PRESETS[self.preset] if self.preset is not None else (self.cols, self.rows)
        return PatchGrid(
            crop_width=self.crop_width,
            crop_height=self.crop_height,
            cols=cols,
            rows=rows,
            patch_size=self.patch_size,
            jitter=self.jitter,
            gap=self.gap,
        )

    @property
    def num_cells(self) -> int:
        return self.grid().num_classes

    @property
    def num_classes(self) -> int:
        """Output classes of the pretext head: cells, or ordered pairs of distinct cells."""
        cells = self.num_cells
        return cells * (cells - 1) if self.pairwise else cells


def training_patches(
    images: np.ndarray, crop_ids: Sequence[str], cfg: PatchTaskConfig, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """The patches and labels of one training epoch (epoch >= 0), as set by ``cfg``."""
    if epoch < 0:
        raise ValueError(
            f"training epochs start at 0 (epoch {VALIDATION_EPOCH} is reserved for validation), got {epoch}"
        )
    return _task_patches(images, crop_ids, cfg, seed, epoch)


def validation_patches(
    images: np.ndarray, crop_ids: Sequence[str], cfg: PatchTaskConfig, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The fixed validation set: the training sampler at the reserved epoch, hence
    the same patches every time it is built."""
    return _task_patches(images, crop_ids, cfg, seed, VALIDATION_EPOCH)


def task_plan(crop_ids: Sequence[str], cfg: PatchTaskConfig, seed: int, epoch: int) -> PatchPlan:
    """The random draws of one batch under ``cfg`` (see :func:`patchray.patches.plan_patches`), whether its
    pixels are then cut with NumPy or on a torch device."""
    return plan_patches(crop_ids, cfg.grid(), cfg.patches_per_crop, seed, epoch, pairwise=cfg.pairwise,
                        channel_drop=cfg.channel_drop, grayscale=cfg.grayscale,
                        channel_drop_fill=cfg.channel_drop_fill)


def statistics_patches(images: np.ndarray, crop_ids: Sequence[str], cfg: PatchTaskConfig, seed: int) -> np.ndarray:
    """uint8 [N * cells, P, P, 3]: every cell of the grid once per crop, cut by the task's own sampler (its
    grid, patch size, jitter and gap) at the reserved ``STATS_EPOCH``, for ``normalize=dataset``'s per-pixel
    statistics. Single patches even for a pairwise task (a pair's two patches are each a patch of a uniformly
    drawn cell, as here), and no colour control: the statistics describe the images' patches, as the reference's
    ``make_patch_mean.py`` (no colour drop) does."""
    plain = dataclasses.replace(cfg, pairwise=False, patches_per_crop=cfg.num_cells, channel_drop=0.0,
                                grayscale=0.0)
    patches, _ = _task_patches(np.asarray(images), crop_ids, plain, seed, STATS_EPOCH)
    return patches


def _task_patches(
    images: np.ndarray, crop_ids: Sequence[str], cfg: PatchTaskConfig, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    check_images(images, cfg.grid(), len(crop_ids))
    plan = task_plan(crop_ids, cfg, seed, epoch)
    return cut_patches(images, plan), plan.labels
