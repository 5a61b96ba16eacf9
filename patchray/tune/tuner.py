"""Ray Tune over the pretext task and fine-tuning: Optuna TPE + ASHA, scored downstream, then confirmed.

Each trial is a function trainable that (1) gets the pretraining of its pretext
configuration from the content-hashed cache, training it under a lock if it is
missing, and (2) fine-tunes from it with a TorchTrainer whose worker metrics
reach Tune (``search_alg.EpochReportCallback``), so ASHA can stop weak runs after
any epoch. Trials score validation only. Only pretext combinations that fit the
crop are ever proposed (``space.FeasibleSpaceSampler``). After the search the
top ``confirm_top_k`` configurations are fine-tuned again with other seeds
(``confirm_seeds`` in all); the best mean validation score wins, and only the
winner's test numbers are reported.

The Optuna study lives in a database (SQLite under the search's folder, or
``study_storage``). The same experiment name resumes: Tune restores its trials
and searcher, ASHA its rungs (``asha_rungs.jsonl``), and a fine-tuning cut off
mid-way continues from its own Ray Train checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from patchray import config as configlib
from patchray import tracking
from patchray.tracking import Tracking
from patchray.tune.confirm import confirm_top
from patchray.tune.outputs import format_summary, records_from, write_outputs
from patchray.tune.rungs import asha_max_t, asha_rungs
from patchray.tune.sampler import startup_trials
from patchray.tune.space import FeasibleSpaceSampler, SearchSpace, SpaceError, build_section, feasible_pretext
from patchray.tune.trial import PRETEXT, TRIAL_DRIVER_CPU, check_caches_fit, run_trial, trial_resources

# A trial stopped by ASHA is blocked inside TorchTrainer.fit, so Tune only frees it by force; its default wait
# (600 s) would hold the trial's workers, and the next trial's trainer would wait with them.
TRIAL_CLEANUP_S = "20"


# The base configs of every trial of the default search and of jobs/bench_tune.py, chosen so that configurations
# differ by clearly more than the seed noise (measured: docs/experiments.md, "A signal above the noise"):
# - loss "balanced": with plain cross-entropy at 250 labels every trial stays near the majority class (chance mA);
# - the whole val split (1,500 crops on the synthetic default): three seeds of one configuration scattered by
#   0.93 mA points (std) on a 600-crop subset and by 0.45 on all 1,500, as rare attributes have few positives;
# - label_seed 0: every trial and every confirmation seed trains on the same labeled crops (the user's one
#   labeled set), so that seeds differ only by training.
TRIAL_PRETRAIN = {"epochs": 2, "max_crops": 3000}
TRIAL_FINETUNE = {"epochs": 6, "labels": 250, "label_seed": 0, "loss": "balanced"}


@dataclass
class TuneConfig:
    name: str = "tune"
    out: str = "runs"
    # Shared URI (s3://, gs://, NFS path) for Tune's experiment state and the trials' Ray Train checkpoints on a
    # multi-node cluster; None keeps them under OUT/NAME/ray. The pretraining cache lives under OUT, which must
    # then be a shared filesystem too.
    storage: str | None = None
    metric: Literal["mA", "mAP"] = "mA"  # validation objective after fine-tuning
    # What scores a trial. "finetune": its fine-tuning's validation metric, epoch by epoch (ASHA stops weak ones).
    # "probe": no fine-tuning: the linear probe of its pretrained trunk (patchray.probe, the pretrain section's
    # probe.* sizes) on finetune.data's train and val splits, in seconds; the search then only screens pretext
    # configurations, and the top confirm_top_k are fine-tuned confirm_seeds times to choose among them.
    objective: Literal["finetune", "probe"] = "finetune"
    search: Literal["optuna", "grid"] = "optuna"  # TPE (seeded), or every combination of the choices once
    scheduler: Literal["asha", "fifo"] = "asha"  # stop weak fine-tuning runs early, or run every trial out
    num_samples: int = 10           # optuna: trials to sample; grid: ignored (one trial per grid point)
    time_budget_s: float | None = 600.0  # stop launching and running trials after this long (the search only)
    max_concurrent_trials: int = 1  # each trial runs its own trainer plus Ray Data: 2 CPUs per trial at least
    seed: int = 0
    grace_period: int = 1           # ASHA: epochs every trial gets before it may be stopped
    reduction_factor: int = 2       # ASHA: keep the best 1/rf at each rung
    # TPE's random start (None: a fifth of num_samples, at least 3, at most 10; see patchray/tune/sampler.py).
    startup_trials: int | None = None
    # Optuna's study database: None keeps it in OUT/NAME/optuna.db (SQLite); a cluster names a shared one
    # (postgresql://user:pass@host/db, mysql://...). optuna-dashboard reads it (README, Searching).
    study_storage: str | None = None
    warm_start_from: str | None = None  # the name of an earlier search in the same study storage to seed TPE
    # After the search: the best confirm_top_k configurations are fine-tuned confirm_seeds times in all (their
    # trial is the first seed); the best mean validation score wins. 0: the best single trial wins.
    confirm_top_k: int = 2
    confirm_seeds: int = 3
    # GPUs each concurrent trial takes (None: the cluster's GPUs split evenly over max_concurrent_trials; a
    # fraction below 1 puts several trials on one GPU).
    gpus_per_trial: float | None = None
    # Each trial's config and per-epoch metrics through Ray Tune's logger callbacks: MLflow (tracking_uri: a
    # server or database; null: mlflow.db + mlruns/ in the search's folder) or TensorBoard (event files in each
    # trial's folder under ray/tune). Optional extras: pip install -e ".[mlflow]" / ".[tensorboard]".
    tracking: Tracking = "none"
    tracking_uri: str | None = None
    space: dict[str, Any] = field(default_factory=lambda: {
        "pretrain": {"task.patch_size": {"choice": [24, 32]}, "task.grid": {"choice": ["2x4", "3x6"]}},
        "finetune": {"optim.lr": {"loguniform": [0.001, 0.01]}},
    })
    # Base configs of every trial (the space's samples go on top); trials fine-tune from their pretraining.
    pretrain: dict[str, Any] = field(default_factory=lambda: dict(TRIAL_PRETRAIN))
    finetune: dict[str, Any] = field(default_factory=lambda: dict(TRIAL_FINETUNE))

    def __post_init__(self):
        if self.num_samples < 1 or self.max_concurrent_trials < 1 or self.grace_period < 1:
            raise ValueError("num_samples, max_concurrent_trials and grace_period must be >= 1")
        if self.reduction_factor < 2:
            raise ValueError("reduction_factor must be >= 2")
        if self.confirm_top_k < 0 or self.confirm_seeds < 1:
            raise ValueError("confirm_top_k must be >= 0 and confirm_seeds >= 1")
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
            raise ValueError(f"gpus_per_trial must be >= 0, got {self.gpus_per_trial}")
        startup_trials(self.num_samples, self.startup_trials)  # refuses < 1
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError("time_budget_s must be > 0 (or null for no limit)")
        space = self.search_space()  # each parameter on its own; check() judges what the values do to configs
        if self.search == "grid":
            ranges = [p.name for p in space.params if p.kind != "choice"]
            if ranges:
                raise ValueError(f"search=grid needs choice lists; {ranges} are ranges")

    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space)

    def check(self) -> None:
        """Refuse space keys the configs do not know and values no configuration takes (a patch size that fits
        no grid on the crop, say), before any trial starts. It builds every pretext combination (up to
        ``space.PRODUCT_LIMIT``), so it runs once, where the experiment starts, not in each trial's build."""
        try:
            self.search_space().check({"pretrain": self.pretrain, "finetune": self.finetune})
            if self.objective == "probe":
                self.check_probe_objective()
            elif self.scheduler == "asha":
                asha_max_t(self.grace_period, self.min_finetune_epochs())
        except ValueError as e:
            raise configlib.ConfigError(str(e)) from None

    def check_probe_objective(self) -> None:
        """``objective: probe`` scores pretext configurations only, on folders of labeled shards."""
        tuned = [p.name for p in self.search_space().params if p.section == "finetune"]
        if tuned:
            raise ValueError(f"objective probe fine-tunes no trial, so the fine-tuning settings {tuned} cannot be "
                             "searched: search them with objective finetune, or leave them out of space.finetune")
        finetune = build_section("finetune", self.finetune, {})
        if finetune.train_data or finetune.val_data:
            raise ValueError("objective probe draws its crops from the folders of finetune.data (*-train-*, "
                             "*-val-*); finetune.train_data / val_data globs are not read by the probe")

    def trial_epochs(self, params: dict | None = None, space: SearchSpace | None = None) -> int:
        """The reports a trial makes when it runs to its end: its fine-tuning epochs, or with objective probe
        the one probe."""
        return 1 if self.objective == "probe" else self.finetune_epochs(params, space)

    def finetune_epochs(self, params: dict | None = None, space: SearchSpace | None = None) -> int:
        """Fine-tuning epochs of a trial with these sampled values (the base config's with none). Pass the
        ``space`` when it is at hand: building it checks every pretext combination again."""
        _, fine = (space or self.search_space()).split(params) if params else ({}, {})
        return build_section("finetune", self.finetune, fine).epochs

    def _epoch_choices(self) -> list[int]:
        epochs = [p for p in self.search_space().params if p.name == "finetune.epochs"]
        return [int(v) for v in epochs[0].candidates()] if epochs else [self.finetune_epochs()]

    def max_finetune_epochs(self) -> int:
        return max(self._epoch_choices())

    def min_finetune_epochs(self) -> int:
        return min(self._epoch_choices())


