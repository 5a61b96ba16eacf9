import pytest

from patchray import config as configlib
from patchray.experiments.compare_inits import CompareConfig, aggregate, table_markdown


def _run(budget, seed, init, ma, map_=0.3):
    return {"budget": budget, "seed": seed, "init": init,
            "test": {"mA": ma, "mAP": map_, "mBER": 1 - ma, "orientation_accuracy": None}}


def test_aggregate_means_stds_and_the_smallest_budget_gain():
    runs = [_run(250, 0, "random", 0.50), _run(250, 0, "patchtask", 0.56),
            _run(250, 1, "random", 0.52), _run(250, 1, "patchtask", 0.54),
            _run(1000, 0, "random", 0.60), _run(1000, 0, "patchtask", 0.61)]
    result = aggregate(runs, ["random", "patchtask"], [250, 1000])
    row = next(r for r in result["table"] if r["budget"] == 250 and r["init"] == "patchtask")
    assert row["mA"]["mean"] == pytest.approx(0.55) and row["mA"]["std"] == pytest.approx(0.01)
    assert row["seeds"] == 2 and row["orientation_accuracy"]["mean"] is None
    assert result["smallest_budget"] == 250
    assert result["patchtask_minus_random_mA"] == pytest.approx(0.04)  # (+0.06 + 0.02) / 2
    assert result["patchtask_minus_random_mA_per_seed"] == pytest.approx([0.06, 0.02])
    table = table_markdown(result)
    assert "| 250 | patchtask | 55.0 ± 1.0 |" in table and "| 1000 | random | 60.0 ± 0.0 |" in table


def test_compare_config_nests_job_configs():
    cfg = configlib.load(CompareConfig, None, ["seeds=[0]", "budgets=[100, 200]", "finetune.epochs=3",
                                               "pretrain.epochs=1", "pretrain.task.preset=pt8"])
    assert cfg.finetune.epochs == 3 and cfg.pretrain.task.num_classes == 8 and cfg.budgets == [100, 200]
    with pytest.raises(configlib.ConfigError, match="unknown key 'finetune.epoch'"):
        configlib.load(CompareConfig, None, ["finetune.epoch=3"])
    with pytest.raises(configlib.ConfigError, match="budgets must be >= 1"):
        configlib.load(CompareConfig, None, ["budgets=[0]"])


def test_a_finished_run_is_reused_only_when_its_identity_matches_and_kept_aside_otherwise(tmp_path):
    import json

    from patchray.experiments.compare_inits import reusable

    folder = tmp_path / "labels250-seed0-random"
    folder.mkdir()
    identity = {"epochs": 15, "labels": 250, "data.train": "fp-a", "workers": 2}
    (folder / "summary.json").write_text(json.dumps({"test": {"mA": 0.6}, "identity": identity}))
    messages = []
    assert reusable(folder, dict(identity), "run", messages.append)["test"]["mA"] == 0.6  # the same run: reused
    assert messages == [] and folder.exists()
    # the settings changed since: not reused; the old run is kept beside, never deleted
    assert reusable(folder, identity | {"epochs": 20}, "labels250-seed0-random", messages.append) is None
    assert not folder.exists()
    (aside,) = tmp_path.glob("labels250-seed0-random.replaced-*")
    assert json.loads((aside / "summary.json").read_text())["identity"] == identity
    assert "epochs: 15 -> 20" in messages[0] and aside.name in messages[0]
    # a run finished before identities were recorded is not taken for a run with one
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"test": {"mA": 0.5}}))
    assert reusable(folder, identity, "run", messages.append) is None
    assert reusable(tmp_path / "never-ran", identity, "run", messages.append) is None


def test_pretraining_and_fine_tuning_must_use_one_trunk():
    with pytest.raises(configlib.ConfigError, match=r"pretrain.model 'tiny_d25' and finetune.model 'resnet18' differ"):
        configlib.load(CompareConfig, None, ["finetune.model=resnet18"])
    assert configlib.load(CompareConfig, None, ["finetune.model=resnet18", "pretrain.model=resnet18"])


def _orientation_only_run(budget, seed, init, ma):
    """A run's test scores on a dataset with an Orientation attribute alone: no mAP of either protocol."""
    return {"budget": budget, "seed": seed, "init": init,
            "test": {"mA": ma, "mAP": None, "mBER": 1 - ma, "orientation_accuracy": ma + 0.1,
                     "parse27k_mAP": None, "parse27k_mBER": 0.7}}


def test_table_shows_both_protocols_and_only_the_metrics_some_run_defines():
    runs = [_run(250, 0, "random", 0.50) | {"test": {"mA": 0.5, "mAP": 0.3, "mBER": 0.5, "orientation_accuracy": 0.4,
                                                     "parse27k_mAP": 0.35, "parse27k_mBER": 0.6}},
            _run(250, 0, "patchtask", 0.56)]  # finished before protocol parse27k existed: no such keys
    table = table_markdown(aggregate(runs, ["random", "patchtask"], [250]))
    assert table.splitlines()[0] == ("| labels | init | mA | mAP | mBER | Orientation acc. | mAP (parse27k) | "
                                     "mBER (parse27k) | seeds |")
    assert "| 250 | random | 50.0 ± 0.0 | 30.0 ± 0.0 | 50.0 ± 0.0 | 40.0 ± 0.0 | 35.0 ± 0.0 | 60.0 ± 0.0 | 1 |" in table
    assert "| 250 | patchtask | 56.0 ± 0.0 | 30.0 ± 0.0 | 44.0 ± 0.0 | – | – | – | 1 |" in table

    only = [_orientation_only_run(100, 0, "random", 0.3), _orientation_only_run(100, 0, "patchtask", 0.4)]
    result = aggregate(only, ["random", "patchtask"], [100])
    assert result["patchtask_minus_random_mA"] == pytest.approx(0.1)
    table = table_markdown(result)
    assert table.splitlines()[0] == "| labels | init | mA | mBER | Orientation acc. | mBER (parse27k) | seeds |"
    assert "| 100 | patchtask | 40.0 ± 0.0 | 60.0 ± 0.0 | 50.0 ± 0.0 | 70.0 ± 0.0 | 1 |" in table


def test_comparison_outputs_for_an_attribute_set_without_map(tmp_path):
    from patchray.experiments.compare_inits import format_result, write_outputs

    runs = [_orientation_only_run(100, 0, "random", 0.3) | {"curve": [(1, 0.25), (2, 0.3)]},
            _orientation_only_run(100, 0, "patchtask", 0.4) | {"curve": [(1, 0.3), (2, 0.4)]}]
    result = aggregate(runs, ["random", "patchtask"], [100]) | {"wall_s": 60.0}
    write_outputs(tmp_path, result, runs)
    text = (tmp_path / "comparison.md").read_text()
    assert "mAP" not in text.split("\n\n")[1] and "comparable with the paper" in text
    assert "+10.0 points" in text
    assert (tmp_path / "comparison.png").stat().st_size > 0 and (tmp_path / "learning_curves.png").stat().st_size > 0
    assert "+10.0 mA points" in format_result(result, tmp_path)
