"""The checks a search config gets before anything starts."""
import os

import pytest

from patchray import config as configlib
from patchray.tune.tuner import TuneConfig


def test_a_search_whose_grace_period_leaves_nothing_to_judge_is_refused_at_the_start():
    cfg = configlib.build(TuneConfig, {"grace_period": 4, "finetune": {"epochs": 4}})
    with pytest.raises(configlib.ConfigError, match="grace_period 4 must be below the fine-tuning epochs"):
        cfg.check()
    configlib.build(TuneConfig, {"grace_period": 4, "scheduler": "fifo", "finetune": {"epochs": 4}}).check()
    with pytest.raises(configlib.ConfigError, match="confirm_top_k must be >= 0 and confirm_seeds >= 1"):
        configlib.build(TuneConfig, {"confirm_seeds": 0})


def test_grid_search_lists_only_the_pretext_combinations_that_fit(tmp_path):
    from patchray.tune.trial import PRETEXT
    from patchray.tune.tuner import _search_parts

    cfg = configlib.build(TuneConfig, {
        "search": "grid", "scheduler": "fifo",
        "space": {"pretrain": {"task.patch_size": {"choice": [32, 48]}, "task.grid": {"choice": ["2x4", "3x6"]}},
                  "finetune": {"optim.lr": {"choice": [0.002, 0.004]}}}})
    param_space, search, _, said = _search_parts(cfg, cfg.search_space(), cfg, tmp_path, False, print)
    assert search is None and param_space["finetune.optim.lr"] == {"grid_search": [0.002, 0.004]}
    # 48 px patches do not fit 3 columns of a 100 px crop: that combination is never run
    assert [(c["pretrain.task.patch_size"], c["pretrain.task.grid"]) for c in param_space[PRETEXT]["grid_search"]] \
        == [(32, "2x4"), (32, "3x6"), (48, "2x4")]
    assert any(line.startswith("1 of 4 pretext combinations do not fit the crop") and "left out" in line
               for line in said)


def test_the_probe_objective_refuses_what_it_cannot_score_at_the_start():
    space = {"pretrain": {"task.patch_size": {"choice": [24, 32]}}}
    ok = configlib.build(TuneConfig, {"objective": "probe", "space": space})
    ok.check()  # pretext values only, fine-tuning data as folders: fine, and ASHA's rungs are not judged
    with pytest.raises(configlib.ConfigError, match=r"objective probe fine-tunes no trial.*finetune.optim.lr"):
        configlib.build(TuneConfig, {"objective": "probe"}).check()  # the default space searches the lr
    with pytest.raises(configlib.ConfigError, match="finetune.train_data / val_data globs are not read"):
        configlib.build(TuneConfig, {"objective": "probe", "space": space,
                                     "finetune": {"train_data": ["a/*-train-*.parquet"]}}).check()
    with pytest.raises(configlib.ConfigError, match="objective"):
        configlib.build(TuneConfig, {"objective": "knn"})


def test_tunes_own_status_tables_show_only_with_verbose(monkeypatch):
    from patchray.tune.tuner import tune_verbosity

    monkeypatch.delenv("PATCHRAY_VERBOSE", raising=False)
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    assert tune_verbosity() == 0
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"   # the reporter that verbosity 0 silences
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")    # a user's choice stands
    assert tune_verbosity() == 0 and os.environ["RAY_AIR_NEW_OUTPUT"] == "1"
    monkeypatch.setenv("PATCHRAY_VERBOSE", "1")
    assert tune_verbosity() == 1
