import io

import numpy as np
import pytest
import torch
from helpers import person_jpeg
from PIL import Image

from patchray.bench.ingest import (
    UserPatchDataset,
    _user_collate,
    decode_rate,
    fitted_decode_rate,
    format_markdown,
    verdict,
)
from patchray.patches import PatchTaskConfig


def _position_jpeg(width=100, height=200) -> bytes:
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs, ys, np.full_like(xs, 128)], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100, subsampling=0)
    return buffer.getvalue()


@pytest.mark.parametrize("decoder", ["torchvision", "simplejpeg"])
def test_the_dataloader_baseline_cuts_the_same_task_as_patchray(decoder):
    """The baseline must do the same work: K distinct cells per crop, each patch inside its cell's jitter window."""
    task = PatchTaskConfig()
    dataset = UserPatchDataset([_position_jpeg()] * 6, task, decoder)
    patches, labels = _user_collate([dataset[i] for i in range(6)])
    k, size = task.patches_per_crop, task.patch_size
    assert patches.shape == (6 * k, size, size, 3) and patches.dtype == torch.uint8
    assert all(len(set(row.tolist())) == k for row in labels.view(6, k))
    grid = task.grid()
    origins, (low, high) = grid.cell_origins(), grid.jitter_bounds()
    top_left = patches[:, 0, 0, :2].numpy().astype(int)  # (x, y) read back from the image, JPEG error +-2
    offsets = top_left - origins[labels.numpy()]
    assert np.all(offsets >= low[labels.numpy()] - 2) and np.all(offsets <= high[labels.numpy()] + 2)


def test_decode_rate_counts_crops_per_second():
    rate = decode_rate([_position_jpeg()] * 200, 100, 200)
    assert 100 < rate < 1e6
    big = [person_jpeg(300, 600, i) for i in range(20)] * 10
    assert 20 < fitted_decode_rate(big, 100, 200) < 1e5


@pytest.mark.parametrize("fit", ["aspect", "stretch"])
def test_the_baseline_fits_a_detectors_crop_as_patchray_does(fit):
    """Crops of another size cost the baseline a fit too, and the same fit: torchvision's resize and centre crop
    give patchray's pixels within a few grey levels, zero bands in the same columns (a thin 90 x 540 box is 33
    columns wide at height 200)."""
    from patchray.bench.ingest import fit_like_torchvision
    from patchray.shards.decode import decode_crops

    for width, height in [(300, 600), (90, 540), (420, 300)]:
        image = person_jpeg(width, height)
        ours = decode_crops([image], 100, 200, fit)[0][0].astype(int)
        decoded = torch.from_numpy(np.array(Image.open(io.BytesIO(image)).convert("RGB")))
        theirs = fit_like_torchvision(decoded, 100, 200, fit).numpy().astype(int)
        assert theirs.shape == (200, 100, 3)
        assert np.abs(ours - theirs).mean() < 3.0, (width, height)
        if fit == "aspect" and width == 90:
            for pixels in (ours, theirs):  # content in columns 33 to 65, nothing outside
                assert pixels[:, :33].max() == 0 and pixels[:, 66:].max() == 0
                assert pixels[:, 33:66].max(axis=(0, 2)).min() > 0


def test_the_baseline_cuts_from_the_fitted_crop():
    task = PatchTaskConfig()
    dataset = UserPatchDataset([person_jpeg(300, 600)] * 2, task)
    patches, labels = _user_collate([dataset[i] for i in range(2)])
    assert patches.shape == (2 * task.patches_per_crop, task.patch_size, task.patch_size, 3)


@pytest.mark.parametrize(("patchray", "met_loader", "met_limit"), [(50.0, False, False), (130.0, True, True)])
def test_verdict_ratios_and_goals(patchray, met_loader, met_limit):
    v = verdict(limit=200.0, dataloader=60.0, patchray=patchray)
    assert v["patchray_vs_dataloader"] == round(patchray / 60, 3)
    assert v["patchray_vs_decode_limit"] == round(patchray / 200, 3)
    assert v["dataloader_vs_decode_limit"] == 0.3
    assert (v["met_vs_dataloader"], v["met_vs_decode_limit"]) == (met_loader, met_limit)
    assert "met_per_cpu_vs_dataloader" not in v  # no CPU measured, no verdict on it


@pytest.mark.parametrize(("per_cpu", "met"), [(70.0, False), (80.0, True)])
def test_verdict_on_patches_per_cpu_second(per_cpu, met):
    v = verdict(limit=200.0, dataloader=60.0, patchray=60.0, dataloader_per_cpu=40.0, patchray_per_cpu=per_cpu)
    assert v["patchray_per_cpu_vs_dataloader"] == round(per_cpu / 40, 3)
    assert v["met_per_cpu_vs_dataloader"] is met and v["goal_per_cpu_vs_dataloader"] == 2.0


