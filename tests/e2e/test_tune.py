"""A small Ray Tune search end to end on the local cluster: Optuna + ASHA trials sharing one cached
pretraining, the best configuration confirmed with another seed (and only it tested), the study in its SQLite
database, every output written, and a re-run of the same name resuming without rerunning anything; a grid, the
probe objective, and a longer pretraining continuing a cached shorter one."""
import csv
import json
from pathlib import Path

import optuna
import pytest

from patchray import config as configlib
from patchray.train.config import FinetuneConfig, PretrainConfig
from patchray.tune.cache import USES
from patchray.tune.tuner import TuneConfig, run_tune

pytestmark = pytest.mark.slow

try:  # the [mlflow] extra: the tracking checks run where it is installed (CI installs it)
    import mlflow as MLFLOW
except ImportError:
    MLFLOW = None


def test_search_shares_one_pretraining_writes_outputs_and_resumes(ray_cluster, synthetic_small, tmp_path, capfd):
    from patchray.shards.generate import generate_synthetic

    generate_synthetic(tmp_path / "lab", num_crops=0, labeled=240, seed=9, workers=2, progress=False)
    settings = {
        "out": str(tmp_path), "name": "t", "num_samples": 2, "grace_period": 1, "time_budget_s": None,
        "confirm_top_k": 1, "confirm_seeds": 2,
        "space": {"pretrain": {"task.patch_size": {"choice": [32]}, "task.grid": {"choice": ["2x4"]}},
                  "finetune": {"optim.lr": {"loguniform": [0.001, 0.01]}}},
        # one worker a trainer: what is tested is the search, not data parallelism, and a trial starts faster
        "pretrain": {"epochs": 1, "data": [str(synthetic_small / "unlabeled")], "holdout_crops": 50, "max_crops": 300,
                     "resources": {"num_workers": 1}},
        "finetune": {"epochs": 2, "labels": 60, "data": [str(tmp_path / "lab" / "labeled")], "val_limit": 40,
                     "resources": {"num_workers": 1}}}
    if MLFLOW:
        settings["tracking"] = "mlflow"
    lines = []
    summary = run_tune(configlib.build(TuneConfig, settings), log=lines.append)
    out = tmp_path / "t"
    printed = capfd.readouterr().out   # Tune's experiment box and hints are Ray internals: only with --verbose
    assert "Configuration for experiment" not in printed and "View detailed results here" not in printed

    assert summary["trials"] == 2 and summary["status"]["error"] == 0
    assert summary["status"]["completed"] >= 1  # the first trial at each ASHA rung always goes on
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == 2
    assert summary["epochs_spent"] == sum(int(r["epochs"]) for r in rows)
    assert not [c for c in rows[0] if c.startswith("test_")]  # trials are scored on validation only
    for r in (r for r in rows if r["status"] == "completed"):  # (a trial ASHA stopped wrote no outputs)
        # ...their fine-tuning runs with evaluate_test false: no test split read, scored or written
        folder = Path(r["folder"])
        trial_summary = json.loads((folder / "summary.json").read_text())
        assert trial_summary["test"] is None and trial_summary["identity"]["evaluate_test"] is False
        assert "data.test" not in trial_summary["identity"]
        assert "evaluate_test: false" in (folder / "config.yaml").read_text()
        history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert history[-1]["val_mA"] is not None and not any(k.startswith("test") for h in history for k in h)
        assert not (folder / "test_metrics.json").exists() and (folder / "val_metrics.json").exists()
    stopped = {json.loads(line)["trial"] for line in (out / "asha_rungs.jsonl").read_text().splitlines()
               if json.loads(line)["stopped"]}
    for r in rows:  # every trial ran 1 epoch (ASHA's grace period, the only rung before epoch 2) or both
        assert (int(r["epochs"]), r["status"]) == ((1, "stopped by ASHA") if r["trial"] in stopped
                                                   else (2, "completed"))
        assert 0.001 <= float(r["finetune.optim.lr"]) <= 0.01 and 0 <= float(r["val_mA"]) <= 1
    best = max((r for r in rows if r["status"] == "completed"), key=lambda r: float(r["val_mA"]))
    # the best trial, confirmed with a second seed: the mean of both, and test numbers for it alone
    chosen = summary["best"]
    assert chosen["trial"] == best["trial"] and chosen["seeds"] == 2
    assert chosen["per_seed"][0] == pytest.approx(float(best["val_mA"]))
    assert chosen["val_mA"] == pytest.approx(sum(chosen["per_seed"]) / 2)
    assert 0 <= chosen["test_mA"] <= 1 and chosen["test_runs"] == 1
    assert f"{best['trial']} (chosen)" in (out / "confirmation.md").read_text()
    # Optuna's study, in its database: each trial told as what it was
    study = optuna.load_study(study_name="patchray-t", storage=f"sqlite:///{out / 'optuna.db'}")
    states = sorted(t.state.name for t in study.trials)
    assert states == sorted("PRUNED" if r["trial"] in stopped else "COMPLETE" for r in rows)

    if MLFLOW:  # Ray Tune's MLflow callback: a run per trial with its epochs; and one run for the search
        client = MLFLOW.tracking.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("patchray-tune")
        runs = client.search_runs([experiment.experiment_id])
        search = json.loads((out / "tracking.json").read_text())["run_id"]
        trial_runs = {r.info.run_name: r for r in runs if r.info.run_id != search}
        assert len(trial_runs) == 2
        for r in rows:
            (run,) = [run for name, run in trial_runs.items() if r["trial"] in name]
            epochs = client.get_metric_history(run.info.run_id, "val_mA")
            assert len(epochs) == int(r["epochs"]) and epochs[-1].value == pytest.approx(float(r["val_mA"]))
            assert float(run.data.params["finetune.optim.lr"]) == pytest.approx(float(r["finetune.optim.lr"]))
        searched = client.get_run(search)
        assert searched.data.metrics["summary/val_mA"] == pytest.approx(chosen["val_mA"])
        assert {"trials.md", "objective.png", "summary.json"} <= {a.path for a in client.list_artifacts(search)}

    # one pretext configuration: trained by one trial, taken from the cache by the other and the confirmation
    entries = [p for p in (tmp_path / "pretrain_cache").iterdir() if p.is_dir()]  # shared by experiments
    assert len(entries) == 1
    uses = [json.loads(line) for line in (entries[0] / USES).read_text().splitlines()]
    assert [u["trained"] for u in uses].count(True) == 1 and len(uses) == 3
    assert {r["trial"] for r in rows} < {u["user"] for u in uses}

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
    stamps = {p: p.stat().st_mtime for folder in ("trials", "confirm") for p in (out / folder).rglob("*")
              if p.is_file()}
    lines.clear()
    again = run_tune(configlib.build(TuneConfig, settings), log=lines.append)
    assert any(line.startswith("[tune] resuming ") for line in lines), lines
    assert again["trials"] == 2 and again["epochs_spent"] == summary["epochs_spent"]
    assert again["best"]["trial"] == summary["best"]["trial"]
    assert again["best"]["val_mA"] == summary["best"]["val_mA"]
    assert {p: p.stat().st_mtime for folder in ("trials", "confirm") for p in (out / folder).rglob("*")
            if p.is_file()} == stamps
    assert len((entries[0] / USES).read_text().splitlines()) == 3

    # the same name with other settings is refused before any work
    with pytest.raises(configlib.ConfigError, match="different.*num_samples"):
        run_tune(configlib.build(TuneConfig, settings | {"num_samples": 5}))


