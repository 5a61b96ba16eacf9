"""ASHA and Optuna as patchray drives them, on Ray's real classes without a cluster: rung records written and
refilled on resume, and each way a trial ends told to Optuna as what it was."""
from dataclasses import dataclass

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from patchray.ray_compat import optuna_study_of
from patchray.tune.sampler import tpe_sampler
from patchray.tune.search_alg import (
    DIVERGED,
    EPOCHS_DONE,
    PatchraySearch,
    PlannedEpochs,
    RecordedASHA,
    optuna_outcome,
    read_rung_log,
    stopped_by_asha,
)
from patchray.tune.space import FeasibleSpaceSampler, SearchSpace

M = "val_mA"


@dataclass
class Trial:  # what the scheduler reads of a Tune trial
    trial_id: str


def _asha(path):
    scheduler = RecordedASHA(path, grace_period=1, reduction_factor=2, max_t=3)  # rungs 1, 2
    scheduler.set_search_properties(M, "max")
    return scheduler


def _run(scheduler, trial_id, curve):
    """Report a trial's epochs until ASHA stops it; the epochs it ran."""
    trial = Trial(trial_id)
    scheduler.on_trial_add(None, trial)
    for epoch, value in enumerate(curve, 1):
        if scheduler.on_trial_result(None, trial, {M: value, EPOCHS_DONE: epoch}) == TrialScheduler.STOP:
            return epoch
    return len(curve)


def test_asha_writes_its_rungs_and_a_resumed_search_judges_against_them(tmp_path):
    log = tmp_path / "asha_rungs.jsonl"
    asha = _asha(log)
    assert _run(asha, "a", [0.5, 0.6, 0.7, 0.8]) == 4   # first at each rung: goes on; past the last rung: runs out
    assert _run(asha, "b", [0.4, 0.5, 0.5, 0.5]) == 1   # below a's value at rung 1
    assert _run(asha, "c", [0.6, 0.5, 0.5, 0.5]) == 2   # above at rung 1, below the median at rung 2
    assert stopped_by_asha(log) == {"b": 1, "c": 2}
    assert [(r["trial"], r["rung"]) for r in read_rung_log(log)] == [("a", 1), ("a", 2), ("b", 1), ("c", 1),
                                                                      ("c", 2)]
    # the same trial d judged by the original scheduler and by a fresh one refilled from the file
    resumed = _asha(log)
    assert _run(resumed, "d", [0.55, 0.52, 0.9, 0.9]) == _run(asha, "d", [0.55, 0.52, 0.9, 0.9]) == 2
    # a fresh scheduler with no file would have let d run out: the rungs really came back
    assert _run(_asha(tmp_path / "none.jsonl"), "d", [0.55, 0.52, 0.9, 0.9]) == 4


@pytest.mark.parametrize("result, error, stopped, expected", [
    ({M: 0.6, EPOCHS_DONE: 4}, False, False, (TrialState.COMPLETE, 0.6)),
    ({M: 0.0, DIVERGED: 1, EPOCHS_DONE: 0}, False, False, (TrialState.COMPLETE, 0.0)),  # the worst, and seen
    ({M: 0.6, EPOCHS_DONE: 2}, False, True, (TrialState.PRUNED, None)),                 # ASHA's judgement
    ({M: 0.6, EPOCHS_DONE: 2}, False, False, (TrialState.FAIL, None)),   # cut by the time budget: not a result
    ({M: 0.6, EPOCHS_DONE: 2}, True, False, (TrialState.FAIL, None)),
])
def test_each_end_is_told_to_optuna_as_what_it_was(result, error, stopped, expected):
    assert optuna_outcome(result, error, M, 4, stopped) == expected


SPACE = SearchSpace.from_dict({"pretrain": {"task.patch_size": {"choice": [32, 48]},
                                            "task.grid": {"choice": ["2x4", "3x6"]}},
                               "finetune": {"optim.lr": {"loguniform": [0.001, 0.01]}}})


