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
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from patchray import config as configlib
from patchray.ray_compat import trial_statuses
from patchray.tune import results as res
from patchray.tune.rungs import asha_max_t, asha_rungs
from patchray.tune.sampler import startup_trials
from patchray.tune.space import FeasibleSpaceSampler, SearchSpace, SpaceError, build_section, feasible_pretext

# The driver of a trial only waits for its trainer; the trainer's workers and Ray Data hold the real CPUs.
TRIAL_DRIVER_CPU = 0.01
# A trial stopped by ASHA is blocked inside TorchTrainer.fit, so Tune only frees it by force; its default wait
# (600 s) would hold the trial's workers, and the next trial's trainer would wait with them.
TRIAL_CLEANUP_S = "20"


@dataclass
class TuneConfig:
    name: str = "tune"
    out: str = "runs"
    # Shared URI (s3://, gs://, NFS path) for Tune's experiment state and the trials' Ray Train checkpoints on a
    # multi-node cluster; None keeps them under OUT/NAME/ray. The pretraining cache lives under OUT, which must
    # then be a shared filesystem too.
    storage: str | None = None
    metric: Literal["mA", "mAP"] = "mA"  # validation objective after fine-tuning
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
    space: dict[str, Any] = field(default_factory=lambda: {
        "pretrain": {"task.patch_size": {"choice": [24, 32]}, "task.grid": {"choice": ["2x4", "3x6"]}},
        "finetune": {"optim.lr": {"loguniform": [0.001, 0.01]}},
    })
    # Base configs of every trial (the space's samples go on top); trials fine-tune from their pretraining.
    pretrain: dict[str, Any] = field(default_factory=lambda: {"epochs": 2, "max_crops": 3000})
    # loss "balanced": with plain cross-entropy at 250 labels every trial stays near the majority class (chance
    # mA) and the search ranks noise; 600 val crops drawn with val_seed, the same for every trial.
    finetune: dict[str, Any] = field(default_factory=lambda: {
        "epochs": 6, "labels": 250, "val_limit": 600, "loss": "balanced"})

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
            if self.scheduler == "asha":
                asha_max_t(self.grace_period, self.min_finetune_epochs())
        except ValueError as e:
            raise configlib.ConfigError(str(e)) from None

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


CONFIRM = "confirm"  # a confirmation run's config: {"params": the configuration's values, "seed": s, "of": trial}
PRETEXT = "pretext"  # where grid search passes a feasible pretext combination (values keyed by Param.name)


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


def trial_params(config: dict, space: SearchSpace) -> dict:
    """A trial's sampled values keyed by Param.name, however Tune passed them: flat (Optuna, with the narrowed
    names of ``FeasibleSpaceSampler`` beside the plain ones), a pretext combination plus flat fine-tuning values
    (grid), or a confirmation run's."""
    if CONFIRM in config:
        return dict(config[CONFIRM]["params"])
    flat = {k: v for k, v in config.items() if k != PRETEXT} | dict(config.get(PRETEXT) or {})
    return {p.name: flat[p.name] for p in space.params if p.name in flat}


