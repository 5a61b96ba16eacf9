"""jobs/bench_tune.py's analysis half on a hand-made recording: curves read back from fine-tuning runs' metrics,
the replay's verdict written as JSON, Markdown and a plot (the recording half runs a real grid: tests/e2e)."""
import json

import pytest

from patchray import config as configlib
from patchray.tune.bench import CURVES, SEED_KEY, TuneBenchConfig, curve_of, run_bench


def test_a_run_s_curve_is_its_validation_objective_per_epoch(tmp_path):
    rows = [{"epoch": 1, "val_mA": 0.52, "loss": 1.0}, {"epoch": 0, "val_mA": 0.50}, {"epoch": 2, "val_mA": 0.55}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert curve_of(tmp_path, "mA") == [0.50, 0.52, 0.55]


def test_replaying_a_recording_writes_the_verdict_and_a_late_bloomer_fails_the_goal(tmp_path):
    # the best configuration ("late") trails everyone until its last epoch: ASHA cuts it, the goal is missed
    curves = []
    for lr, curve in ((0.001, [0.50, 0.51, 0.52, 0.53]), (0.002, [0.52, 0.53, 0.54, 0.55]),
                      (0.004, [0.40, 0.41, 0.42, 0.70]), (0.008, [0.51, 0.52, 0.53, 0.54])):
        for seed in range(2):
            curves.append({"params": {"finetune.optim.lr": lr}, "seed": seed, "curve": curve})
    path = tmp_path / CURVES
    path.write_text("".join(json.dumps(c) + "\n" for c in curves))
    cfg = configlib.build(TuneBenchConfig, {"out": str(tmp_path), "curves": str(path), "repeats": 20})
    lines = []
    result = run_bench(cfg, log=lines.append)
    assert result["n_configs"] == 4 and result["grid_epochs"] == 16 and result["budget_epochs"] == 6
    assert result["true_best"]["params"] == {"finetune.optim.lr": 0.004}
    assert result["strategies"]["grid"]["median_regret"] == 0
    assert result["strategies"]["tpe+asha"]["median_regret"] > 1 and not result["goal"]["met"]
    assert result["seed_noise_points"] == 0 and result["spread_points"] == pytest.approx(17.0)
    out = tmp_path / "bench_tune"
    assert "NOT met" in (out / "bench_tune.md").read_text()
    assert (out / "bench_tune.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "bench_tune.json").read_text())["goal"]["met"] is False


def test_the_seed_is_the_benchmark_s_own_dimension():
    with pytest.raises(configlib.ConfigError, match=f"{SEED_KEY} is the benchmark's own dimension"):
        configlib.build(TuneBenchConfig, {"space": {"finetune": {"seed": {"choice": [0, 1]}}}})
    grid = configlib.build(TuneBenchConfig, {"seeds": 3}).grid_config()
    assert [p.name for p in grid.search_space().params][-1] == SEED_KEY and grid.search == "grid"
    assert grid.confirm_top_k == 0 and grid.scheduler == "fifo"
