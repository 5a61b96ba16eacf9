"""The linear probe of frozen trunks (jobs/evaluate.py) on a tiny labeled set: outputs, the budgets' crops, the
features cache, refused inits and the aggregate. No Ray; about 100 crops embedded per init."""
import json
import shutil

import numpy as np
import pytest
import torch

from patchray import config as configlib
from patchray.experiments.linear_eval import (
    LinearEvalConfig,
    SplitFeatures,
    aggregate,
    budget_crops,
    init_labels,
    resolved_input,
    run_linear_eval,
    score_table,
    train_pool,
)
from patchray.models import PretextNet, build_trunk
from patchray.models.init import InitError, parse_init
from patchray.patches import channel_stats
from patchray.shards.reader import open_shards
from patchray.train.finetune import choose_budget

BUDGETS = [10, None]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    from patchray.shards.generate import generate_synthetic

    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root, num_crops=0, labeled=120, seed=7, workers=1, progress=False)  # 60 / 30 / 30 crops
    return root / "labeled"


def _pretraining_run(folder, weights_seed: int):
    """A fake pretraining run folder: a seeded PretextNet's checkpoint and a dataset normalisation record
    (per-pixel statistics, as pretraining writes them)."""
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(weights_seed)
    torch.save(PretextNet(build_trunk("tiny_d25"), 18).state_dict(), folder / "checkpoints" / "pretext.pt")
    stats = torch.Generator().manual_seed(0)
    mean = 0.45 + 0.02 * torch.rand(3, 32, 32, generator=stats)
    std = 0.25 + 0.02 * torch.rand(3, 32, 32, generator=stats)
    torch.save({"mode": "dataset", "mean": mean, "std": std}, folder / "checkpoints" / "normalization.pt")
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return _pretraining_run(tmp_path_factory.mktemp("pretrain"), weights_seed=0)


def _cfg(out, data, inits, **overrides) -> LinearEvalConfig:
    base = {"out": str(out), "name": "ev", "data": [str(data)], "inits": inits, "budgets": BUDGETS, "seeds": SEEDS,
            "max_val_crops": 20, "max_test_crops": 20}
    return configlib.build(LinearEvalConfig, base | overrides)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, labeled, pretrained):
    out = tmp_path_factory.mktemp("out")
    lines = []
    result = run_linear_eval(_cfg(out, labeled, ["random", f"patchtask:{pretrained}"]), log=lines.append)
    return out, result, lines


def test_outputs_runs_and_table(first_run):
    out, result, lines = first_run
    folder = out / "ev"
    for name in ("linear_eval.json", "linear_eval.md", "low_shot_linear.png", "config.yaml",
                 "features/random.npz", "features/patchtask.npz"):
        assert (folder / name).stat().st_size > 0, name
    assert json.loads((folder / "linear_eval.json").read_text()) == result
    assert result["crops"] == {"train": 60, "val": 20, "test": 20}
    for init in ("random", "patchtask"):
        assert result["inits"][init]["features"] == "embedded"
        for budget in BUDGETS:
            runs = [r for r in result["runs"] if r["init"] == init and r["budget"] == budget]
            assert sorted(r["seed"] for r in runs) == SEEDS
            assert all(r["train_crops"] == (budget or 60) for r in runs)
            assert all(0 <= r["test"]["mA"] <= 1 and 0 <= r["val"]["mA"] <= 1 for r in runs)
        row = next(r for r in result["table"] if r["init"] == init and r["budget"] is None)
        assert row["seeds"] == 2 and row["test"]["mA"]["std"] == 0  # every seed fits the same crops
    # the PatchTask init's pretraining normalisation, its per-pixel statistics pooled per channel
    assert result["inits"]["patchtask"]["input"]["normalize"] == "dataset"
    assert result["inits"]["random"]["input"]["normalize"] == "patch"
    assert "copied 16 of 16" in result["inits"]["patchtask"]["transfer"]
    text = (folder / "linear_eval.md").read_text()
    assert "| init | 10 | all (60) |" in text and "| patchtask |" in text and "## Test mAP" in text
    assert any("embedding 60 train crops with random, patchtask" in line for line in lines)
    assert any("crops/s" in line for line in lines)
    assert "patchtask:/" in (folder / "config.yaml").read_text()  # recorded absolute


