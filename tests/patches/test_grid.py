from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from patchray.patches import PRESETS, PatchGrid, PatchTaskConfig

PT8 = dict(zip(("cols", "rows"), PRESETS["pt8"]))


def test_reference_grid_is_pt18_centred_at_offsets_2_4():
    grid = PatchGrid()
    assert (grid.cols, grid.rows, grid.num_classes) == (3, 6, 18)
    origins = grid.cell_origins()
    assert origins.shape == (18, 2)
    assert tuple(origins[0]) == (2, 4)
    assert tuple(origins[-1]) == (2 + 2 * 32, 4 + 5 * 32)


def test_labels_are_row_major():
    grid = PatchGrid()
    origins = grid.cell_origins()
    for label, (x, y) in enumerate(origins):
        row, col = divmod(label, grid.cols)
        assert (x, y) == (2 + 32 * col, 4 + 32 * row)


def test_presets():
    """A task config's preset names its grid (overrides and refusals: tests/patches/test_task.py)."""
    assert PRESETS == {"pt8": (2, 4), "pt18": (3, 6)}
    pt8 = PatchTaskConfig(preset="pt8").grid()
    assert (pt8.cols, pt8.rows, pt8.num_classes) == (2, 4, 8)
    # 2 x 32 = 64 of 100 px, 4 x 32 = 128 of 200 px: centred at (18, 36).
    assert tuple(pt8.cell_origins()[0]) == (18, 36)
    assert PatchTaskConfig(preset="pt18").grid() == PatchGrid()


def test_gap_spreads_the_cells_and_recentres():
    grid = PatchGrid(gap=1)
    origins = grid.cell_origins()
    # Width 3*32 + 2 = 98 -> offset 1; height 6*32 + 5 = 197 -> offset 1; pitch 33.
    assert tuple(origins[0]) == (1, 1)
    assert tuple(origins[1]) == (34, 1)
    assert tuple(origins[3]) == (1, 34)
    assert not np.array_equal(origins, PatchGrid().cell_origins())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cols": 0}, "cols"),
        ({"rows": -1}, "rows"),
        ({"patch_size": 0}, "patch_size"),
        ({"crop_width": 0}, "crop_width"),
        ({"jitter": -1}, "jitter"),
        ({"gap": -2}, "gap"),
        ({"cols": 1.5}, "cols"),
        ({"cols": True}, "cols"),
        ({"cols": 4}, "crop_width"),  # 4 x 32 > 100
        ({"rows": 7}, "crop_height"),  # 7 x 32 > 200
        ({"gap": 2}, "crop_height"),  # 6 x 32 + 5 x 2 = 202 > 200
    ],
)
def test_invalid_grids_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PatchGrid(**kwargs)


def test_grid_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PatchGrid().cols = 4  # type: ignore[misc]


@pytest.mark.parametrize("grid", [PatchGrid(), PatchGrid(jitter=15), PatchGrid(**PT8, gap=3)])
def test_jitter_bounds_keep_patches_inside_the_crop(grid):
    origins = grid.cell_origins()
    low, high = grid.jitter_bounds()
    assert low.shape == high.shape == (grid.num_classes, 2)
    assert np.all(low >= -grid.jitter) and np.all(high <= grid.jitter)
    assert np.all(low <= 0) and np.all(high >= 0)
    assert np.all(origins + low >= 0)
    assert np.all(origins[:, 0] + high[:, 0] + grid.patch_size <= grid.crop_width)
    assert np.all(origins[:, 1] + high[:, 1] + grid.patch_size <= grid.crop_height)


def test_jitter_bounds_are_clipped_only_at_the_border():
    grid = PatchGrid()
    low, high = grid.jitter_bounds()
    # Top-left cell sits 2 px from the left, 4 px from the top.
    assert tuple(low[0]) == (-2, -4) and tuple(high[0]) == (4, 4)
    # Bottom-right cell: 100 - 32 - 66 = 2 px right margin, 200 - 32 - 164 = 4 px bottom.
    assert tuple(low[-1]) == (-4, -4) and tuple(high[-1]) == (2, 4)
    # Middle column is free in x: window centred on its origin.
    assert tuple(low[1]) == (-4, -4) and tuple(high[1]) == (4, 4)
    assert np.array_equal(PatchGrid(jitter=0).jitter_bounds()[0], np.zeros((18, 2)))


@pytest.mark.parametrize(("patch_size", "gap"), [(32, 0), (16, 0), (16, 1), (24, 4), (25, 0)])
def test_jitter_must_stay_below_half_the_pitch(patch_size, gap):
    """Two neighbouring cells (pitch p apart) each moving j px towards the other meet when 2j >= p: then the
    same patch could come with two labels. The largest jitter allowed is the largest j with 2j < p."""
    grid = PatchGrid(**PT8, patch_size=patch_size, gap=gap, jitter=0)
    pitch, allowed = patch_size + gap, grid.max_jitter
    assert 2 * allowed < pitch <= 2 * (allowed + 1)
    if gap <= 1 and patch_size % 2 == 0:  # the reference scripts' rule, jitter <= gap + P/2 - 1
        assert allowed == gap + patch_size // 2 - 1
    ok = PatchGrid(**PT8, patch_size=patch_size, gap=gap, jitter=allowed)
    # neighbouring cells 0 and 1 (x) and 0 and 2 (y): their reachable positions never coincide
    low, high = ok.jitter_bounds()
    origins = ok.cell_origins()
    for other, axis in ((1, 0), (2, 1)):
        reach = [set(range(origins[c, axis] + low[c, axis], origins[c, axis] + high[c, axis] + 1)) for c in (0, other)]
        assert not reach[0] & reach[1]
    refused = rf"jitter={allowed + 1} px .*same patch under two labels.*at most {allowed} px"
    with pytest.raises(ValueError, match=refused):
        PatchGrid(**PT8, patch_size=patch_size, gap=gap, jitter=allowed + 1)


def test_the_tune_example_of_16_px_patches_and_jitter_8_is_refused():
    with pytest.raises(ValueError, match="jitter=8 px lets two neighbouring cells, 16 px apart"):
        PatchGrid(**PT8, patch_size=16, jitter=8)
    assert PatchGrid(**PT8, patch_size=16, jitter=7).max_jitter == 7
