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


def test_benchmark_command_lines_take_data_and_overrides_and_refuse_unknown_keys():
    from patchray.config import ConfigError
    from patchray.train.cli import parse_bench_ingest, parse_bench_memory, parse_bench_train

    ingest = parse_bench_ingest(["copies=3", "task.patches_per_crop=16", "--data", "a/*.parquet", "b"])
    assert ingest.data == ["a/*.parquet", "b"] and ingest.copies == 3 and ingest.task.patches_per_crop == 16
    assert parse_bench_memory(["scale=5", "--out", "x"]).scale == 5
    train = parse_bench_train(["threads=[2]", "compile=aot_eager"])
    assert train.threads == [2] and train.compile == "aot_eager"
    with pytest.raises(ConfigError):
        parse_bench_train(["copies=3"])  # an ingest key, unknown here
