from __future__ import annotations

import json

import numpy as np
import pytest

from patchray.tune.replay import (
    GOAL_STRATEGY,
    STRATEGIES,
    Asha,
    Curves,
    compare,
    markdown,
    replay,
    seed_noise,
    spread,
    summarize,
)

EPOCHS = 4


def curves_of(table: dict[tuple, list[list[float]]], names: tuple[str, ...]) -> Curves:
    """Curves from {values: [seed curve, ...]}, through the records the recorder writes."""
    records = [{"params": dict(zip(names, values)), "seed": seed, "curve": curve}
               for values, seeds in table.items() for seed, curve in enumerate(seeds)]
    return Curves.from_records(records)


def easy_space(seeds: int = 2) -> Curves:
    """3 x 3 configurations whose ranking is the same at every epoch, seeds identical: no noise, no trap."""
    table = {}
    for a in range(3):
        for b in ("x", "y", "z"):
            final = 0.3 + 0.1 * a + 0.05 * "xyz".index(b)
            table[(a, b)] = [[final * epoch / EPOCHS for epoch in range(1, EPOCHS + 1)]] * seeds
    return curves_of(table, ("a", "b"))


def noisy_space() -> Curves:
    """The easy space with three seeds that disagree by a few points."""
    rng = np.random.default_rng(7)
    table = {}
    for a in range(3):
        for b in ("x", "y", "z"):
            final = 0.3 + 0.1 * a + 0.05 * "xyz".index(b)
            ramp = np.arange(1, EPOCHS + 1) / EPOCHS
            table[(a, b)] = [list(final * ramp + rng.normal(0, 0.03, EPOCHS)) for _ in range(3)]
    return curves_of(table, ("a", "b"))


def late_bloomer() -> Curves:
    """Seven flat configurations and one that is the worst until its final epoch, where it is by far the best."""
    table = {(p,): [[0.5 + 0.01 * p] * EPOCHS] for p in range(7)}
    table[(7,)] = [[0.1, 0.1, 0.1, 0.9]]
    return curves_of(table, ("p",))


def test_curves_from_records_and_truth():
    curves = curves_of({("lo",): [[0.1, 0.2], [0.3, 0.4]], ("hi",): [[0.5, 0.9]]}, ("k",))
    assert curves.n_configs == 2 and curves.epochs == 2
    assert curves.true_values.tolist() == pytest.approx([0.3, 0.9])
    assert curves.configs[curves.best_index] == {"k": "hi"}
    assert curves.index_of({"k": "lo"}) == 0 and curves.index_of({"k": "mid"}) is None
    assert curves.choices == {"k": ["lo", "hi"]}


def test_curves_from_jsonl(tmp_path):
    path = tmp_path / "curves.jsonl"
    path.write_text("\n".join(json.dumps({"params": {"lr": lr}, "seed": 0, "curve": [0.1, lr]})
                              for lr in (0.001, 0.002)) + "\n\n")
    assert Curves.from_jsonl(path).choices == {"lr": [0.001, 0.002]}


@pytest.mark.parametrize("records, message", [
    ([], "no records"),
    ([{"params": {"lr": 0.002}, "seed": 0, "curve": [0.1, 0.2]},
      {"params": {"lr": 0.002}, "seed": 1, "curve": [0.1]}], "lr=0.002: ragged curves"),
    ([{"params": {"lr": 0.001}, "seed": 0, "curve": [0.1, 0.2]},
      {"params": {"lr": 0.002}, "seed": 0, "curve": [0.1, 0.2, 0.3]}], "lr=0.002: curves of 3 epochs"),
    ([{"params": {"lr": 0.002}, "seed": 0, "curve": []}], "lr=0.002"),
    ([{"params": {"lr": 0.002}, "seed": 0, "curve": [0.1, float("nan")]}], "lr=0.002: non-finite"),
    ([{"params": {"lr": 0.002}, "seed": 0, "curve": [0.1]},
      {"params": {"lr": 0.002}, "seed": 0, "curve": [0.2]}], "lr=0.002: seed 0 recorded twice"),
    ([{"params": {"lr": 0.001}, "seed": 0, "curve": [0.1]},
      {"params": {"lr": 0.002, "grid": "2x4"}, "seed": 0, "curve": [0.2]}], "lr=0.002, grid='2x4': parameters"),
    ([{"params": {"lr": [0.1]}, "seed": 0, "curve": [0.1]}], "not a categorical"),
    ([{"params": {"lr": 0.002}, "curve": [0.1]}], "lacks \\['seed'\\]"),
])
def test_curves_refuse_bad_records(records, message):
    with pytest.raises(ValueError, match=message):
        Curves.from_records(records)


