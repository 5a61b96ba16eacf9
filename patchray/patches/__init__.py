"""PatchTask patches: grid geometry, seeded vectorised sampling, normalisation.

Pure numpy/torch, no Ray, so it runs the same in a data-pipeline worker, a
training worker or a unit test.
"""
from .grid import DEFAULT_PRESET, PRESETS, PatchGrid
from .normalize import NORMALIZE_MODES, PATCH_VARIANCE_EPS, dataset_channel_stats, normalize_images, normalize_patches
from .sampling import crop_seed, pair_cells, pair_label, sample_patches
from .task import VALIDATION_EPOCH, PatchTaskConfig, training_patches, validation_patches

__all__ = [
    "DEFAULT_PRESET",
    "NORMALIZE_MODES",
    "PATCH_VARIANCE_EPS",
    "PRESETS",
    "VALIDATION_EPOCH",
    "PatchGrid",
    "PatchTaskConfig",
    "crop_seed",
    "dataset_channel_stats",
    "normalize_images",
    "normalize_patches",
    "pair_cells",
    "pair_label",
    "sample_patches",
    "training_patches",
    "validation_patches",
]
