from patchray.tune.bench import compare, markdown


def summary(best, epochs, trials, unfinished=0):
    return {"metric": "val_mA", "trials": trials, "epochs_spent": epochs, "wall_s": 60.0,
            "best": {"val_mA": best, "params": {"finetune.optim.lr": 0.002}},
            "status": {"completed": trials - unfinished, "unfinished": unfinished}}


def test_goal_needs_both_closeness_and_savings():
    met = compare(summary(0.502, 72, 12), summary(0.498, 20, 8))
    assert met["gap_points"] == 0.4 and met["epoch_share"] == round(20 / 72, 3) and met["goal"]["met"]
    assert not compare(summary(0.502, 72, 12), summary(0.480, 20, 8))["goal"]["met"]   # 2.2 points worse
    assert not compare(summary(0.502, 72, 12), summary(0.502, 40, 8))["goal"]["met"]   # 56% of the epochs
    unfinished = compare(summary(0.502, 72, 12), summary(0.502, 9, 3, unfinished=1))
    assert not unfinished["goal"]["met"]
    assert "re-run to complete the benchmark" in markdown(unfinished)
    assert "| Optuna TPE + ASHA | 8 | 20 (28%) | 49.80 (-0.40) |" in markdown(met)