def split_gpus(cluster_gpus: float, max_concurrent_trials: int) -> float:
    """GPUs per trial when ``max_concurrent_trials`` share the cluster's: whole GPUs when there are enough,
    else an equal fraction of one (every GPU shared by the same number of trials)."""
    if cluster_gpus < 1:
        return 0.0
    if cluster_gpus >= max_concurrent_trials:
        return float(int(cluster_gpus // max_concurrent_trials))
    return 1.0 / math.ceil(max_concurrent_trials / int(cluster_gpus))


def trial_resources(cluster_cpus: float, cluster_gpus: float, max_concurrent_trials: int,
                    gpus_per_trial: float | None = None) -> dict[str, Any]:
    """The ``resources.*`` overrides of every trial's pretraining and fine-tuning, so that concurrent trials
    split the cluster: each plans on its CPU share (the rest is reserved for the others and for the trial
    drivers) and on its GPUs (whole ones as data-parallel workers, or a fraction of one for one worker).
    Refused when a trial's share would starve Ray Data, or the GPUs asked for are not there."""
    from patchray.train.resources import MIN_DATA_CPUS, ResourceError

    n = max_concurrent_trials
    share = (cluster_cpus - TRIAL_DRIVER_CPU * n) / n
    if share < MIN_DATA_CPUS + 0.5:
        most = max(1, int((cluster_cpus - TRIAL_DRIVER_CPU) // 2))
        raise ResourceError(f"max_concurrent_trials={n} on {cluster_cpus:g} CPUs leaves {share:.2f} CPU per "
                            f"trial: Ray Data would starve and the search hang; at most {most} here")
    overrides: dict[str, Any] = {"resources.reserved_cpus": cluster_cpus - share}
    gpus = split_gpus(cluster_gpus, n) if gpus_per_trial is None else gpus_per_trial
    if gpus > 0:
        if gpus * n > cluster_gpus + 1e-9:
            raise ResourceError(f"gpus_per_trial={gpus:g} x max_concurrent_trials={n} needs {gpus * n:g} GPUs, the "
                                f"cluster has {cluster_gpus:g}")
        if gpus > 1 and not float(gpus).is_integer():
            raise ResourceError(f"gpus_per_trial={gpus:g}: above 1, whole GPUs only")
        whole = gpus >= 1
        overrides |= {"resources.use_gpu": True, "resources.num_workers": int(gpus) if whole else 1,
                      "resources.gpus_per_worker": 1.0 if whole else gpus,
                      "resources.reserved_gpus": cluster_gpus - gpus}
    return overrides


def _pretraining(pretrain, out: str, user: str):
    """The cached pretraining of this pretext configuration (``cache.Pretrained``): trained now under the
    entry's lock if missing, continued from a cached shorter one of the same lineage where there is one."""
    from patchray.shards.reader import open_shards
    from patchray.train.pretrain import run_pretrain
    from patchray.train.runner import plan_for_cluster
    from patchray.tune.cache import PretrainCache, cached_pretraining

    shards = open_shards(pretrain.data)
    # The key holds the training workers as planned (their number sets the global batch, GPU or CPU the
    # precision). Planned here as run_pretrain plans them, and pinned where pinning leaves the plan as it is,
    # so that the run trains what the key names even if the cluster changes in between.
    plan = plan_for_cluster(pretrain.resources)
    pinned = dataclasses.replace(pretrain, resources=dataclasses.replace(
        pretrain.resources, num_workers=plan.num_workers, use_gpu=plan.use_gpu))
    if plan_for_cluster(pinned.resources) == plan:
        pretrain = pinned
    cache = PretrainCache(Path(out).parent / "pretrain_cache")  # beside the experiments: shared by all of them
    return cached_pretraining(cache, pretrain, shards.fingerprint, num_workers=plan.num_workers,
                              use_gpu=plan.use_gpu, user=user, train=run_pretrain)


def run_trial(config: dict, *, tune_cfg: dict, out: str, resources: dict) -> None:
    """One trial (runs inside a Tune trial actor): cached pretraining, then fine-tuning reported to Tune. A
    search trial scores validation only; a confirmation run (``CONFIRM``) uses its own seed and is tested."""
    import ray.tune

    from patchray.train.finetune import run_finetune
    from patchray.train.runner import DivergedError
    from patchray.tune.search_alg import DIVERGED, EPOCHS_DONE, INFEASIBLE, WORST_SCORE, EpochReportCallback

    cfg = configlib.build(TuneConfig, tune_cfg)
    space = cfg.search_space()
    pre_overrides, fine_overrides = space.split(trial_params(config, space))
    metric = f"val_{cfg.metric}"
    try:
        pretrain = build_section("pretrain", cfg.pretrain, pre_overrides | resources)
    except configlib.ConfigError as e:
        # Only where the space could not be narrowed to feasible combinations (a pretext range): scored as the
        # worst outcome, so that TPE learns to stay away, at epoch 0, below every ASHA rung.
        print(f"[tune] infeasible pretext combination {pre_overrides}: {e}")
        ray.tune.report({metric: WORST_SCORE, INFEASIBLE: 1, EPOCHS_DONE: 0})
        return
    trial_id = ray.tune.get_context().get_trial_id()
    pretrained = _pretraining(pretrain, out, trial_id)
    print(f"[tune] {pretrained.describe()}")
    folder = pretrained.folder
    confirming = CONFIRM in config
    extra = {"seed": config[CONFIRM]["seed"], "evaluate_test": True} if confirming else {"evaluate_test": False}
    finetune = build_section("finetune", cfg.finetune, fine_overrides | resources | extra)
    # Named by trial id (kept across a resume), so a restarted trial continues its own fine-tuning checkpoint.
    finetune = dataclasses.replace(finetune, name=trial_id, out=str(Path(out) / (CONFIRM if confirming else "trials")),
                                   init=f"patchtask:{folder}", eval_every=1)
    try:
        run_finetune(finetune, callbacks=[EpochReportCallback()])
    except DivergedError as e:
        print(f"[tune] trial {trial_id} diverged, scored {WORST_SCORE:g} (the worst): {e}")
        ray.tune.report({metric: WORST_SCORE, DIVERGED: 1, EPOCHS_DONE: 0})


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


def _trial_id_and_index(result) -> tuple[str, int]:
    """Tune names a trial's folder "<trainable>_<trial id>_<launch index>_<params>_<date>"."""
    parts = Path(result.path).name.removeprefix(f"{run_trial.__name__}_").split("_")
    trial_id = (result.metrics or {}).get("trial_id") or parts[0]
    return trial_id, int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def records_from(result_grid, cfg: TuneConfig, trials_dir: Path, rung_log: Path) -> list:
    """Tune's results as plain records, in launch order (a restored ResultGrid comes in another order)."""
    from patchray.tune.search_alg import DIVERGED, EPOCHS_DONE, INFEASIBLE, stopped_by_asha

    space, metric = cfg.search_space(), f"val_{cfg.metric}"
    states = trial_statuses(result_grid)  # an interrupted experiment leaves some RUNNING / PENDING
    stopped = stopped_by_asha(rung_log)
    records = []
    for result in sorted(result_grid, key=lambda r: _trial_id_and_index(r)[1]):
        frame = result.metrics_dataframe
        metrics = result.metrics or {}
        epochs_run = 0 if frame is None or "epoch" not in frame else int(frame["epoch"].dropna().nunique())
        trial_id, _ = _trial_id_and_index(result)
        params = trial_params(result.config or {}, space)
        infeasible = bool(metrics.get(INFEASIBLE))
        ended = states.get(trial_id, "TERMINATED") in ("TERMINATED", "ERROR")
        status = res.trial_status(epochs_run, cfg.finetune_epochs(params, space), result.error is not None, infeasible,
                                  ended, diverged=bool(metrics.get(DIVERGED)), asha_stopped=trial_id in stopped)
        at_grace = None
        if frame is not None and metric in frame and EPOCHS_DONE in frame and not infeasible:
            rung = frame[frame[EPOCHS_DONE] == cfg.grace_period][metric].dropna()
            at_grace = float(rung.iloc[-1]) if len(rung) else None
        records.append(res.TrialRecord(
            trial_id=trial_id, params=params, status=status, epochs=epochs_run, at_grace=at_grace,
            objective=None if infeasible else metrics.get(metric),
            metrics={k: v for k, v in metrics.items() if k.startswith("val_") and v is not None},
            folder=str(trials_dir / trial_id)))
    return records


def _best_entry(cfg: TuneConfig, records: list, confirmations: list) -> tuple[dict | None, res.TrialRecord | None]:
    """The chosen configuration for summary.json, and its search trial: the best mean over seeds when the top
    configurations were confirmed, else the best single trial (then without test numbers: none were made)."""
    metric = f"val_{cfg.metric}"
    chosen = res.confirmed_best(confirmations)
    if chosen is None:
        best = res.best_record(records)
        if best is None:
            return None, None
        return {"trial": best.trial_id, "params": best.params, metric: best.objective, "seeds": 1,
                "test": "not evaluated (confirm_top_k=0 or confirm_seeds=1: no confirmation runs)"}, best
    trial = next(r for r in records if r.trial_id == chosen.trial_id)
    entry = {"trial": chosen.trial_id, "params": chosen.params, metric: chosen.mean, f"{metric}_std": chosen.std,
             "seeds": len(chosen.val), "per_seed": chosen.val, "search_trial_value": trial.objective}
    for key, values in sorted(chosen.test.items()):
        stats = res.mean_std(values)
        entry[key], entry[f"{key}_std"] = stats["mean"], stats["std"]
    entry["test_runs"] = max((len(v) for v in chosen.test.values()), default=0)
    return entry, trial


def write_outputs(out: Path, cfg: TuneConfig, records: list, wall_s: float, confirmations: list | None = None,
                  extra: dict | None = None) -> dict:
    from patchray.report import plots

    confirmations = confirmations or []
    space = cfg.search_space()
    metric = f"val_{cfg.metric}"
    res.write_csv(records, space, metric, out / "trials.csv")
    (out / "trials.md").write_text(f"# Trials of {cfg.name}\n\n" + res.table_markdown(records, space, metric))
    plots.plot_tune_objective([dataclasses.asdict(r) for r in records], cfg.metric, out / "objective.png")
    written = ["trials.csv", "trials.md", "objective.png"]
    if confirmations:
        (out / "confirmation.md").write_text(
            f"# The top {len(confirmations)} configurations of {cfg.name}, over seeds\n\n"
            + res.confirmation_markdown(confirmations, metric, space))
        written.append("confirmation.md")
    importances, basis = res.importances(records, space, cfg.seed)
    if importances:
        plots.plot_importances(importances, out / "importances.png", basis)
        written.append("importances.png")
    cells = res.heatmap(records)
    if cells:
        plots.plot_heatmap(*cells, cfg.metric, out / "heatmap.png")
        written.append("heatmap.png")
    best, trial = _best_entry(cfg, records, confirmations)
    if best is not None:
        pre, fine = space.split(best["params"])
        configlib.dump_yaml(build_section("pretrain", cfg.pretrain, pre), out / "best_pretrain.yaml")
        best_fine = build_section("finetune", cfg.finetune, fine)
        # jobs/finetune.py --init patchtask:<this> reuses the pretraining the best trial started from.
        best_fine = dataclasses.replace(best_fine, init=_trial_init(trial.folder) or best_fine.init)
        configlib.dump_yaml(best_fine, out / "best_finetune.yaml")
        written += ["best_pretrain.yaml", "best_finetune.yaml"]
    summary = {
        "name": cfg.name, "metric": metric, "search": cfg.search, "scheduler": cfg.scheduler,
        "trials": len(records), "epochs_spent": res.epochs_spent(records),
        "status": {s: sum(r.status == s for r in records) for s in res.STATUSES},
        "best": best,
        "confirmation": [{"trial": c.trial_id, "params": c.params, "mean": c.mean, "std": c.std, "per_seed": c.val,
                          "seeds": c.seeds} for c in confirmations],
        "importances": importances, "importances_on": basis, "wall_s": round(wall_s, 1), "outputs": written,
        "folder": str(out), **(extra or {}),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _trial_init(folder: str | None) -> str | None:
    config = Path(folder or "") / "config.yaml"
    if not config.exists():
        return None
    from patchray.train.config import FinetuneConfig

    return configlib.load(FinetuneConfig, config).init


def format_summary(summary: dict) -> str:
    metric = summary["metric"]
    test = metric.replace("val_", "test_")
    lines = [f"[tune] {summary['trials']} trial(s) in {summary['wall_s']:.0f} s, {summary['epochs_spent']} "
             f"fine-tuning epochs; " + ", ".join(f"{n} {s}" for s, n in summary["status"].items() if n)]
    best = summary["best"]
    if best and best.get("seeds", 1) > 1:
        lines.append(f"[tune] chosen: {metric} {best[metric]:.4f} +- {best[f'{metric}_std']:.4f} over "
                     f"{best['seeds']} seeds (test {test} {best.get(test, float('nan')):.4f} +- "
                     f"{best.get(f'{test}_std', float('nan')):.4f} over {best.get('test_runs', 0)} confirmation "
                     f"run(s)) with {best['params']}")
    elif best:
        lines.append(f"[tune] best {metric} {best[metric]:.4f} (one seed; no test numbers) with {best['params']}")
    else:
        lines.append("[tune] no trial completed: no best configuration written")
    lines.append(f"[tune] outputs in {summary['folder']}: {', '.join(summary['outputs'])}, summary.json")
    return "\n".join(lines)


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
    if cfg.scheduler == "asha":
        max_t = asha_max_t(cfg.grace_period, cfg.min_finetune_epochs())
        scheduler = RecordedASHA(out / RUNG_LOG, grace_period=cfg.grace_period,
                                 reduction_factor=cfg.reduction_factor, max_t=max_t)
        said.append(f"ASHA rungs at epochs {asha_rungs(cfg.grace_period, cfg.reduction_factor, max_t)} "
                    f"(a trial's last epoch, {cfg.min_finetune_epochs()} or more, is never judged)")
    feasible = feasible_pretext(space, resolved.pretrain)
    total, refused = space.infeasible_pretext(resolved.pretrain)
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
        sampler_space = FeasibleSpaceSampler.build(space, resolved.pretrain)
        param_space = {}
    except SpaceError:  # a pretext range: sampled as declared, a combination that does not fit scores the worst
        sampler_space = None
        param_space = {p.name: _tune_param(p, False) for p in space.params}
        said.append("pretext ranges cannot be narrowed to feasible combinations: a trial that samples one "
                    "that does not fit scores 0 and is listed as infeasible")
    url, storage, name = _study(cfg, out, sampler_space, resuming, log)
    search = PatchraySearch(sampler_space, metric=f"val_{cfg.metric}", sampler=tpe_sampler(cfg.seed, startup),
                            planned_epochs=PlannedEpochs(resolved.finetune_epochs()), rung_log=out / RUNG_LOG,
                            storage=storage, study_name=name)
    said.append(f"TPE: {startup} random trial(s) of {cfg.num_samples}, then modelled (multivariate, constant "
                f"liar, seed {cfg.seed}); study {name} in {url}")
    return param_space, search, scheduler, said


def _confirm(cfg: TuneConfig, records: list, trainable, experiment: str, log) -> list:
    """Fine-tune the top configurations again with other seeds (a second, FIFO Tune experiment beside the
    search's, resumable like it); their test numbers are made here, and only the chosen one's are reported."""
    from ray import tune

    from patchray.tune.search_alg import DIVERGED, WORST_SCORE

    top = res.top_configurations(records, cfg.confirm_top_k)
    if not top or cfg.confirm_seeds < 2:
        return []
    metric = f"val_{cfg.metric}"
    base_seed = build_section("finetune", cfg.finetune, {}).seed
    runs = [{"params": r.params, "seed": base_seed + i, "of": r.trial_id}
            for r in top for i in range(1, cfg.confirm_seeds)]
    path = f"{experiment}-{CONFIRM}"
    log(f"[tune] confirming the top {len(top)} configuration(s) with {cfg.confirm_seeds - 1} more seed(s) each: "
        f"{len(runs)} fine-tuning run(s)")
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space={CONFIRM: tune.grid_search(runs)},
                           tune_config=tune.TuneConfig(max_concurrent_trials=cfg.max_concurrent_trials),
                           run_config=tune.RunConfig(name=path.rsplit("/", 1)[1], storage_path=path.rsplit("/", 1)[0],
                                                     verbose=1))
    by_trial = {r.trial_id: res.Confirmation(r.trial_id, r.params, [r.objective], seeds=[base_seed]) for r in top}
    for result in tuner.fit():
        run, metrics = (result.config or {}).get(CONFIRM), result.metrics or {}
        if run is None or run["of"] not in by_trial or result.error is not None:
            continue  # a failed confirmation run is left out: its configuration is judged on fewer seeds
        confirmation = by_trial[run["of"]]
        confirmation.seeds.append(run["seed"])
        confirmation.val.append(WORST_SCORE if metrics.get(DIVERGED) else float(metrics[metric]))
        for key, value in metrics.items():
            if key.startswith("test_") and value is not None:
                confirmation.test.setdefault(key, []).append(float(value))
    return list(by_trial.values())


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
                                      verbose=1),
        )
        log(f"[tune] {cfg.search} search, {cfg.scheduler} scheduling, objective {metric}; output -> {out}")
        for line in said:
            log(f"[tune] {line}")
    grid_result = tuner.fit()
    records = records_from(grid_result, cfg, out / "trials", out / RUNG_LOG)
    confirmations = _confirm(cfg, records, trainable, experiment, log)
    summary = write_outputs(out, cfg, records, time.time() - t0, confirmations,
                            extra={"resources_per_trial": resources})
    log(format_summary(summary))
    return summary