def test_grid_search_runs_every_point_scores_a_diverged_fine_tuning_the_worst_and_screens_by_the_probe(
        ray_cluster, synthetic_small, tmp_path):
    from patchray.shards.generate import generate_synthetic

    generate_synthetic(tmp_path / "lab", num_crops=0, labeled=240, seed=9, workers=2, progress=False)
    lines = []
    summary = run_tune(configlib.build(TuneConfig, {
        "out": str(tmp_path), "name": "g", "search": "grid", "scheduler": "fifo", "time_budget_s": None,
        "confirm_top_k": 0,
        # (that a combination which does not fit is left out of the grid: tests/tune/test_tuner.py)
        "space": {"pretrain": {"task.patch_size": {"choice": [32]}, "task.grid": {"choice": ["2x4"]}},
                  "finetune": {"optim.lr": {"choice": [0.002, 1e30]}}},
        # one worker a trainer: what is tested is the grid, not data parallelism, and a trial starts faster
        "pretrain": {"epochs": 1, "data": [str(synthetic_small / "unlabeled")], "holdout_crops": 30, "max_crops": 150,
                     "resources": {"num_workers": 1}},
        "finetune": {"epochs": 1, "labels": 40, "data": [str(tmp_path / "lab" / "labeled")], "val_limit": 30,
                     "max_failures": 0, "resources": {"num_workers": 1}}}),
        log=lines.append)
    rows = {(int(r["pretrain.task.patch_size"]), r["pretrain.task.grid"], float(r["finetune.optim.lr"])): r
            for r in csv.DictReader(open(tmp_path / "g" / "trials.csv"))}
    point = (32, "2x4")
    assert set(rows) == {(*point, lr) for lr in (0.002, 1e30)}  # every point once (more pretext points: below)
    assert rows[(*point, 0.002)]["status"] == "completed" and rows[(*point, 0.002)]["epochs"] == "1"
    # lr 1e30 makes the loss non-finite: scored 0 (the worst), listed as diverged, not as an error
    assert rows[(*point, 1e30)]["status"] == "diverged" and float(rows[(*point, 1e30)]["val_mA"]) == 0.0
    assert summary["status"]["diverged"] == 1 and summary["status"]["error"] == 0
    assert summary["best"]["params"]["finetune.optim.lr"] == 0.002 and summary["best"]["seeds"] == 1
    assert len([p for p in (tmp_path / "pretrain_cache").iterdir() if p.is_dir()]) == 1

    # objective probe on a pretext grid of two, pretrained 2 epochs: no trial fine-tunes, each is scored by the
    # linear probe of its pretrained trunk (2x4 continuing the cached 1-epoch entry, 3x6 trained here) on the
    # fine-tuning data, and the better one by the probe is then fine-tuned
    from patchray.probe import ProbeConfig
    from patchray.train.probe_set import probe_pretraining

    lines.clear()
    probe_cfg = {"train_crops": 60, "val_crops": 40}
    screened = run_tune(configlib.build(TuneConfig, {
        "out": str(tmp_path), "name": "p", "search": "grid", "objective": "probe", "time_budget_s": None,
        "confirm_top_k": 1, "confirm_seeds": 1,
        "space": {"pretrain": {"task.patch_size": {"choice": [32]}, "task.grid": {"choice": ["2x4", "3x6"]}}},
        "pretrain": {"epochs": 2, "data": [str(synthetic_small / "unlabeled")], "holdout_crops": 30, "max_crops": 150,
                     "resources": {"num_workers": 1}, "probe": probe_cfg},
        "finetune": {"epochs": 1, "labels": 40, "data": [str(tmp_path / "lab" / "labeled")], "val_limit": 30,
                     "max_failures": 0, "resources": {"num_workers": 1}}}),
        log=lines.append)
    assert any("objective probe" in line for line in lines), lines
    probed = list(csv.DictReader(open(tmp_path / "p" / "trials.csv")))
    assert len(probed) == 2 and {(r["status"], r["epochs"]) for r in probed} == {("completed", "1")}
    assert not (tmp_path / "p" / "trials").exists() or not any((tmp_path / "p" / "trials").iterdir())
    entries = {(cfg.task.rows, cfg.epochs): p for p in (tmp_path / "pretrain_cache").iterdir() if p.is_dir()
               for cfg in [configlib.load(PretrainConfig, p / "config.yaml")]}
    assert set(entries) == {(4, 1), (4, 2), (6, 2)}   # the 1-epoch 2x4 entry, continued; 3x6 new
    _check_continued(entries[(4, 1)], entries[(4, 2)])
    for r in probed:  # each trial's score is the probe of its pretraining, recomputed here
        folder = entries[(int(r["pretrain.task.grid"].split("x")[1]), 2)]
        again = probe_pretraining(folder, ProbeConfig(**probe_cfg), [str(tmp_path / "lab" / "labeled")], 0)
        assert float(r["val_mA"]) == pytest.approx(again["probe_mA"], abs=1e-4)
    best_probe = max(probed, key=lambda r: float(r["val_mA"]))
    chosen = screened["best"]
    assert chosen["trial"] == best_probe["trial"] and chosen["seeds"] == 1 and chosen["test_runs"] == 1
    assert chosen["val_mA"] != pytest.approx(float(best_probe["val_mA"]))  # the fine-tuning's score, not the probe's