def test_seed_noise_and_spread_known_numbers():
    # finals: A 0.5 and 0.7 (std 0.1414, mean 0.6), B 0.3 and 0.3 (std 0, mean 0.3), C one seed (left out of noise)
    curves = curves_of({("A",): [[0.0, 0.5], [0.0, 0.7]], ("B",): [[0.0, 0.3], [0.0, 0.3]], ("C",): [[0.0, 0.4]]},
                       ("k",))
    assert seed_noise(curves) == pytest.approx(100 * np.sqrt(0.02) / 2)
    assert spread(curves) == pytest.approx(30.0)
    assert np.isnan(seed_noise(curves_of({("A",): [[0.5]]}, ("k",))))


def test_asha_stops_below_cutoff_at_rungs_never_at_the_end():
    asha = Asha.for_epochs(EPOCHS, grace_period=1, reduction_factor=2)
    assert asha.rungs == (1, 2)                                  # max_t = 3: no rung at the final epoch
    assert asha.run([0.5, 0.6, 0.7, 0.8]) == 4                   # nothing recorded yet: runs out
    assert asha.run([0.4, 0.9, 0.9, 0.9]) == 1                   # 0.4 < median(0.5) at rung 1
    assert asha.run([0.45, 0.55, 0.9, 0.9]) == 2                 # 0.45 == median(0.5, 0.4) passes; 0.55 < 0.6
    assert asha.run([0.9, 0.9, 0.0, 0.0]) == 4                   # past the last rung: runs out, however it ends
    assert asha.recorded == {1: [0.5, 0.4, 0.45, 0.9], 2: [0.6, 0.55, 0.9]}
    assert asha.run([0.1, 0.1, 0.1, 0.1], max_epochs=0) == 0     # no epoch left: judged nowhere, nothing recorded
    assert len(asha.recorded[1]) == 4
    assert sum([4, 1, 2, 4]) == 11                               # the epochs this sequence spends


def test_asha_cutoff_is_rays_percentile():
    keep_third, keep_half = Asha((1,), reduction_factor=3), Asha((1,), reduction_factor=2)
    for value in (0.1, 0.2, 0.4, 0.5):
        keep_third.run([value, 1.0])
        keep_half.run([value, 1.0])
    assert keep_third.cutoff(1) == pytest.approx(0.4) and keep_half.cutoff(1) == pytest.approx(0.3)
    assert keep_third.run([0.35, 1.0]) == 1 and keep_half.run([0.35, 1.0]) == 2


def test_grid_has_no_regret_without_noise_and_costs_every_epoch():
    curves = easy_space()
    for outcome in replay(curves, "grid", budget_epochs=None, repeats=5):
        assert outcome.regret == 0.0 and outcome.epochs == 9 * EPOCHS and outcome.trials == outcome.completed == 9
        assert outcome.chosen == {"a": 2, "b": "z"}


@pytest.mark.parametrize("strategy", ["random+asha", "tpe+asha"])
def test_asha_strategies_find_the_best_on_an_easy_space_with_budget(strategy):
    outcomes = replay(easy_space(), strategy, budget_epochs=5 * 9 * EPOCHS, repeats=10)
    summary = summarize(outcomes)
    assert summary["median_regret"] == 0.0 and summary["share_within_1pt"] >= 0.9
    assert summary["mean_trials"] > 2 * 9            # ASHA stopped trials early: more trials than full runs


@pytest.mark.parametrize("strategy", ["random+asha", "tpe+asha", "tpe"])
@pytest.mark.parametrize("budget", [1, 7, 13])
def test_no_strategy_but_grid_spends_more_than_its_budget(strategy, budget):
    for outcome in replay(noisy_space(), strategy, budget_epochs=budget, repeats=3):
        assert outcome.epochs == budget              # launched while any epoch was left, the last one cut
        assert outcome.completed <= outcome.trials


def test_cut_trial_is_not_completed_and_no_completion_is_worst_regret():
    curves = easy_space()
    [cut] = replay(curves, "tpe", budget_epochs=EPOCHS + 3, repeats=1)
    assert cut.trials == 2 and cut.completed == 1
    [none] = replay(curves, "tpe", budget_epochs=EPOCHS - 1, repeats=1)
    assert none.completed == 0 and none.chosen is None
    assert none.regret == pytest.approx(spread(curves))