def test_each_budget_fits_the_crops_fine_tuning_draws(first_run, labeled):
    out, _, _ = first_run
    shards = open_shards([str(labeled / "*-train-*.parquet")])
    with np.load(out / "ev" / "features" / "random.npz") as cached:
        train = SplitFeatures(*(cached[f"train_{key}"] for key in ("ids", "features", "labels", "bad")))
    for budget in (10, 30):
        for seed in SEEDS:
            rows = train.rows(budget_crops(shards, budget, seed))
            assert set(train.ids[rows].tolist()) == choose_budget(shards, budget, seed)
    assert len(train.rows(budget_crops(shards, None, 0))) == 60


def test_a_train_cap_keeps_every_budgets_crops(labeled):
    shards = open_shards([str(labeled / "*-train-*.parquet")])
    cfg = _cfg("unused", labeled, ["random"], budgets=[5, 10, None], max_train_crops=25)
    pool = train_pool(shards, cfg)
    assert len(pool) == 25
    assert all(choose_budget(shards, budget, seed) <= pool for budget in (5, 10) for seed in SEEDS)
    with pytest.raises(configlib.ConfigError, match="max_train_crops=12 is below"):
        train_pool(shards, _cfg("unused", labeled, ["random"], budgets=[10], max_train_crops=12))


def test_a_rerun_reuses_the_features_and_a_changed_checkpoint_is_embedded_again(first_run, labeled, pretrained,
                                                                                tmp_path):
    out, first, _ = first_run
    lines = []
    again = run_linear_eval(_cfg(out, labeled, ["random", f"patchtask:{pretrained}"]), log=lines.append)
    assert not any("embedding" in line for line in lines), lines
    assert all(info["features"] == "reused" for info in again["inits"].values())
    assert again["runs"] == first["runs"] and again["table"] == first["table"]

    # The same weights elsewhere are the same features, whatever the budgets and seeds (without a train cap every
    # train crop is embedded); other weights at that place are embedded again.
    shutil.copytree(out / "ev", tmp_path / "ev")
    moved = tmp_path / "moved"
    shutil.copytree(pretrained, moved)
    fewer = {"budgets": [10], "seeds": [0]}
    result = run_linear_eval(_cfg(tmp_path, labeled, ["random", f"patchtask:{moved}"], **fewer), log=lambda _: None)
    assert result["inits"]["patchtask"]["features"] == "reused"
    assert result["runs"] == [r for r in first["runs"] if r["budget"] == 10 and r["seed"] == 0]
    _pretraining_run(moved, weights_seed=1)
    lines = []
    result = run_linear_eval(_cfg(tmp_path, labeled, ["random", f"patchtask:{moved}"], **fewer), log=lines.append)
    assert result["inits"]["random"]["features"] == "reused"
    assert result["inits"]["patchtask"]["features"] == "embedded"
    assert any("embedding 60 train crops with patchtask on" in line for line in lines), lines
    assert any("other settings (trunk:" in line for line in lines), lines  # says what changed
    changed = next(r for r in result["runs"] if r["init"] == "patchtask")
    assert changed != next(r for r in first["runs"] if r["init"] == "patchtask" and r["budget"] == 10)


def test_an_unknown_or_missing_init_is_refused_at_the_start(labeled, tmp_path):
    with pytest.raises(configlib.ConfigError, match="init 'patchtsk:runs/x'"):
        configlib.load(LinearEvalConfig, None, ["inits=[random, patchtsk:runs/x]"])
    with pytest.raises(configlib.ConfigError, match="twice"):
        configlib.load(LinearEvalConfig, None, ["inits=[random, random]"])
    with pytest.raises(InitError, match="no checkpoint at"):
        run_linear_eval(_cfg(tmp_path, labeled, ["random", f"patchtask:{tmp_path / 'nowhere'}"]), log=lambda _: None)
    assert not (tmp_path / "ev").exists()  # nothing embedded, nothing written


