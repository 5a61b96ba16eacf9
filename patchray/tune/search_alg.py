"""Ray Tune's ASHA and OptunaSearch as patchray runs them: judged on the fine-tuning's own epochs, with rung
decisions written down, and every trial's end told to Optuna as what it was.

- **The time attribute** is ``epochs_done``, the fine-tuning run's own count of finished epochs, added to every
  report by ``EpochReportCallback``. Tune's ``training_iteration`` counts reports since the trial (re)started:
  a trial restarted mid-way continues its fine-tuning from its checkpoint at epoch k but would restart
  ``training_iteration`` at 1, and be judged at the wrong rungs.
- **ASHA's rungs are a file** (``RecordedASHA``): every value recorded at a rung, and whether the trial was
  stopped there, is appended to ``asha_rungs.jsonl``. A resumed search refills the rungs from it (Tune does not
  save scheduler state), and the outputs tell trials stopped by ASHA from trials cut by the time budget.
- **Optuna is told what happened** (``PatchraySearch``, over Ray's OptunaSearch): a completed trial its final
  value; one stopped by ASHA is PRUNED (its intermediate values kept, TPE ranks it below completed ones); a
  diverged fine-tuning the worst score (TPE learns to avoid it); one cut by the time budget or by an error FAIL
  (not judged: TPE ignores it, and a partial score is not passed off as final). A trial retried after an error
  (``resume_errored``) gets a new Optuna trial with the same values instead of having its results dropped.
- **A configuration is trained to the end once.** A search's trials share one fine-tuning seed, so training a
  completed configuration again would repeat the same run: when TPE proposes one (likely in a discrete space),
  it is told that run's value and asked again. After ``MAX_KNOWN_IN_A_ROW`` repeats in a row TPE has nothing
  new to propose, and the search trains what it proposes from then on. The told trials carry the user
  attribute ``known_from`` (the Optuna trial they repeat).
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from patchray.ray_compat import (
    asha_rungs_of,
    optuna_search_forget_trial,
    optuna_search_replace_trial,
    optuna_search_space,
    optuna_search_told,
    optuna_study_of,
    optuna_trial_of,
)
from patchray.tune.sampler import MAX_KNOWN_IN_A_ROW, RepeatRule

EPOCHS_DONE = "epochs_done"  # the time attribute of ASHA and of Optuna's intermediate values
DIVERGED = "diverged"        # set in the one report of a trial whose fine-tuning diverged
INFEASIBLE = "infeasible"    # set in the one report of a pretext combination its config refuses
WORST_SCORE = 0.0            # mA and mAP are in [0, 1]: a diverged fine-tuning scores the worst possible
RUNG_LOG = "asha_rungs.jsonl"

logger = logging.getLogger(__name__)


class EpochReportCallback(TuneReportCallback):
    """Tune's bridge from a TorchTrainer inside a trial, adding ``epochs_done`` (the run's epoch, counted from
    1) to each report."""

    def after_report(self, run_context, metrics, checkpoint):
        first = dict(metrics[0])
        first[EPOCHS_DONE] = int(first["epoch"]) + 1
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)


def read_rung_log(path: str | Path) -> list[dict]:
    """The rung records of a search: {"trial", "rung", "value", "stopped"} per line (none when no file)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut short by a crash: the records before it stand
            continue
    return records


def stopped_by_asha(path: str | Path) -> dict[str, int]:
    """Trial id -> the rung (epoch) at which ASHA stopped it."""
    return {r["trial"]: r["rung"] for r in read_rung_log(path) if r.get("stopped")}


class RecordedASHA(ASHAScheduler):
    """ASHA with one bracket on ``epochs_done``, rungs before every trial's last epoch (``max_t`` from
    ``patchray.tune.rungs.asha_max_t``; no stop at ``max_t``), writing each rung record to ``log_path`` and
    refilling its rungs from there when a search resumes."""

    def __init__(self, log_path: str | Path, *, grace_period: int, reduction_factor: int, max_t: int):
        super().__init__(time_attr=EPOCHS_DONE, grace_period=grace_period, reduction_factor=reduction_factor,
                         max_t=max_t, brackets=1, stop_last_trials=False)
        self.log_path = str(log_path)
        self._refilled = False
        self._written: set[tuple[str, float]] = set()

    def _refill(self) -> None:
        if self._refilled:
            return
        self._refilled = True
        rungs = asha_rungs_of(self)
        for record in read_rung_log(self.log_path):
            for milestone, recorded in rungs:
                if milestone == record["rung"]:
                    recorded.setdefault(record["trial"], record["value"])
                    self._written.add((record["trial"], milestone))

    def on_trial_add(self, tune_controller, trial):
        self._refill()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        self._refill()
        action = super().on_trial_result(tune_controller, trial, result)
        for milestone, recorded in asha_rungs_of(self):
            key = (trial.trial_id, milestone)
            if trial.trial_id in recorded and key not in self._written:
                self._written.add(key)
                with open(self.log_path, "a") as handle:
                    handle.write(json.dumps({"trial": trial.trial_id, "rung": milestone,
                                             "value": recorded[trial.trial_id],
                                             "stopped": action == TrialScheduler.STOP}) + "\n")
        return action