def test_tpe_on_an_incomplete_grid_runs_only_recorded_configurations():
    records = [{"params": {"a": a, "b": b}, "seed": 0, "curve": [0.1 * a, 0.1 * a + 0.01 * b]}
               for a in range(3) for b in range(3) if (a + b) % 2 == 0]   # 5 of the 9 combinations
    curves = Curves.from_records(records)
    outcomes = replay(curves, "tpe", budget_epochs=40, repeats=3)
    assert all(o.epochs == 40 and o.trials == 20 for o in outcomes)
    assert sum(o.off_grid for o in outcomes) > 0
    assert all(curves.index_of(o.chosen) is not None for o in outcomes)


def test_late_bloomer_makes_asha_fail_and_the_report_say_so():
    curves = late_bloomer()
    assert curves.configs[curves.best_index] == {"p": 7}
    assert all(o.regret == 0.0 for o in replay(curves, "grid", budget_epochs=None, repeats=10))
    for strategy in ("random+asha", "tpe+asha"):
        regrets = [o.regret for o in replay(curves, strategy, budget_epochs=12, repeats=10)]
        assert max(regrets) >= 100 * (0.9 - 0.56) - 1e-9   # some repeats missed the bloomer
    result = compare(curves, repeats=10)
    assert result["budget_epochs"] == 12 and result["grid_epochs"] == 32
    assert result["true_best"] == {"params": {"p": 7}, "value": pytest.approx(0.9)}
    assert result["strategies"]["grid"]["median_regret"] == 0.0
    assert not result["goal"]["met"] and not result["goal"]["checks"]["median_regret"]
    table = markdown(result)
    assert f"| {GOAL_STRATEGY} | 10 |" in table and "| grid | 10 | 0.00 | 0.00 | 100% | 32.0 (100%) | 8.0 |" in table
    assert "NOT met" in table


def test_goal_can_be_met_where_early_epochs_rank_configurations_well():
    # 5 x 5 x 2 configurations, additive, saturating curves and seeds within a fraction of a point: what ASHA is for.
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 9)
    records = [{"params": {"a": a, "b": b, "c": c}, "seed": seed,
                "curve": list((0.4 + 0.03 * a + 0.02 * b + 0.01 * c) * (1 - np.exp(-epochs / 2))
                              + rng.normal(0, 0.005, len(epochs)))}
               for a in range(5) for b in range(5) for c in range(2) for seed in range(3)]
    result = compare(Curves.from_records(records), repeats=10)
    assert result["budget_epochs"] == 160 and result["goal"]["met"], markdown(result)
    assert markdown(result).endswith(": met.")


def test_same_seed_same_outcomes_other_seed_others():
    curves = noisy_space()
    for strategy in STRATEGIES:
        first = replay(curves, strategy, budget_epochs=14, repeats=4, seed=1)
        assert first == replay(curves, strategy, budget_epochs=14, repeats=4, seed=1)
        other = replay(curves, strategy, budget_epochs=14, repeats=4, seed=2)
        assert [(o.chosen, o.trials, o.regret) for o in first] != [(o.chosen, o.trials, o.regret) for o in other]


def test_replay_refuses_what_it_cannot_run():
    curves = easy_space()
    with pytest.raises(ValueError, match="unknown strategy"):
        replay(curves, "hyperband", budget_epochs=10)
    with pytest.raises(ValueError, match="budget_epochs"):
        replay(curves, "tpe", budget_epochs=None)
    with pytest.raises(ValueError, match="grace_period"):
        replay(curves, "random+asha", budget_epochs=10, grace_period=EPOCHS)


def test_a_completed_configuration_is_not_run_again_by_tpe_or_random_without_repeats():
    # Eight configurations whose curves agree until the last epoch (ASHA stops none) and end apart, no noise. A
    # budget of exactly the grid's epochs runs every configuration once when none is repeated: regret 0 always.
    table = {(p,): [[0.5, 0.5, 0.5, 0.5 + 0.01 * p]] for p in range(8)}
    curves = curves_of(table, ("p",))
    grid_epochs = 8 * EPOCHS
    for strategy in ("tpe", "random+asha (no repeats)", "tpe+asha"):
        outcomes = replay(curves, strategy, budget_epochs=grid_epochs, repeats=10, seed=3)
        assert all(o.trials == 8 and o.completed == 8 and o.regret == 0 for o in outcomes), strategy
        assert sum(o.known for o in outcomes) > 0, strategy   # repeats were proposed, told, and not run
    # Ray's random search draws with repeats: at the same budget it misses configurations, the best among them.
    with_repeats = replay(curves, "random+asha", budget_epochs=grid_epochs, repeats=10, seed=3)
    assert all(o.known == 0 for o in with_repeats) and any(o.regret > 0 for o in with_repeats)