def _check_continued(one: Path, two: Path) -> None:
    """The 2-epoch cache entry ``two`` continued the 1-epoch entry ``one`` of its lineage: its epoch 1 is
    ``one``'s line for line (a re-trained epoch has new timings), only epoch 2 ran in its own Ray Train run, and
    it trained on from ``one``'s weights."""
    import ray.train
    import torch

    from patchray.train.checkpoint import final_state, load_checkpoint

    def lines(folder):
        return (folder / "metrics.jsonl").read_text().splitlines()

    def epochs_ray_train_ran(folder):   # this entry's own run, not the history it carries over
        return [int(e) for e in ray.train.Result.from_path(str(folder / "ray" / "pretrain")).metrics_dataframe["epoch"]]

    assert [json.loads(line)["epoch"] for line in lines(two)] == [0, 1] and lines(two)[0] == lines(one)[0]
    assert epochs_ray_train_ran(one) == [0] and epochs_ray_train_ran(two) == [1]
    summary = json.loads((two / "complete.json").read_text())
    assert summary["epochs"] == 2 and summary["from_epoch"] == 1
    assert summary["continued_from"] == str(one.resolve()) and summary["cache"]["continued_from"] == one.name
    epochs = [json.loads(line) for line in lines(two)]
    assert epochs[1]["patches_seen"] > epochs[0]["patches_seen"] == json.loads(lines(one)[0])["patches_seen"]
    (start, _), (end, _) = load_checkpoint(final_state(one)), load_checkpoint(final_state(two))
    assert (start["epoch"], end["epoch"]) == (0, 1)
    assert any(not torch.equal(start["model"][k], end["model"][k]) for k in start["model"])


