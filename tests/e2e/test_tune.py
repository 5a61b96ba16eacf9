"""A small Ray Tune search end to end on the local cluster: Optuna + ASHA trials sharing one cached
pretraining, every output written, and a re-run of the same name resuming without rerunning anything."""
import csv
import json

import pytest

from patchray import config as configlib
from patchray.train.config import FinetuneConfig, PretrainConfig
from patchray.tune.cache import USES
from patchray.tune.tuner import TuneConfig, run_tune

pytestmark = pytest.mark.slow


def test_search_shares_one_pretraining_writes_outputs_and_resumes(ray_cluster, synthetic_small, tmp_path):
    from patchray.shards.generate import generate_synthetic

    generate_synthetic(tmp_path / "lab", num_crops=0, labeled=240, seed=9, workers=2, progress=False)
    settings = {
        "out": str(tmp_path), "name": "t", "num_samples": 3, "grace_period": 1, "time_budget_s": None,
        "space": {"pretrain": {"task.patch_size": {"choice": [32]}, "task.grid": {"choice": ["2x4"]}},
                  "finetune": {"optim.lr": {"loguniform": [0.001, 0.01]}}},
        # one worker a trainer: what is tested is the search, not data parallelism, and a trial starts faster
        "pretrain": {"epochs": 1, "data": [str(synthetic_small / "unlabeled")], "holdout_crops": 50, "max_crops": 300,
                     "resources": {"num_workers": 1}},
        "finetune": {"epochs": 2, "labels": 60, "data": [str(tmp_path / "lab" / "labeled")], "val_limit": 40,
                     "resources": {"num_workers": 1}}}
    lines = []
    summary = run_tune(configlib.build(TuneConfig, settings), log=lines.append)
    out = tmp_path / "t"

    assert summary["trials"] == 3 and summary["status"]["error"] == 0
    assert summary["status"]["completed"] >= 1  # the first trial at each ASHA rung always goes on
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == 3
    assert summary["epochs_spent"] == sum(int(r["epochs"]) for r in rows)
    for r in rows:  # every trial ran 1 epoch (ASHA's grace period) or both
        assert int(r["epochs"]) == (2 if r["status"] == "completed" else 1)
        assert 0.001 <= float(r["finetune.optim.lr"]) <= 0.01 and 0 <= float(r["val_mA"]) <= 1
    best = max((r for r in rows if r["status"] == "completed"), key=lambda r: float(r["val_mA"]))
    assert summary["best"]["trial"] == best["trial"]
    assert summary["best"]["val_mA"] == pytest.approx(float(best["val_mA"]))

    # one pretext configuration: trained by one trial, taken from the cache by the other two
    entries = [p for p in (tmp_path / "pretrain_cache").iterdir() if p.is_dir()]  # shared by experiments
    assert len(entries) == 1
    uses = [json.loads(line) for line in (entries[0] / USES).read_text().splitlines()]
    assert [u["trained"] for u in uses].count(True) == 1 and len(uses) == 3
    assert {u["user"] for u in uses} == {r["trial"] for r in rows}

    # the best configuration as files the jobs take as they are
    best_pre = configlib.load(PretrainConfig, out / "best_pretrain.yaml")
    best_fine = configlib.load(FinetuneConfig, out / "best_finetune.yaml")
    assert (best_pre.task.patch_size, best_pre.task.cols, best_pre.task.rows) == (32, 2, 4)
    assert best_fine.optim.lr == pytest.approx(float(best["finetune.optim.lr"]))
    assert best_fine.init == f"patchtask:{entries[0]}"
    for name in ("trials.md", "objective.png", "heatmap.png", "summary.json", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert best["trial"] + " (best)" in (out / "trials.md").read_text()

    # the same command again: resumes, finishes at once, reruns no trial
    stamps = {p: p.stat().st_mtime for p in (out / "trials").rglob("*") if p.is_file()}
    lines.clear()
    again = run_tune(configlib.build(TuneConfig, settings), log=lines.append)
    assert any(line.startswith("[tune] resuming ") for line in lines), lines
    assert again["trials"] == 3 and again["epochs_spent"] == summary["epochs_spent"]
    assert again["best"]["trial"] == summary["best"]["trial"]
    assert {p: p.stat().st_mtime for p in (out / "trials").rglob("*") if p.is_file()} == stamps
    assert len((entries[0] / USES).read_text().splitlines()) == 3

    # the same name with other settings is refused before any work
    with pytest.raises(configlib.ConfigError, match="different.*num_samples"):
        run_tune(configlib.build(TuneConfig, settings | {"num_samples": 5}))


def test_grid_search_runs_every_point_and_scores_a_patch_that_does_not_fit_as_infeasible(
        ray_cluster, synthetic_small, tmp_path):
    from patchray.shards.generate import generate_synthetic

    generate_synthetic(tmp_path / "lab", num_crops=0, labeled=240, seed=9, workers=2, progress=False)
    lines = []
    summary = run_tune(configlib.build(TuneConfig, {
        "out": str(tmp_path), "name": "g", "search": "grid", "scheduler": "fifo", "time_budget_s": None,
        "space": {"pretrain": {"task.patch_size": {"choice": [32, 48]}, "task.grid": {"choice": ["2x4", "3x6"]}}},
        # one worker a trainer: what is tested is the grid, not data parallelism, and a trial starts faster
        "pretrain": {"epochs": 1, "data": [str(synthetic_small / "unlabeled")], "holdout_crops": 30, "max_crops": 150,
                     "resources": {"num_workers": 1}},
        "finetune": {"epochs": 1, "labels": 40, "data": [str(tmp_path / "lab" / "labeled")], "val_limit": 30,
                     "resources": {"num_workers": 1}}}),
        log=lines.append)
    # 48 px patches do not fit 3 columns of a 100 px crop: that point is tried, scored 0, listed as infeasible
    assert any("1 of 4 pretext combinations do not fit" in line for line in lines)
    rows = {(int(r["pretrain.task.patch_size"]), r["pretrain.task.grid"]): r
            for r in csv.DictReader(open(tmp_path / "g" / "trials.csv"))}
    assert len(rows) == 4  # the grid: every point once
    bad = rows[(48, "3x6")]
    assert bad["status"] == "infeasible" and bad["epochs"] == "0" and bad["val_mA"] == ""
    for point in ((32, "2x4"), (32, "3x6"), (48, "2x4")):  # FIFO: run out, never stopped
        assert rows[point]["status"] == "completed" and rows[point]["epochs"] == "1"
    assert summary["status"]["infeasible"] == 1 and summary["epochs_spent"] == 3
    assert len([p for p in (tmp_path / "pretrain_cache").iterdir() if p.is_dir()]) == 3
