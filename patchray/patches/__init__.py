"""PatchTask patches: grid geometry, seeded vectorised sampling, normalisation.

Pure numpy/torch, no Ray, so it runs the same in a data-pipeline worker, a
training worker or a unit test.
"""
from .grid import DEFAULT_PRESET, PRESETS, PatchGrid
from .normalize import (
                        NORMALIZE_MODES,
                        PATCH_VARIANCE_EPS,
                        PixelStatistics,
                        channel_stats,
                        checked_stats,
                        dataset_channel_stats,
                        normalize_images,
                        normalize_patches,
)
from .on_device import cut_patches_on, task_patches_on
from .sampling import (
                        CHANNEL_DROP_FILLS,
                        PatchPlan,
                        crop_seed,
                        cut_patches,
                        pair_cells,
                        pair_label,
                        plan_patches,
                        sample_patches,
)
from .task import (
                        STATS_EPOCH,
                        VALIDATION_EPOCH,
                        PatchTaskConfig,
                        statistics_patches,
                        training_patches,
                        validation_patches,
)

__all__ = [
    "CHANNEL_DROP_FILLS",
    "DEFAULT_PRESET",
    "NORMALIZE_MODES",
    "PATCH_VARIANCE_EPS",
    "PRESETS",
    "STATS_EPOCH",
    "VALIDATION_EPOCH",
    "PatchGrid",
    "PatchPlan",
    "PatchTaskConfig",
    "PixelStatistics",
    "channel_stats",
    "checked_stats",
    "crop_seed",
    "cut_patches",
    "cut_patches_on",
    "dataset_channel_stats",
    "normalize_images",
    "normalize_patches",
    "pair_cells",
    "pair_label",
    "plan_patches",
    "sample_patches",
    "statistics_patches",
    "task_patches_on",
    "training_patches",
    "validation_patches",
]
