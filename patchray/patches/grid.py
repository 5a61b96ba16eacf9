"""Geometry of the PatchTask: a fixed grid of patch cells laid over a person crop.

The class of a patch is the row-major index of the cell it was cut from. The grid
is centred in the crop, so that whatever margin is left over is split evenly
between the borders instead of betraying the top or left cells.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

# Named grids of the reference scripts: (cols, rows).
PRESETS: dict[str, tuple[int, int]] = {"pt8": (2, 4), "pt18": (3, 6)}
DEFAULT_PRESET = "pt18"


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `cols=True` is a bug, not a grid.
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class PatchGrid:
    """Cells of ``cols x rows`` square patches of ``patch_size`` px, ``gap`` px apart,
    centred in a ``crop_width x crop_height`` crop; each patch may be shifted by up
    to ``+-jitter`` px per axis (clipped so it stays inside the crop; less than half
    the pitch, see ``max_jitter``)."""

    crop_width: int = 100
    crop_height: int = 200
    cols: int = PRESETS[DEFAULT_PRESET][0]
    rows: int = PRESETS[DEFAULT_PRESET][1]
    patch_size: int = 32
    jitter: int = 4
    gap: int = 0

    def __post_init__(self) -> None:
        positive = ("crop_width", "crop_height", "cols", "rows", "patch_size")
        for f in fields(self):
            value = getattr(self, f.name)
            if not _is_int(value):
                raise ValueError(f"PatchGrid.{f.name} must be an int, got {value!r}")
            if f.name in positive and value <= 0:
                raise ValueError(f"PatchGrid.{f.name} must be positive, got {value}")
            if f.name not in positive and value < 0:
                raise ValueError(f"PatchGrid.{f.name} must be >= 0, got {value}")
        span_x, span_y = self.span
        if span_x > self.crop_width:
            raise ValueError(
                f"PatchGrid: {self.cols} cols of {self.patch_size} px with gap {self.gap} need "
                f"{span_x} px, more than crop_width={self.crop_width}"
            )
        if span_y > self.crop_height:
            raise ValueError(
                f"PatchGrid: {self.rows} rows of {self.patch_size} px with gap {self.gap} need "
                f"{span_y} px, more than crop_height={self.crop_height}"
            )
        if self.num_classes > 1 and self.jitter > self.max_jitter:
            raise ValueError(
                f"PatchGrid: jitter={self.jitter} px lets two neighbouring cells, {self.pitch} px apart "
                f"(patch_size {self.patch_size} + gap {self.gap}), cut the same patch under two labels; jitter "
                f"must stay below half that pitch: at most {self.max_jitter} px here"
            )

    @property
    def num_classes(self) -> int:
        return self.cols * self.rows

    @property
    def pitch(self) -> int:
        """Distance in px between the top-left corners of neighbouring cells."""
        return self.patch_size + self.gap

    @property
    def max_jitter(self) -> int:
        """Largest jitter for which two neighbouring cells can never cut the same patch: each may move
        ``jitter`` px towards the other, so ``2 * jitter`` must stay below the pitch. For gap 0 or 1 and an even
        patch size this is the reference scripts' ``gap + patch_size / 2 - 1``; for a wider gap that formula
        would allow coinciding patches, which this refuses."""
        return (self.pitch - 1) // 2

    @property
    def span(self) -> tuple[int, int]:
        """(width, height) in px covered by the un-jittered grid."""
        return (
            self.cols * self.patch_size + (self.cols - 1) * self.gap,
            self.rows * self.patch_size + (self.rows - 1) * self.gap,
        )

    def cell_origins(self) -> np.ndarray:
        """int64 array (num_classes, 2): (x, y) of each cell's patch top-left corner
        before jitter; row ``i`` belongs to label ``i`` (row-major)."""
        span_x, span_y = self.span
        offset_x = (self.crop_width - span_x) // 2
        offset_y = (self.crop_height - span_y) // 2
        row, col = np.divmod(np.arange(self.num_classes, dtype=np.int64), self.cols)
        return np.stack([offset_x + col * self.pitch, offset_y + row * self.pitch], axis=1)

    def jitter_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive (low, high) jitter offsets per cell, each int64 (num_classes, 2) as (dx, dy).

        Offsets are at most ``jitter`` px in either direction, clipped so that the
        shifted patch stays inside the crop (hence asymmetric for border cells)."""
        origins = self.cell_origins()
        last_valid = np.array(
            [self.crop_width - self.patch_size, self.crop_height - self.patch_size], dtype=np.int64
        )
        low = np.maximum(-self.jitter, -origins)
        high = np.minimum(self.jitter, last_valid - origins)
        return low, high