def test_the_search_reports_epochs_prunes_fails_and_reopens_a_retried_trial(tmp_path):
    log = tmp_path / "asha_rungs.jsonl"
    log.write_text('{"trial": "pruned", "rung": 1, "value": 0.3, "stopped": true}\n')
    search = PatchraySearch(FeasibleSpaceSampler.build(SPACE, {}), metric=M, sampler=tpe_sampler(0, 3),
                            planned_epochs=PlannedEpochs(3), rung_log=log)
    for trial_id in ("done", "pruned", "diverged", "cut", "retried"):
        config = search.suggest(trial_id)
        assert (config["pretrain.task.patch_size"], config["pretrain.task.grid"]) != (48, "3x6")  # never infeasible
        search.on_trial_result(trial_id, {M: 0.3, EPOCHS_DONE: 1, "config": config})
    search.on_trial_result("done", {M: 0.5, EPOCHS_DONE: 2})
    search.on_trial_complete("done", {M: 0.6, EPOCHS_DONE: 3})
    search.on_trial_complete("pruned", {M: 0.3, EPOCHS_DONE: 1})
    search.on_trial_complete("diverged", {M: 0.0, DIVERGED: 1, EPOCHS_DONE: 0})
    search.on_trial_complete("cut", {M: 0.3, EPOCHS_DONE: 1})
    search.on_trial_complete("retried", None, error=True)
    # resume_errored: the trial runs again; Ray's OptunaSearch would drop these results, ours opens a new trial
    search.on_trial_result("retried", {M: 0.4, EPOCHS_DONE: 1})
    search.on_trial_complete("retried", {M: 0.7, EPOCHS_DONE: 3})
    # a late result of a trial already judged opens nothing: only a failed trial comes back as a new one
    search.on_trial_result("pruned", {M: 0.9, EPOCHS_DONE: 2})
    search.on_trial_result("done", {M: 0.9, EPOCHS_DONE: 3})

    study = optuna_study_of(search)
    trials = study.get_trials(deepcopy=False)
    assert [(t.state, t.value) for t in trials] == [
        (TrialState.COMPLETE, 0.6), (TrialState.PRUNED, 0.3), (TrialState.COMPLETE, 0.0), (TrialState.FAIL, None),
        (TrialState.FAIL, None), (TrialState.COMPLETE, 0.7)]
    assert trials[0].intermediate_values == {1: 0.3, 2: 0.5}   # at the fine-tuning's own epochs
    assert trials[1].intermediate_values == {1: 0.3}  # a pruned trial keeps what TPE ranks it by (Optuna: its value)
    assert trials[5].params == trials[4].params and trials[5].user_attrs["retry_of"] == trials[4].number


def test_the_narrowed_space_never_proposes_a_combination_that_does_not_fit_and_reaches_every_one():
    sampler_space = FeasibleSpaceSampler.build(SPACE, {})
    assert sampler_space.feasible == ((32, "2x4"), (32, "3x6"), (48, "2x4"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for sampler in (optuna.samplers.RandomSampler(seed=1), tpe_sampler(1, 3)):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        seen = set()
        for _ in range(40):
            trial = study.ask()
            values = sampler_space(trial)
            seen.add((values["pretrain.task.patch_size"], values["pretrain.task.grid"]))
            study.tell(trial, 0.5 + 0.1 * (values["pretrain.task.grid"] == "3x6"))
            assert set(trial.params) <= set(sampler_space.distributions())
        assert seen == set(sampler_space.feasible)


DISCRETE = SearchSpace.from_dict({"pretrain": {"task.patch_size": {"choice": [32, 48]},
                                               "task.grid": {"choice": ["2x4", "3x6"]}},
                                  "finetune": {"optim.lr": {"choice": [0.001, 0.004]}}})


def _key(config):
    return tuple(sorted(config.items()))


def test_a_configuration_trained_to_the_end_is_not_trained_again_but_told_its_value(tmp_path):
    # 3 feasible pretext pairs x 2 rates: 6 configurations. A search of 6 trials that completes each one it gets
    # trains 6 different ones; TPE's repeats are told the first run's value and never reach Tune.
    search = PatchraySearch(FeasibleSpaceSampler.build(DISCRETE, {}), metric=M, sampler=tpe_sampler(0, 2),
                            planned_epochs=PlannedEpochs(1), rung_log=tmp_path / "asha_rungs.jsonl")
    trained = []
    for n in range(6):
        config = search.suggest(f"t{n}")
        assert _key(config) not in trained, f"trial {n} repeats a completed configuration: {config}"
        trained.append(_key(config))
        value = 0.5 + 0.1 * (config["finetune.optim.lr"] == 0.004) + 0.01 * n
        search.on_trial_complete(f"t{n}", {M: value, EPOCHS_DONE: 1, "config": config})
    assert len(set(trained)) == 6
    study = optuna_study_of(search)
    told = [t for t in study.get_trials(deepcopy=False) if "known_from" in t.user_attrs]
    assert search.known_told == len(told) > 0   # with 6 of 6 configurations left to run, TPE does repeat itself
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for t in told:
        source = by_number[t.user_attrs["known_from"]]
        assert t.state == TrialState.COMPLETE and t.params == source.params and t.value == source.value
        assert "known_from" not in source.user_attrs
    # Every configuration done: the next proposal is a repeat, told up to the bound, then trained after all.
    config = search.suggest("t6")
    assert _key(config) in trained


def test_only_a_completed_configuration_is_told_instead_of_trained_again(tmp_path):
    search = PatchraySearch(FeasibleSpaceSampler.build(DISCRETE, {}), metric=M, sampler=tpe_sampler(0, 2),
                            planned_epochs=PlannedEpochs(3), rung_log=tmp_path / "asha_rungs.jsonl")
    study = optuna_study_of(search)
    cut = search.suggest("cut")
    search.on_trial_complete("cut", {M: 0.5, EPOCHS_DONE: 1, "config": cut})   # cut by the time budget: FAIL
    study.enqueue_trial(study.trials[0].params)
    assert search.suggest("cut again") == cut and search.known_told == 0          # not judged: trained again
    search.on_trial_complete("cut again", {M: 0.6, EPOCHS_DONE: 3, "config": cut})
    study.enqueue_trial(study.trials[0].params)
    other = search.suggest("after")        # the enqueued repeat is told 0.6, and TPE's next proposal trained
    assert other != cut and search.known_told == 1
    told = study.trials[2]
    assert told.value == 0.6 and told.user_attrs["known_from"] == 1