def _tune_param(param, grid: bool):
    from ray import tune

    if grid:
        return tune.grid_search(list(param.values))
    if param.kind == "choice":
        return tune.choice(list(param.values))
    if param.kind == "uniform":
        return tune.uniform(param.low, param.high)
    if param.kind == "loguniform":
        return tune.loguniform(param.low, param.high)
    return tune.randint(int(param.low), int(param.high))


def _resolve_data(cfg: TuneConfig, log) -> TuneConfig:
    """Render / locate the data once in the driver, so concurrent trials never race to create it."""
    from patchray.train.finetune import labeled_folders
    from patchray.train.pretrain import resolve_data

    pretrain = build_section("pretrain", cfg.pretrain, {})
    finetune = build_section("finetune", cfg.finetune, {})
    pre = dict(cfg.pretrain, data=resolve_data(pretrain, log), storage=cfg.storage)
    fine = dict(cfg.finetune, storage=cfg.storage, data=labeled_folders(finetune, log))
    return dataclasses.replace(cfg, pretrain=pre, finetune=fine)


def _check_same_experiment(saved: Path, cfg: TuneConfig) -> None:
    before = configlib.to_dict(configlib.load(TuneConfig, saved))
    now = configlib.to_dict(cfg)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        raise configlib.ConfigError(
            f"experiment {cfg.name!r} in {saved.parent} was started with different {changed}; re-running the same "
            "name resumes it as it was, so pass a new --name (or the original settings)")


