"""The probe objective's agreement with fine-tuning, on hand-made runs whose answer is known."""
import pytest

from patchray.tune import probe_agreement as pa
from patchray.tune.replay import Curves


def _key(patch):
    return (("pretrain.task.patch_size", patch),)


def _runs(values):
    """{patch: {lr: [final value per seed]}} -> runs."""
    return [{"pretext": _key(patch), "setting": (("finetune.optim.lr", lr),), "value": v}
            for patch, by_lr in values.items() for lr, seeds in by_lr.items() for v in seeds]


def test_the_objective_of_a_pretext_configuration_is_its_best_setting_averaged_over_seeds():
    truth = pa.finetune_objective(_runs({24: {0.001: [0.50, 0.54], 0.01: [0.55, 0.45]}, 32: {0.001: [0.60]}}))
    assert truth == {_key(24): pytest.approx(0.52), _key(32): pytest.approx(0.60)}


def test_a_probe_that_ranks_as_fine_tuning_agrees_fully_and_loses_nothing():
    truth = {_key(16): 0.50, _key(24): 0.55, _key(32): 0.60}
    same = pa.agreement(truth, {_key(16): 0.1, _key(24): 0.2, _key(32): 0.3})
    assert same["spearman"] == pytest.approx(1.0) and same["kendall"] == pytest.approx(1.0)
    assert same["pick_regret_points"] == 0 and same["probe_pick"] == {"pretrain.task.patch_size": 32}
    assert same["finetune_spread_points"] == pytest.approx(10.0)
    reversed_ = pa.agreement(truth, {_key(16): 0.3, _key(24): 0.2, _key(32): 0.1})
    assert reversed_["spearman"] == pytest.approx(-1.0) and reversed_["pick_regret_points"] == pytest.approx(10.0)
    flat = pa.agreement(truth, {_key(16): 0.2, _key(24): 0.2, _key(32): 0.2})
    assert flat["spearman"] is None  # a constant ranking correlates with nothing
    assert "Spearman's rho n/a" in pa.markdown(flat)


def test_every_pretext_configuration_needs_a_probe_score():
    with pytest.raises(ValueError, match="no probe score.*32"):
        pa.agreement({_key(24): 0.5, _key(32): 0.6}, {_key(24): 0.1})


def test_recorded_curves_become_runs_keyed_by_their_pretext_part():
    curves = Curves.from_records([
        {"params": {"pretrain.task.patch_size": p, "finetune.optim.lr": lr}, "seed": s, "curve": [0.4, v]}
        for p, lr, s, v in [(24, 0.001, 0, 0.50), (24, 0.001, 1, 0.52), (24, 0.01, 0, 0.49), (32, 0.001, 0, 0.6)]])
    truth = pa.finetune_objective(pa.runs_of(curves))
    assert truth == {_key(24): pytest.approx(0.51), _key(32): pytest.approx(0.6)}