def test_the_job_takes_inits_and_data_flags_with_overrides_anywhere():
    from patchray.cli import parse

    argv = ["--inits", "random", "patchtask:runs/x", "budgets=[50, null]", "--data", "a", "b", "max_test_crops=100"]
    cfg = parse("evaluate", argv)  # the overrides are not taken for inits or folders
    assert cfg.inits == ["random", "patchtask:runs/x"] and cfg.data == ["a", "b"]
    assert cfg.budgets == [50, None] and cfg.max_test_crops == 100
    # the same for every job with a multi-value flag; a path containing "=" stays a path
    pre = parse("pretrain", ["--data", "d1", "x=y/shards", "epochs=5"])
    assert pre.data == ["d1", "x=y/shards"] and pre.epochs == 5


def test_normalisation_follows_the_pretraining(pretrained):
    spec = parse_init(f"patchtask:{pretrained}")
    record = torch.load(pretrained / "checkpoints" / "normalization.pt", weights_only=True)
    mean, std = channel_stats(record["mean"], record["std"])
    given = resolved_input(LinearEvalConfig(inits=["random"]), spec)
    assert given == {"normalize": "dataset", "normalize_mean": mean, "normalize_std": std}
    cfg = configlib.build(LinearEvalConfig, {"inits": ["random"], "input": {"normalize": "patch"}})
    with pytest.raises(InitError, match="pretrained with input.normalize='dataset'"):
        resolved_input(cfg, spec)


def test_labels_tell_several_checkpoints_apart(tmp_path):
    inits = ["random", f"patchtask:{tmp_path / 'a'}", f"patchtask:{tmp_path / 'b' / 'checkpoints' / 'pretext.pt'}"]
    assert init_labels(inits) == ["random", "patchtask:a", "patchtask:pretext"]
    assert init_labels(["random", f"patchtask:{tmp_path / 'a'}"]) == ["random", "patchtask"]


def _run(init, budget, seed, ma, map_=None):
    return {"init": init, "budget": budget, "seed": seed, "train_crops": budget or 60,
            "val": {"mA": ma}, "test": {"mA": ma, "mAP": map_}}


def test_aggregate_means_and_stds_over_seeds():
    runs = [_run("random", 10, 0, 0.50, 0.30), _run("random", 10, 1, 0.54, 0.34), _run("random", 10, 2, 0.58),
            _run("patchtask", 10, 0, 0.60), _run("patchtask", 10, 1, 0.70),
            _run("random", None, 0, 0.65), _run("patchtask", None, 0, 0.75)]
    table = aggregate(runs, ["random", "patchtask"], [10, None])
    row = next(r for r in table if r["init"] == "random" and r["budget"] == 10)
    assert row["seeds"] == 3 and row["train_crops"] == 10
    # mean of 0.50, 0.54, 0.58 = 0.54; population std = sqrt((0.04^2 + 0 + 0.04^2) / 3) = 0.0326...
    assert row["test"]["mA"]["mean"] == pytest.approx(0.54)
    assert row["test"]["mA"]["std"] == pytest.approx(np.sqrt(2 * 0.04 ** 2 / 3))
    assert row["test"]["mAP"] == {"mean": pytest.approx(0.32), "std": pytest.approx(0.02)}  # None left out
    patchtask = next(r for r in table if r["init"] == "patchtask" and r["budget"] == 10)
    assert patchtask["test"]["mA"] == {"mean": pytest.approx(0.65), "std": pytest.approx(0.05)}
    assert patchtask["test"]["mAP"] == {"mean": None, "std": None}
    text = score_table(table, "mA")
    assert "| init | 10 | all (60) |" in text
    assert "| random | 54.0 ± 3.3 | 65.0 ± 0.0 |" in text and "| patchtask | 65.0 ± 5.0 | 75.0 ± 0.0 |" in text
    assert "| patchtask | – | – |" in score_table(table, "mAP")