def _study(cfg: TuneConfig, out: Path, sampler_space, resuming: bool, log):
    """The search's Optuna storage and study name; a fresh search replaces a stale study of its name (its Tune
    state is gone) and takes in the trials of ``warm_start_from``."""
    import optuna

    from patchray.tune import study as studylib

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial INFO lines are the tuner's to say
    url = studylib.storage_url(cfg.study_storage, out)
    storage = studylib.open_storage(url)
    name = studylib.study_name(cfg.name)
    if not resuming:
        if name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
            log(f"[tune] study {name} in {url} belongs to an earlier search whose Tune state is gone: replaced")
            optuna.delete_study(study_name=name, storage=storage)
        if cfg.warm_start_from:
            copied = studylib.warm_start(storage, name, studylib.study_name(cfg.warm_start_from),
                                         sampler_space.distributions())
            log(f"[tune] warm start: {copied} trial(s) of {cfg.warm_start_from!r} seed TPE")
    return url, storage, name


def _search_parts(cfg: TuneConfig, space: SearchSpace, resolved: TuneConfig, out: Path, resuming: bool, log):
    """(param_space, search_alg, scheduler, what to say) of a fresh search."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from patchray.tune.sampler import tpe_sampler
    from patchray.tune.search_alg import RUNG_LOG, PatchraySearch, PlannedEpochs, RecordedASHA

    said = []
    scheduler = FIFOScheduler()
    if cfg.objective == "probe":
        said.append("objective probe: each trial is scored by the linear probe of its pretrained trunk, without "
                    f"fine-tuning (scheduler {cfg.scheduler} has nothing to stop)")
    elif cfg.scheduler == "asha":
        max_t = asha_max_t(cfg.grace_period, cfg.min_finetune_epochs())
        scheduler = RecordedASHA(out / RUNG_LOG, grace_period=cfg.grace_period,
                                 reduction_factor=cfg.reduction_factor, max_t=max_t)
        said.append(f"ASHA rungs at epochs {asha_rungs(cfg.grace_period, cfg.reduction_factor, max_t)} "
                    f"(a trial's last epoch, {cfg.min_finetune_epochs()} or more, is never judged)")
    total, refused = space.infeasible_pretext(resolved.pretrain)  # every pretext config built, once
    feasible = feasible_pretext(space, resolved.pretrain, (total, refused))
    if feasible is not None and refused:
        said.append(f"{len(refused)} of {total} pretext combinations do not fit the crop (e.g. {refused[0][1]}): "
                    "left out of the search")
    fine_params = [p for p in space.params if p.section == "finetune"]
    if cfg.search == "grid":
        param_space = {p.name: _tune_param(p, True) for p in fine_params}
        if space.pretext_params():
            param_space[PRETEXT] = tune.grid_search(feasible)
        return param_space, None, scheduler, said
    startup = startup_trials(cfg.num_samples, cfg.startup_trials)
    try:
        sampler_space = FeasibleSpaceSampler.build(space, resolved.pretrain, feasible)
        param_space = {}
    except SpaceError:  # a pretext range: sampled as declared, a combination that does not fit scores the worst
        sampler_space = None
        param_space = {p.name: _tune_param(p, False) for p in space.params}
        said.append("pretext ranges cannot be narrowed to feasible combinations: a trial that samples one "
                    "that does not fit scores 0 and is listed as infeasible")
    url, storage, name = _study(cfg, out, sampler_space, resuming, log)
    search = PatchraySearch(sampler_space, metric=f"val_{cfg.metric}", sampler=tpe_sampler(cfg.seed, startup),
                            planned_epochs=PlannedEpochs(resolved.trial_epochs()), rung_log=out / RUNG_LOG,
                            storage=storage, study_name=name)
    said.append(f"TPE: {startup} random trial(s) of {cfg.num_samples}, then modelled (multivariate, constant "
                f"liar, seed {cfg.seed}); study {name} in {url}")
    return param_space, search, scheduler, said


def tune_verbosity() -> int:
    """Ray Tune's own progress tables (trial status, each trial's config) only with --verbose: by default a
    search prints patchray's lines (the trials' epochs, the summary). Without it Tune also runs its legacy
    reporter, the one that verbosity 0 silences: the newer one prints its experiment box, the results folder and
    a TensorBoard hint at any verbosity (RAY_AIR_NEW_OUTPUT, read when a search starts; a value the user set is
    kept)."""
    from patchray.console import verbose_from_env

    if verbose_from_env():
        return 1
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    return 0


def tune_callbacks(cfg: TuneConfig, out: Path, experiment: str, log=print) -> list:
    """Ray Tune's own logger callbacks for ``cfg.tracking``: one MLflow run per trial (its sampled config as
    params, each epoch's report as metrics) in the experiment ``patchray-tune``, or TensorBoard event files in
    each trial's folder."""
    if cfg.tracking == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        # The experiment is made here so that, with the local default store, the artifacts land in OUT/mlruns
        # (Ray's callback would make it with MLflow's default artifact root, relative to the working directory).
        uri, _, _ = tracking.mlflow_store(out, cfg.tracking_uri, "tune")
        log(f"[tune] tracking: an MLflow run per trial in experiment {tracking.EXPERIMENT_PREFIX}tune, {uri}")
        return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=tracking.EXPERIMENT_PREFIX + "tune",
                                     tags={"patchray.search": cfg.name})]
    if cfg.tracking == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        log(f"[tune] tracking: TensorBoard events in each trial's folder (tensorboard --logdir {experiment})")
        return [TBXLoggerCallback()]
    return []


