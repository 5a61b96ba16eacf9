"""The task sheet shows the training sampler's own patches and the grid's own geometry, and its job writes it
from shards without Ray."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import jpeg_bytes
from PIL import Image

from patchray.patches import PatchTaskConfig, pair_cells, training_patches
from patchray.report.task_sheet import (
    display_pixels,
    example_caption,
    plot_task_sheet,
    task_sheet_data,
)

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "show_task.py"


def _crops(count, width=100, height=200, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _ids(count):
    return [f"crop-{i}" for i in range(count)]


@pytest.mark.parametrize("task", [
    PatchTaskConfig(),
    PatchTaskConfig(preset="pt8", pairwise=True, patches_per_crop=5, grayscale=0.4, channel_drop=0.4),
    PatchTaskConfig(channel_drop=0.5, channel_drop_fill="noise", patches_per_crop=20),
], ids=["pt18", "pt8-pairwise-controls", "noise-drop"])
def test_patches_and_labels_are_the_training_epochs(task):
    crops = _crops(3)
    data = task_sheet_data(crops, _ids(3), task, seed=7, epoch=2)
    patches, labels = training_patches(crops, _ids(3), task, 7, 2)
    np.testing.assert_array_equal(data.patches, patches)
    np.testing.assert_array_equal(data.labels, labels)
    # Another epoch is another draw: the sheet follows the epoch it is given.
    other = task_sheet_data(crops, _ids(3), task, seed=7, epoch=3)
    assert not np.array_equal(other.patches, data.patches)


def test_boxes_and_jitter_ranges_are_the_grids_clipped_to_the_crop():
    # 2 cols of 40 px + gap 5 = 85 px centred in 100: x origins 7 and 52, so jitter 10 is clipped to -7 on the left.
    task = PatchTaskConfig(preset=None, cols=2, rows=3, patch_size=40, jitter=10, gap=5, crop_width=100,
                           crop_height=140)
    data = task_sheet_data(_crops(2, 100, 140), _ids(2), task, seed=0, epoch=0)
    grid = task.grid()
    low, high = grid.jitter_bounds()
    origins = grid.cell_origins()
    np.testing.assert_array_equal(data.origin_ranges, np.concatenate([origins + low, origins + high], axis=1))
    np.testing.assert_array_equal(data.cell_boxes, np.concatenate([origins, origins + 40], axis=1))
    assert data.cell_boxes[0].tolist() == [7, 5, 47, 45]      # rows: 3 * 40 + 2 * 5 = 130 in 140 -> y offset 5
    assert data.origin_ranges[0].tolist() == [0, 0, 17, 15]   # clipped at the crop's left and top edges
    assert data.origin_ranges[5].tolist() == [42, 85, 60, 100]  # right and bottom: 100 - 40 = 60, 140 - 40 = 100


def test_every_patch_lies_in_its_cells_jitter_range_and_is_cut_there():
    task = PatchTaskConfig(preset="pt8", pairwise=True, patches_per_crop=6, jitter=6)
    crops = _crops(2)
    data = task_sheet_data(crops, _ids(2), task, seed=3, epoch=1)
    first, second = pair_cells(data.labels, task.num_cells)
    np.testing.assert_array_equal(data.cells, np.stack([first, second], axis=1))
    ranges = data.origin_ranges[data.cells]  # [examples, 2, 4]
    x, y = data.top_left[..., 0], data.top_left[..., 1]
    assert ((ranges[..., 0] <= x) & (x <= ranges[..., 2]) & (ranges[..., 1] <= y) & (y <= ranges[..., 3])).all()
    size = task.patch_size
    for example in range(len(data.labels)):
        crop = crops[data.crop_of(example)]
        for view in range(2):
            px, py = data.top_left[example, view]
            np.testing.assert_array_equal(data.patches[example, view], crop[py:py + size, px:px + size])


def test_pair_table_names_every_pair_label_once():
    task = PatchTaskConfig(preset="pt8", pairwise=True)
    data = task_sheet_data(_crops(1), _ids(1), task, seed=0, epoch=0)
    table = data.pair_table
    cells = task.num_cells
    assert table.shape == (cells, cells)
    assert (np.diag(table) == -1).all()
    off_diagonal = table[~np.eye(cells, dtype=bool)]
    assert sorted(off_diagonal.tolist()) == list(range(task.num_classes))
    first, second = pair_cells(table[0, 5], cells)
    assert (int(first), int(second)) == (0, 5)
    assert task_sheet_data(_crops(1), _ids(1), PatchTaskConfig(), 0, 0).pair_table is None


def test_captions_name_the_class_and_the_pairs_cells():
    task = PatchTaskConfig(preset="pt8", pairwise=True, patches_per_crop=4)
    data = task_sheet_data(_crops(1), _ids(1), task, seed=0, epoch=0)
    first, second = data.cells[0]
    assert example_caption(data, 0).startswith(f"{data.labels[0]}: {first}\u2192{second}")
    single = task_sheet_data(_crops(1), _ids(1), PatchTaskConfig(), seed=0, epoch=0)
    assert example_caption(single, 0) == f"cell {single.labels[0]}"


def test_a_zero_filled_channel_drop_is_shown_flat():
    task = PatchTaskConfig(channel_drop=1.0)  # every patch loses a channel, marked in a 4th plane
    data = task_sheet_data(_crops(1), _ids(1), task, seed=0, epoch=0)
    assert data.patches.shape[-1] == 4
    channel = int(data.dropped_channel[0, 0])
    assert channel == int(data.patches[0, 0, 0, 3]) - 1
    shown = display_pixels(data.patches[0])
    assert shown.shape[-1] == 3
    assert np.ptp(shown[..., channel]) == 0                   # flat: normalising makes it 0
    kept = [c for c in range(3) if c != channel]
    np.testing.assert_array_equal(shown[..., kept], data.patches[0][..., kept])


def test_crops_the_task_does_not_fit_are_refused_with_the_setting_to_change():
    with pytest.raises(ValueError, match="does not fit these 60x120 crops; use a smaller task.patch_size"):
        task_sheet_data(_crops(1, 60, 120), _ids(1), PatchTaskConfig(), 0, 0)
    with pytest.raises(ValueError, match="crops are 100x220 .* decode them at the task's size"):
        task_sheet_data(_crops(1, 100, 220), _ids(1), PatchTaskConfig(), 0, 0)
    with pytest.raises(ValueError, match="need 120 px, more than crop_width=100"):
        PatchTaskConfig(patch_size=40, jitter=4)  # the task refuses a patch its own crop cannot hold
    with pytest.raises(ValueError, match="training epochs start at 0"):
        task_sheet_data(_crops(1), _ids(1), PatchTaskConfig(), 0, -1)
    with pytest.raises(ValueError, match="2 crop ids for 1 crops"):
        task_sheet_data(_crops(1), _ids(2), PatchTaskConfig(), 0, 0)


def test_sheet_is_a_png_sized_by_its_content(tmp_path):
    one = Image.open(plot_task_sheet(_crops(1), _ids(1), PatchTaskConfig(), 0, 0, tmp_path / "one.png"))
    four = Image.open(plot_task_sheet(_crops(4), _ids(4), PatchTaskConfig(), 0, 0, tmp_path / "four.png"))
    pairs = Image.open(plot_task_sheet(_crops(1), _ids(1), PatchTaskConfig(pairwise=True), 0, 0,
                                       tmp_path / "pairs.png"))
    for sheet in (one, four, pairs):
        assert sheet.format == "PNG"
        assert 600 <= sheet.width <= 4000 and 500 <= sheet.height <= 4000
    assert four.height > one.height + 200      # a row of patches per crop
    assert pairs.width > one.width             # room for the pair table
    assert np.asarray(four.convert("L")).std() > 20  # drawn, not blank


# ------------------------------------------------------------------------------------------------------------------
# jobs/show_task.py


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A small shard set: one undecodable row first, then crops of another shape than the task's (fitted on read)."""
    from patchray.shards.attributes import AttributeSet
    from patchray.shards.schema import DatasetMeta
    from patchray.shards.writer import CropRecord, ShardWriter

    folder = tmp_path_factory.mktemp("shards") / "unlabeled"
    with ShardWriter(folder, DatasetMeta("sheet", AttributeSet()), "unlabeled", rows_per_shard=4) as writer:
        writer.add(CropRecord(image=b"not an image", crop_id="broken"))
        for i in range(6):
            writer.add(CropRecord(image=jpeg_bytes(50, 100, color=(40 * i, 90, 200), noise=i % 2 == 1),
                                  crop_id=f"ok-{i}"))
    return folder