def test_the_best_epoch_skips_the_warm_up_and_costs_are_per_cpu_second():
    from patchray.bench.ingest import EpochCost, best_epoch

    epochs = [EpochCost(1000, 0.5, 1.0), EpochCost(1000, 1.0, 1.6), EpochCost(1000, 0.8, 2.0)]
    best = best_epoch(epochs)
    assert best is epochs[2] and best.patches_per_s == 1250 and best.patches_per_cpu_s == 500


def test_markdown_table_names_every_contender_with_its_share_of_the_limit_and_its_cost():
    result = {"machine": {"cores": 2, "cpu": "x"}, "data": {"crops": 1000, "median_size": [100, 200]},
              "crop_size": [100, 200], "patches_per_crop": 8, "cores": 2,
              "decode_limit": 200.0, "decode_crops_per_s_per_core": 12, "decode_limit_per_cpu_s": 96,
              "fitted_decode_crops_per_s_per_core": 9,
              "dataloader": 60.0, "dataloader_per_cpu_s": 30, "patchray": 90.0,
              "patchray_decode_on": "trainer", "resources": "1 worker",
              "patchray_by_decode": {"data": {"patches_per_s": 70, "patches_per_cpu_s": 50},
                                     "trainer": {"patches_per_s": 90, "patches_per_cpu_s": 45}}
              } | verdict(200.0, 60.0, 90.0, 30.0, 45.0)
    text = format_markdown(result)
    assert text.startswith("Ingest on 2 cores (x), no GPU: 1,000 crops of 100x200, K=8")
    assert format_markdown(result | {"data": {"crops": 1000, "median_size": [300, 600]}}).startswith(
        "Ingest on 2 cores (x), no GPU: 1,000 crops stored at 300x600 (median), fitted to 100x200, K=8")
    assert "| decode limit | 200 | 96 | 1.00 | 12 crops/s on one core x 2; decoded and fitted: 9 crops/s |" in text
    assert "| torch DataLoader | 60 | 30 | 0.30 |" in text
    assert "| patchray (Ray Data -> Ray Train), decoded on data | 70 | 50 | 0.35 |" in text
    assert "| patchray (Ray Data -> Ray Train), decoded on trainer | 90 | 45 | 0.45 |" in text
    assert ("patchray (decoded on trainer) / DataLoader: 1.50x patches/s (goal 1x, met), 1.50x patches per "
            "CPU-second (goal 2x, not met)") in text
    assert "CPUs busy" not in text  # no breakdown measured, none shown
    assert "patchray's decoder" not in text  # not measured, not shown
    result |= {"dataloader_simplejpeg": 75.0, "dataloader_simplejpeg_per_cpu_s": 36, "patchray_per_cpu_s": 45}
    text = format_markdown(result)
    assert "| torch DataLoader, patchray's decoder | 75 | 36 | 0.38 |" in text
    assert "against the DataLoader with patchray's decoder: 1.20x patches/s, 1.25x per CPU-second" in text
    result |= {"dataloader_cpu_s_by_role": {"driver": 0.5, "other processes (DataLoader workers)": 3.0},
               "dataloader_seconds": 2.0}
    assert "- torch DataLoader: other processes (DataLoader workers) 1.50, driver 0.25 CPUs" in format_markdown(result)
    # a cached run is a row of its own and a verdict of its own, beside the headline's (which decodes every epoch)
    result["patchray_by_decode"]["cached"] = {"patches_per_s": 150, "patches_per_cpu_s": 75}
    result["cached"] = {"contender": "cached"} | verdict(200.0, 60.0, 150.0, 30.0, 75.0)
    text = format_markdown(result)
    assert "| patchray (Ray Data -> Ray Train), decoded once, cut on the worker | 150 | 75 | 0.75 |" in text
    assert ("patchray decoding once (cache_decoded; decoded once, cut on the worker) / DataLoader, epochs after the "
            "first: 2.50x patches/s, 2.50x patches per CPU-second (goal 2x, met)") in text
    assert "patchray (decoded on trainer) / DataLoader: 1.50x patches/s" in text


def test_the_cached_runs_follow_the_decoding_one_and_are_left_out_on_request():
    from patchray.bench.ingest import IngestBenchConfig, contenders

    assert contenders(IngestBenchConfig()) == ["data", "data+cut", "alone", "trainer", "cached", "cached+cut"]
    assert contenders(IngestBenchConfig(cut_in_data=False)) == ["data", "alone", "trainer", "cached"]
    assert contenders(IngestBenchConfig(cache=False)) == ["data", "data+cut", "alone", "trainer"]
    assert contenders(IngestBenchConfig(alone=False)) == ["data", "data+cut", "trainer", "cached", "cached+cut"]
    assert contenders(IngestBenchConfig(decode_on=["trainer"])) == ["trainer"]


def test_config_refuses_an_unknown_decode_place():
    from patchray import config as configlib
    from patchray.bench.ingest import IngestBenchConfig

    with pytest.raises(configlib.ConfigError, match=r"decode_on\[0\]: 'gpu' is not one of"):
        configlib.load(IngestBenchConfig, None, ["decode_on=[gpu]"])
    with pytest.raises(ValueError, match="decode_on"):
        IngestBenchConfig(decode_on=[])