def track_outcome(cfg: TuneConfig, out: Path, summary: dict, trials: int, log=print) -> None:
    """With MLflow, one more run for the search as a whole: its config, the chosen configuration's scores and
    the search's tables and plots. (TensorBoard shows the trials' curves; the outputs stay in the folder.)"""
    if cfg.tracking != "mlflow":
        return
    spec = tracking.start("mlflow", cfg.tracking_uri, out, "tune", cfg.name, configlib.to_dict(cfg), log)
    best = summary.get("best") or {}  # the chosen configuration's mean, std and test scores
    numbers = {"trials": trials} | {k: v for k, v in best.items() if isinstance(v, (int, float))}
    tracking.finish(spec, numbers, 0, [out / name for name in TRACKED_OUTPUTS])


# The search's outputs kept as artifacts of its MLflow run.
TRACKED_OUTPUTS = ("config.yaml", "summary.json", "trials.md", "trials.csv", "confirmation.md", "objective.png",
                   "heatmap.png", "importances.png", "best_pretrain.yaml", "best_finetune.yaml")


def run_tune(cfg: TuneConfig, log=print) -> dict:
    os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", TRIAL_CLEANUP_S)
    import ray
    from ray import tune

    from patchray.train.runner import default_storage, init_ray, run_dir
    from patchray.tune.search_alg import RUNG_LOG

    t0 = time.time()
    cfg.check()
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    storage = default_storage(cfg.storage)
    experiment = f"{storage.rstrip('/')}/tune-{cfg.name}" if storage else str(out / "ray" / "tune")
    saved = out / "config.yaml"
    resuming = tune.Tuner.can_restore(experiment)
    if resuming and saved.exists():
        _check_same_experiment(saved, cfg)
    configlib.dump_yaml(cfg, saved)
    space = cfg.search_space()
    init_ray()
    cluster = ray.cluster_resources()
    resources = trial_resources(cluster.get("CPU", 0), cluster.get("GPU", 0), cfg.max_concurrent_trials,
                                cfg.gpus_per_trial)
    resolved = _resolve_data(cfg, log)
    check_caches_fit(resolved, resources)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, tune_cfg=configlib.to_dict(resolved), out=str(out), resources=resources),
        {"cpu": TRIAL_DRIVER_CPU})
    metric = f"val_{cfg.metric}"
    if resuming:
        log(f"[tune] resuming {experiment}: finished trials are kept, unfinished ones continue; ASHA's rungs "
            f"come back from {RUNG_LOG}")
        tuner = tune.Tuner.restore(experiment, trainable, resume_errored=True)
    else:
        (out / RUNG_LOG).unlink(missing_ok=True)  # a fresh search: rungs of an earlier one would judge its trials
        param_space, search, scheduler, said = _search_parts(cfg, space, resolved, out, resuming, log)
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=metric, mode="max", num_samples=1 if cfg.search == "grid" else cfg.num_samples,
                max_concurrent_trials=cfg.max_concurrent_trials, time_budget_s=cfg.time_budget_s,
                search_alg=search, scheduler=scheduler),
            run_config=tune.RunConfig(name=experiment.rsplit("/", 1)[1], storage_path=experiment.rsplit("/", 1)[0],
                                      verbose=tune_verbosity(), callbacks=tune_callbacks(cfg, out, experiment, log)),
        )
        log(f"[tune] {cfg.search} search, {cfg.scheduler} scheduling, objective {metric}; output -> {out}")
        for line in said:
            log(f"[tune] {line}")
    grid_result = tuner.fit()
    records = records_from(grid_result, cfg, out / "trials", out / RUNG_LOG)
    confirmations = confirm_top(cfg, records, trainable, experiment, log)
    summary = write_outputs(out, cfg, records, time.time() - t0, confirmations,
                            extra={"resources_per_trial": resources})
    track_outcome(cfg, out, summary, len(records), log)
    log(format_summary(summary))
    return summary
