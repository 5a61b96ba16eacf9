import pytest

from patchray import config as configlib
from patchray.train.cli import parse_bench_tune, parse_tune


def test_tune_flags_set_samples_time_budget_and_name():
    cfg = parse_tune(["--samples", "12", "--time-budget", "3600", "--name", "wide", "finetune.epochs=8"])
    assert (cfg.num_samples, cfg.time_budget_s, cfg.name) == (12, 3600.0, "wide")
    assert cfg.finetune["epochs"] == 8 and cfg.finetune_epochs() == 8


def test_tune_refuses_unknown_keys_and_bench_takes_overrides():
    with pytest.raises(configlib.ConfigError, match="unknown key"):
        parse_tune(["num_sample=3"])
    assert parse_bench_tune(["num_samples=5"]).num_samples == 5


def test_a_dotted_key_inside_a_mapping_field_keeps_the_rest_of_its_default():
    cfg = parse_tune(["finetune.epochs=8", "pretrain.task.patch_size=24"])
    assert cfg.finetune["labels"] == 250 and cfg.finetune["epochs"] == 8
    assert cfg.pretrain["task"] == {"patch_size": 24} and cfg.pretrain["epochs"] == 2
