"""The checks a search config gets before anything starts."""
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