class PlannedEpochs:
    """A trial's fine-tuning epochs from its config: the sampled ``finetune.epochs`` or the base's."""

    def __init__(self, base: int, key: str = "finetune.epochs"):
        self.base, self.key = base, key

    def __call__(self, config: dict | None) -> int:
        return int((config or {}).get(self.key, self.base))


def optuna_outcome(result: dict | None, error: bool, metric: str, planned_epochs: int, asha_stopped: bool):
    """(state, value) to tell Optuna for a trial that ended with this last ``result``."""
    from optuna.trial import TrialState

    result = result or {}
    if result.get(DIVERGED) or result.get(INFEASIBLE):
        return TrialState.COMPLETE, WORST_SCORE
    if error:
        return TrialState.FAIL, None
    if result.get(metric) is not None and result.get(EPOCHS_DONE, 0) >= planned_epochs:
        return TrialState.COMPLETE, float(result[metric])
    if asha_stopped:
        return TrialState.PRUNED, None
    return TrialState.FAIL, None  # cut by the time budget (or stopped from outside): not a judgement


class PatchraySearch(OptunaSearch):
    """Ray's OptunaSearch with intermediate values at ``epochs_done`` and ends told by ``optuna_outcome``."""

    def __init__(self, space, *, metric: str, sampler, planned_epochs: PlannedEpochs, rung_log: str | Path,
                 storage=None, study_name: str | None = None):
        super().__init__(space=space, metric=metric, mode="max", sampler=sampler, storage=storage,
                         study_name=study_name)
        self.planned_epochs = planned_epochs
        self.rung_log = str(rung_log)
        self.repeats = RepeatRule()

    @property
    def known_told(self) -> int:
        """Proposals of completed configurations, told their value instead of trained."""
        return self.repeats.told

    def suggest(self, trial_id: str):
        while True:
            config = super().suggest(trial_id)
            trial = optuna_trial_of(self, trial_id)
            asks = trial is not None and config is not None and not self.repeats.exhausted
            repeated = self._completed_with(trial.params) if asks else None
            if not self.repeats.tells(repeated is not None):
                return config
            trial.set_user_attr("known_from", repeated.number)
            optuna_study_of(self).tell(trial, repeated.value)
            optuna_search_forget_trial(self, trial_id)
            logger.info("trial %s: TPE proposed %s again, already trained to the end (Optuna trial %d, %s %.4f): "
                        "told that value, asking again", trial_id, trial.params, repeated.number, self.metric,
                        repeated.value)
            if self.repeats.exhausted:
                logger.info("TPE proposed %d completed configurations in a row: repeats are trained from now on",
                            MAX_KNOWN_IN_A_ROW)

    def _completed_with(self, params: dict):
        """The first Optuna trial of this search trained to the end with exactly these values: not one told from
        another, nor one copied from an earlier search (a warm start may have other base settings, and its trials
        have no run here)."""
        from optuna.trial import TrialState

        from patchray.tune.study import WARM_START_ATTR

        for done in optuna_study_of(self).get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if done.params == params and not {"known_from", WARM_START_ATTR} & set(done.user_attrs):
                return done
        return None

    def on_trial_result(self, trial_id: str, result: dict):
        if optuna_search_told(self, trial_id):
            if not self._told_failed(trial_id):
                return  # a late result of a trial already judged (completed, pruned): its Optuna trial stands
            self._reopen(trial_id)
        scored = EPOCHS_DONE in result and result.get(self.metric) is not None
        if not scored or result.get(DIVERGED) or result.get(INFEASIBLE):  # no epoch value: nothing to report
            return
        trial = optuna_trial_of(self, trial_id)
        if trial is not None:
            with warnings.catch_warnings():  # an epoch reported again after a restart: Optuna keeps the first
                warnings.simplefilter("ignore", UserWarning)
                trial.report(float(result[self.metric]), int(result[EPOCHS_DONE]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        trial = optuna_trial_of(self, trial_id)
        if trial is None or optuna_search_told(self, trial_id):
            return
        state, value = optuna_outcome(result, error, self.metric, self.planned_epochs((result or {}).get("config")),
                                      trial_id in stopped_by_asha(self.rung_log))
        try:
            optuna_study_of(self).tell(trial, value, state=state)
        except Exception as e:  # a study that refuses the tell must not stop the search
            logger.warning("optuna refused the end of trial %s: %s", trial_id, e)
        optuna_search_replace_trial(self, trial_id, trial, told=True)

    def _told_failed(self, trial_id: str) -> bool:
        from optuna.trial import TrialState

        number = optuna_trial_of(self, trial_id).number
        failed = optuna_study_of(self).get_trials(deepcopy=False, states=(TrialState.FAIL,))
        return any(t.number == number for t in failed)

    def _reopen(self, trial_id: str) -> None:
        """A trial told FAIL and then run again (``resume_errored``): a new Optuna trial with its values."""
        old = optuna_trial_of(self, trial_id)
        study = optuna_study_of(self)
        study.enqueue_trial(old.params, user_attrs={"retry_of": old.number})
        space = optuna_search_space(self)
        if callable(space):
            new = study.ask()
            space(new)
        else:
            new = study.ask(fixed_distributions=space)
        optuna_search_replace_trial(self, trial_id, new, told=False)
