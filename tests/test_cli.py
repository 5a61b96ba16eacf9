import pytest

from patchray import config as configlib
from patchray.cli import parse


def test_tune_flags_set_samples_time_budget_and_name():
    cfg = parse("tune_finetune", ["--samples", "12", "--time-budget", "3600", "--name", "wide", "finetune.epochs=8"])
    assert (cfg.num_samples, cfg.time_budget_s, cfg.name) == (12, 3600.0, "wide")
    assert cfg.finetune["epochs"] == 8 and cfg.finetune_epochs() == 8


def test_tune_refuses_unknown_keys_and_bench_takes_overrides():
    with pytest.raises(configlib.ConfigError, match="unknown key"):
        parse("tune_finetune", ["num_sample=3"])
    assert parse("bench_tune", ["repeats=5"]).repeats == 5


def test_a_dotted_key_inside_a_mapping_field_keeps_the_rest_of_its_default():
    cfg = parse("tune_finetune", ["finetune.epochs=8", "pretrain.task.patch_size=24"])
    assert cfg.finetune["labels"] == 250 and cfg.finetune["epochs"] == 8
    assert cfg.pretrain["task"] == {"patch_size": 24} and cfg.pretrain["epochs"] == 2


def test_benchmark_command_lines_take_data_and_overrides_and_refuse_unknown_keys():
    from patchray.config import ConfigError

    ingest = parse("bench_ingest", ["copies=3", "task.patches_per_crop=16", "--data", "a/*.parquet", "b"])
    assert ingest.data == ["a/*.parquet", "b"] and ingest.copies == 3 and ingest.task.patches_per_crop == 16
    assert parse("bench_memory", ["scale=5", "--out", "x"]).scale == 5
    train = parse("bench_train", ["threads=[2]", "compile=aot_eager"])
    assert train.threads == [2] and train.compile == "aot_eager"
    with pytest.raises(ConfigError):
        parse("bench_train", ["copies=3"])  # an ingest key, unknown here


def test_flags_win_over_the_file_and_key_value_overrides_win_over_flags(tmp_path):
    config_file = tmp_path / "pretrain.yaml"
    config_file.write_text("name: from-file\nepochs: 4\ndata: [file/*.parquet]\n")
    cfg = parse("pretrain", ["--config", str(config_file), "--name", "from-flag", "--data", "flag/*.parquet"])
    assert (cfg.name, cfg.epochs, cfg.data) == ("from-flag", 4, ["flag/*.parquet"])
    # --data takes every word after it (a path may hold "="), so an override stands before it
    cfg = parse("pretrain", ["--config", str(config_file), "--name", "from-flag", "name=from-override",
                             "data=[override/*.parquet]", "epochs=2", "--data", "flag/*.parquet"])
    assert (cfg.name, cfg.data, cfg.epochs) == ("from-override", ["override/*.parquet"], 2)


def test_every_job_in_the_table_parses_its_defaults_and_has_its_entry_point():
    from pathlib import Path

    from patchray.cli import JOBS

    jobs_dir = Path(__file__).resolve().parents[1] / "jobs"
    for name, job in JOBS.items():
        assert type(parse(name, [])) is job.config_class()
        assert f'main("{name}")' in (jobs_dir / job.prog).read_text(), job.prog


def test_a_bad_key_is_one_line_and_exit_code_2(capsys):
    from patchray.cli import main

    assert main("pretrain", ["epochz=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "epochz" in err and err.count("\n") == 1
