import numpy as np
import pytest
import torch

from patchray import config as configlib
from patchray.bench.train import TrainBenchConfig, against_plain, compare, format_markdown, steady_rate, train_epochs


def _history(rates, patches=1000):
    return [{"patches": patches, "seconds": patches / r, "wait_s": 0.1 * patches / r, "loss": 1.0} for r in rates]


def test_steady_rate_leaves_the_warm_up_epoch_out():
    assert steady_rate(_history([10.0, 100.0, 100.0])) == pytest.approx(100.0)


def test_compare_reports_ratio_overhead_and_goal():
    row = compare(2, _history([50, 100, 100]), 30.0, _history([40, 95, 95]), 50.0)
    assert row["ratio"] == 0.95 and row["overhead"] == 0.05 and row["met"]
    assert row["ray_data_wait_frac"] == pytest.approx(0.1)
    slow = compare(2, _history([50, 100, 100]), 30.0, _history([40, 80, 80]), 50.0)
    assert not slow["met"] and slow["overhead"] == 0.2
    text = format_markdown({"machine": {"cores": 2, "cpu": "x"}, "model": "tiny", "device": "cpu",
                            "patches_per_step": 128,
                            "amp": False, "channels_last": False, "compile": "", "goal_overhead": 0.1,
                            "runs": [row, slow]})
    assert "| 2 | 100 | 95 | 0.950 | <= 10%: met | 10% |" in text and "not met" in text


def test_the_pipeline_is_held_against_the_plain_loop_at_its_threads():
    runs = [compare(threads, _history([50, rate, rate]), 30.0, _history([40, 95, 95]), 50.0)
            for threads, rate in ((2, 100), (1, 80))]
    pipeline = {"epochs": 2, "decode_on": "trainer", "patches_per_s_per_worker": 92, "data_wait_frac": 0.04,
                "resources": "1 worker", "output": "x"}
    fed = against_plain(pipeline, runs)
    assert fed["plain_patches_per_s"] == 100 and fed["vs_plain"] == 0.92 and fed["overhead"] == 0.08 and fed["met"]
    assert not against_plain(pipeline | {"patches_per_s_per_worker": 85}, runs)["met"]
    # a worker of one torch thread is held against the one-thread loop, not the faster two-thread one
    one = against_plain(pipeline | {"torch_threads": 1}, runs)
    assert one["plain_patches_per_s"] == 80 and one["vs_plain"] == 1.15 and one["met"]
    text = format_markdown({"machine": {"cores": 2, "cpu": "x"}, "model": "tiny", "device": "cuda",
                            "patches_per_step": 1024, "amp": True, "channels_last": True, "compile": "",
                            "goal_overhead": 0.1, "runs": runs, "pipeline": fed})
    assert "waiting for data 4% of the time" in text
    assert "(100 patches/s): 0.920x, Ray Train and Ray Data together cost 8% (goal <= 10%: met)" in text
    faster = against_plain(pipeline | {"patches_per_s_per_worker": 120}, runs)
    assert faster["overhead"] == -0.2 and faster["met"]
    assert "cost nothing measurable (goal" in format_markdown(
        {"machine": {"cores": 2, "cpu": "x"}, "model": "tiny", "device": "cpu", "patches_per_step": 128, "amp": False,
         "channels_last": True, "compile": "", "goal_overhead": 0.1, "runs": runs, "pipeline": faster})


def test_train_epochs_learns_and_checkpoints_every_epoch():
    cfg = configlib.to_dict(TrainBenchConfig(epochs=3, patches_per_step=64, device="cpu"))
    crops = np.random.default_rng(0).integers(0, 256, (32, 200, 100, 3), dtype=np.uint8)
    saved = []
    history = train_epochs(cfg, crops, [f"c{i}" for i in range(32)], torch.device("cpu"),
                           lambda state: saved.append({k: v.clone() for k, v in state.items()}))
    assert [h["patches"] for h in history] == [32 * 8] * 3  # 4 steps of 8 crops x 8 patches each epoch
    assert len(saved) == 3 and all(any(k.startswith("trunk.") for k in s) for s in saved)
    moved = [k for k in saved[0] if not torch.equal(saved[0][k], saved[-1][k])]
    assert any(k.startswith("trunk.") for k in moved) and any(k.startswith("head.") for k in moved)


def test_config_refuses_what_would_not_run():
    with pytest.raises(ValueError, match="multiple"):
        TrainBenchConfig(patches_per_step=100)
    with pytest.raises(configlib.ConfigError, match="compile: 'turbo' is not one of"):
        configlib.load(TrainBenchConfig, None, ["compile=turbo"])
    with pytest.raises(ValueError, match="threads"):
        TrainBenchConfig(threads=[0])
    assert TrainBenchConfig(threads=[3]).thread_counts() == [3]
    assert TrainBenchConfig().thread_counts()[0] >= 1