def test_a_decoded_cache_that_would_not_fit_a_trial_s_share_of_the_store_stops_the_search_before_any_trial(
        ray_cluster, synthetic_small, probe_labeled, tmp_path):
    from patchray.pipeline import CACHE_STORE_SHARE, decoded_bytes
    from patchray.train.resources import ResourceError

    store = ray_cluster.cluster_resources()["object_store_memory"]
    labels = 60  # fine-tuning's cache: 60 crops of 100x200
    fits = decoded_bytes(labels, 100, 200) / (CACHE_STORE_SHARE * store)  # the least share they fit in
    base = {"out": str(tmp_path), "num_samples": 1, "time_budget_s": None, "confirm_top_k": 0,
            "space": {"pretrain": {"task.patch_size": {"choice": [32]}}, "finetune": {}},
            "pretrain": {"epochs": 1, "data": [str(synthetic_small / "unlabeled")], "holdout_crops": 50}}

    def search(name, pretrain=None, finetune=None):
        settings = base | {"name": name, "pretrain": base["pretrain"] | (pretrain or {}),
                           "finetune": {"epochs": 2, "labels": labels, "data": [str(probe_labeled)]}
                           | (finetune or {})}
        return run_tune(configlib.build(TuneConfig, settings), log=lambda *_: None)

    # A share the cache does not fit (as 1/max_concurrent_trials would give on a larger cluster): refused at once
    with pytest.raises(ResourceError, match=rf"cache_decoded: {labels} crops of 100x200 .* more than 70% of this "
                                            r"run's .* of the cluster's object store .*max_concurrent_trials"):
        search("ft", finetune={"cache_decoded": True, "resources": {"object_store_share": fits / 2}})
    # without a label budget the cache holds the whole train split, counted from its shards
    from patchray.shards.reader import open_shards
    train_rows = open_shards([str(probe_labeled / "*-train-*.parquet")]).num_rows
    with pytest.raises(ResourceError, match=rf"cache_decoded: {train_rows} crops of 100x200"):
        search("all", finetune={"labels": None, "cache_decoded": True,
                                "resources": {"object_store_share": fits / 10}})
    # pretraining's cache is checked the same way, on its shards' rows
    with pytest.raises(ResourceError, match=r"cache_decoded: 900 crops of 100x200"):
        search("pre", pretrain={"cache_decoded": True, "resources": {"object_store_share": fits / 100}})
    for name in ("ft", "all", "pre"):  # no trial started: nothing trained, cached or scored
        assert not (tmp_path / name / "trials").exists() and not (tmp_path / "pretrain_cache").exists()