def _load_job():
    spec = importlib.util.spec_from_file_location("show_task_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sheet_shows_the_first_good_crops_at_the_tasks_size(shards):
    from patchray.shards import open_shards
    from patchray.train.pretrain import read_validation_crops  # what show_task.py and pretraining both read

    pixels, ids = read_validation_crops(open_shards(str(shards)), 3, 100, 200)
    assert list(ids) == ["ok-0", "ok-1", "ok-2"]  # the broken row is skipped, not shown as black
    assert pixels.shape == (3, 200, 100, 3) and pixels.dtype == np.uint8
    _, all_ids = read_validation_crops(open_shards(str(shards)), 50, 100, 200)
    assert len(all_ids) == 6                     # fewer than asked: what there is


def test_job_refuses_a_patch_that_does_not_fit_in_one_line(shards, tmp_path, capsys):
    job = _load_job()
    code = job.main(["--data", str(shards), "--out", str(tmp_path), "task.patch_size=60"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "60 px" in err and "crop_width=100" in err and "\n" not in err
    assert not (tmp_path / "pretrain").exists()


def test_job_writes_the_sheet_without_ray_and_prints_where(shards, tmp_path):
    # Run as a script, then say on stderr whether anything imported Ray (stdout stays the job's own line).
    probe = ("import runpy, sys\n"
             f"sys.argv = [{str(JOB)!r}] + sys.argv[1:]\n"
             "try:\n"
             f"    runpy.run_path({str(JOB)!r}, run_name='__main__')\n"
             "except SystemExit as e:\n"
             "    code = e.code\n"
             "print('RAY_IMPORTED' if 'ray' in sys.modules else 'NO_RAY', file=sys.stderr)\n"
             "sys.exit(code)\n")
    result = subprocess.run(
        [sys.executable, "-c", probe, "--data", str(shards), "--out", str(tmp_path), "--name", "look",
         "--crops", "2", "task.preset=pt8", "--epoch", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    sheet = tmp_path / "look" / "task_sheet.png"
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(str(sheet)), result.stdout
    assert "2 crop(s), epoch 1" in lines[0]
    assert Image.open(sheet).format == "PNG"
    assert "NO_RAY" in result.stderr
