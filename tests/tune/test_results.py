import csv
import math

import pytest

from patchray.report.plots import plot_heatmap, plot_importances, plot_tune_objective
from patchray.tune import results as res
from patchray.tune.space import SearchSpace

SPACE = SearchSpace.from_dict({
    "pretrain": {"task.patch_size": {"choice": [24, 32]}, "task.grid": {"choice": ["2x4", "3x6"]}},
    "finetune": {"optim.lr": {"loguniform": [0.001, 0.01]}}})


def record(i, size, grid, lr, objective, status=res.COMPLETED, epochs=4):
    return res.TrialRecord(trial_id=f"t{i}", params={"pretrain.task.patch_size": size, "pretrain.task.grid": grid,
                                                     "finetune.optim.lr": lr},
                           status=status, epochs=epochs, objective=objective,
                           metrics={"val_mAP": 0.3, "test_mA": objective}, folder=f"/runs/t{i}")


def test_status_best_and_epochs_spent():
    assert res.trial_status(4, 4, False) == res.COMPLETED
    # short of its epochs: ASHA's when its rung records say so, else the time budget's (never passed off as ASHA's)
    assert res.trial_status(2, 4, False, asha_stopped=True) == res.STOPPED == "stopped by ASHA"
    assert res.trial_status(2, 4, False) == res.OUT_OF_TIME == "stopped by the time budget"
    assert res.trial_status(0, 4, False, diverged=True) == res.DIVERGED
    assert res.trial_status(4, 4, True) == res.ERROR
    records = [record(0, 24, "2x4", 0.002, 0.55), record(1, 32, "3x6", 0.004, 0.70, res.STOPPED, 1),
               record(2, 32, "2x4", 0.003, 0.60), record(3, 24, "3x6", 0.005, 0.60)]
    # the stopped trial's higher number came from fewer epochs: not the best; ties go to the earlier trial
    assert res.best_record(records).trial_id == "t2"
    assert res.epochs_spent(records) == 13
    assert res.best_record([record(0, 24, "2x4", 0.002, None, res.ERROR, 0)]) is None


def test_csv_and_markdown_list_every_trial_with_its_parameters(tmp_path):
    records = [record(0, 24, "2x4", 0.002, 0.55), record(1, 32, "3x6", 0.004, 0.41, res.STOPPED, 1)]
    res.write_csv(records, SPACE, "val_mA", tmp_path / "t.csv")
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [r["trial"] for r in rows] == ["t0", "t1"]
    assert rows[1]["pretrain.task.grid"] == "3x6" and rows[1]["status"] == "stopped by ASHA"
    assert float(rows[0]["val_mA"]) == 0.55 and rows[0]["test_mA"] == "0.55"
    text = res.table_markdown(records, SPACE, "val_mA")
    lines = text.splitlines()
    assert lines[0] == "| trial | status | epochs | val_mA | task.patch_size | task.grid | optim.lr |"
    assert lines[2].startswith("| t0 (best) | completed | 4 | 0.550 | 24 | 2x4 | 0.002")
    assert "5 fine-tuning epochs in all; 1 completed, 1 stopped early by ASHA, 0 failed" in text
    cut = res.table_markdown(records + [record(2, 24, "3x6", 0.003, 0.5, res.OUT_OF_TIME, 2),
                                        record(3, 24, "3x6", 0.01, 0.0, res.DIVERGED, 0)], SPACE, "val_mA")
    assert "1 stopped by the time budget, 1 diverged (scored 0)" in cut


def test_importances_find_the_parameter_that_drives_the_objective():
    # the objective follows the learning rate alone; patch size and grid are noise
    records = []
    for i in range(res.IMPORTANCE_MIN_TRIALS):
        lr = 0.001 * (1 + i % 6)
        records.append(record(i, (24, 32)[i % 2], ("2x4", "3x6")[(i // 2) % 2], lr, 0.4 + 30 * lr))
    scores, basis = res.importances(records, SPACE)
    assert basis == f"completed trials, final objective ({res.IMPORTANCE_MIN_TRIALS})"
    assert set(scores) == {p.name for p in SPACE.params}
    assert sum(scores.values()) == pytest.approx(1.0)
    assert max(scores, key=scores.get) == "finetune.optim.lr" and scores["finetune.optim.lr"] > 0.8
    # one trial short of the threshold: nothing rather than a ranking of noise, and the reason says so
    scores, basis = res.importances(records[1:], SPACE)
    assert scores == {} and basis == (f"not computed: {res.IMPORTANCE_MIN_TRIALS - 1} completed trial(s), 0 with a "
                                      f"value after the grace period; an importance needs "
                                      f"{res.IMPORTANCE_MIN_TRIALS} judged alike")
    # every trial scored the same: no parameter mattered more than another
    same = [record(i, 24 + 8 * (i % 2), "2x4", 0.001 * (i + 1), 0.5) for i in range(res.IMPORTANCE_MIN_TRIALS)]
    assert res.importances(same, SPACE)[0] == {}


def test_with_most_trials_stopped_early_importances_use_everyone_s_value_after_the_grace_period():
    records = []
    for i in range(res.IMPORTANCE_MIN_TRIALS):
        size = (24, 32)[i % 2]
        r = record(i, size, "2x4", 0.002, 0.5, res.STOPPED if i > 1 else res.COMPLETED, 1 if i > 1 else 4)
        r.at_grace = 0.40 + (0.05 if size == 32 else 0.0) + 0.001 * i  # the patch size decides
        records.append(r)
    scores, basis = res.importances(records, SPACE)
    assert basis == f"all trials, objective after the grace period ({res.IMPORTANCE_MIN_TRIALS})"
    assert max(scores, key=scores.get) == "pretrain.task.patch_size"


def test_heatmap_keeps_the_best_objective_per_cell_and_marks_untried_cells():
    records = [record(0, 32, "3x6", 0.002, 0.50), record(1, 32, "3x6", 0.003, 0.58),
               record(2, 24, "2x4", 0.004, 0.52), record(3, 48, "2x4", 0.004, None, res.ERROR, 0)]
    sizes, grids, matrix = res.heatmap(records)
    assert sizes == [24, 32] and grids == ["2x4", "3x6"]
    assert matrix[1][1] == 0.58 and matrix[0][0] == 0.52
    assert math.isnan(matrix[0][1]) and math.isnan(matrix[1][0])
    assert res.heatmap([res.TrialRecord("x", {"finetune.optim.lr": 0.1}, res.COMPLETED, 1, 0.5)]) is None


def test_tune_plots_are_written(tmp_path):
    records = [record(0, 24, "2x4", 0.002, 0.55), record(1, 32, "3x6", 0.004, 0.41, res.STOPPED, 1)]
    paths = [plot_tune_objective([{"objective": r.objective, "status": r.status, "epochs": r.epochs} for r in records],
                                 "mA", tmp_path / "o.png"),
             plot_importances({"finetune.optim.lr": 0.7, "pretrain.task.grid": 0.3}, tmp_path / "i.png", "test"),
             plot_heatmap(*res.heatmap(records), "mA", tmp_path / "h.png")]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_an_interrupted_trial_is_unfinished_and_says_how_to_finish():
    assert res.trial_status(2, 4, False, ended=False) == res.UNFINISHED
    assert res.trial_status(2, 4, True, ended=False) == res.ERROR
    text = res.table_markdown([record(0, 24, "2x4", 0.002, 0.5), record(1, 24, "2x4", 0.003, 0.4, res.UNFINISHED, 1)],
                              SPACE, "val_mA")
    assert "1 unfinished (re-run the same command to resume)" in text


def test_the_top_configurations_are_confirmed_over_seeds_and_the_best_mean_wins():
    records = [record(0, 24, "2x4", 0.002, 0.62), record(1, 32, "3x6", 0.004, 0.60),
               record(2, 24, "2x4", 0.002, 0.61),  # the same configuration as t0: confirmed once
               record(3, 32, "2x4", 0.003, 0.70, res.STOPPED, 1), record(4, 24, "3x6", 0.005, 0.55)]
    top = res.top_configurations(records, 2)
    assert [r.trial_id for r in top] == ["t0", "t1"]  # not the stopped t3, not t2 (t0's configuration again)
    lucky = res.Confirmation("t0", top[0].params, [0.62, 0.55, 0.56], {"test_mA": [0.54, 0.55]})
    steady = res.Confirmation("t1", top[1].params, [0.60, 0.60, 0.59], {"test_mA": [0.58, 0.60]})
    # the search's best single trial was a lucky seed: the best mean over seeds wins
    assert res.confirmed_best([lucky, steady]) is steady
    assert steady.mean == pytest.approx(0.59667, abs=1e-4) and steady.std == pytest.approx(0.005774, abs=1e-5)
    assert res.mean_std([0.58, 0.60]) == {"mean": pytest.approx(0.59), "std": pytest.approx(0.014142, abs=1e-5),
                                          "n": 2}
    table = res.confirmation_markdown([lucky, steady], "val_mA", SPACE).splitlines()
    assert table[2].startswith("| t1 (chosen) | 0.597 | 0.005774 | 3 | 0.600, 0.600, 0.590 | 32 | 3x6 |")
    assert table[3].startswith("| t0 | 0.577 |")


def test_near_twin_configurations_are_confirmed_once_and_the_next_distinct_one_instead():
    # lr 0.0027 and 0.0029 lie 3% of the log range [0.001, 0.01] apart: one configuration, confirmed once
    records = [record(0, 32, "2x4", 0.0027, 0.60), record(1, 32, "2x4", 0.0029, 0.59),
               record(2, 32, "2x4", 0.0060, 0.58), record(3, 24, "2x4", 0.0027, 0.57)]
    assert [r.trial_id for r in res.top_configurations(records, 3, SPACE)] == ["t0", "t2", "t3"]
    assert res.near_twins(records[0].params, records[1].params, SPACE)
    assert not res.near_twins(records[0].params, records[2].params, SPACE)   # 0.0027 vs 0.006: 35% of the range
    assert not res.near_twins(records[0].params, records[3].params, SPACE)   # another patch size
    # without the space, only equal configurations are twins
    assert [r.trial_id for r in res.top_configurations(records, 2)] == ["t0", "t1"]
    assert res.top_configurations(records, 0, SPACE) == []   # confirm_top_k 0: nothing to confirm
