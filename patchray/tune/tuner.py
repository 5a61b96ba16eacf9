"""Ray Tune over the pretext task and fine-tuning: OptunaSearch (TPE, seeded) + ASHA, scored downstream.

Each trial is a function trainable that (1) gets the pretraining of its pretext
configuration from the content-hashed cache, training it under a lock if it is
missing, and (2) fine-tunes from it with a TorchTrainer whose worker metrics
Tune's TuneReportCallback forwards, so ASHA can stop weak runs after any epoch.
The same experiment name resumes: Tune restores its trials and searcher, and a
fine-tuning cut off mid-way continues from its own Ray Train checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from patchray import config as configlib
from patchray.ray_compat import trial_statuses
from patchray.tune import results as res
from patchray.tune.space import SearchSpace, build_section

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
    time_budget_s: float | None = 780.0  # stop launching and running trials after this long
    max_concurrent_trials: int = 1  # each trial runs its own trainer plus Ray Data: 2 CPUs per trial at least
    seed: int = 0
    grace_period: int = 1           # ASHA: epochs every trial gets before it may be stopped
    reduction_factor: int = 2       # ASHA: keep the best 1/rf at each rung
    space: dict[str, Any] = field(default_factory=lambda: {
        "pretrain": {"task.patch_size": {"choice": [24, 32]}, "task.grid": {"choice": ["2x4", "3x6"]}},
        "finetune": {"optim.lr": {"loguniform": [0.001, 0.01]}},
    })
    # Base configs of every trial (the space's samples go on top); trials fine-tune from their pretraining.
    pretrain: dict[str, Any] = field(default_factory=lambda: {"epochs": 2, "max_crops": 3000})
    finetune: dict[str, Any] = field(default_factory=lambda: {"epochs": 4, "labels": 250, "val_limit": 400})

    def __post_init__(self):
        if self.num_samples < 1 or self.max_concurrent_trials < 1 or self.grace_period < 1:
            raise ValueError("num_samples, max_concurrent_trials and grace_period must be >= 1")
        if self.reduction_factor < 2:
            raise ValueError("reduction_factor must be >= 2")
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
        except ValueError as e:
            raise configlib.ConfigError(str(e)) from None

    def finetune_epochs(self, params: dict | None = None, space: SearchSpace | None = None) -> int:
        """Fine-tuning epochs of a trial with these sampled values (the base config's with none). Pass the
        ``space`` when it is at hand: building it checks every pretext combination again."""
        _, fine = (space or self.search_space()).split(params) if params else ({}, {})
        return build_section("finetune", self.finetune, fine).epochs

    def max_finetune_epochs(self) -> int:
        epochs = [p for p in self.search_space().params if p.name == "finetune.epochs"]
        return max(int(v) for v in epochs[0].candidates()) if epochs else self.finetune_epochs()


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


def run_trial(params: dict, *, tune_cfg: dict, out: str, reserved_cpus: float) -> None:
    """One trial (runs inside a Tune trial actor): cached pretraining, then fine-tuning reported to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from patchray.shards.reader import open_shards
    from patchray.train.finetune import run_finetune
    from patchray.train.pretrain import run_pretrain
    from patchray.train.runner import plan_for_cluster
    from patchray.tune.cache import PretrainCache, pretext_key

    cfg = configlib.build(TuneConfig, tune_cfg)
    pre_overrides, fine_overrides = cfg.search_space().split(params)
    held = {"resources.reserved_cpus": reserved_cpus}
    try:
        pretrain = build_section("pretrain", cfg.pretrain, pre_overrides | held)
    except configlib.ConfigError as e:
        # A patch size and grid that do not fit the crop together. Scored as the worst outcome, so that TPE
        # learns to stay away; listed as infeasible, not as a result, in the outputs.
        print(f"[tune] infeasible pretext combination {pre_overrides}: {e}")
        ray.tune.report({f"val_{cfg.metric}": 0.0, "infeasible": 1})
        return
    shards = open_shards(pretrain.data)
    # The key holds the training workers as planned (their number sets the global batch, GPU or CPU the
    # precision). Planned here as run_pretrain plans them, and pinned where pinning leaves the plan as it is,
    # so that the run trains what the key names even if the cluster changes in between.
    plan = plan_for_cluster(pretrain.resources)
    pinned = dataclasses.replace(pretrain, resources=dataclasses.replace(
        pretrain.resources, num_workers=plan.num_workers, use_gpu=plan.use_gpu))
    if plan_for_cluster(pinned.resources) == plan:
        pretrain = pinned
    key = pretext_key(pretrain, shards.fingerprint,
                      num_workers=plan.num_workers, use_gpu=plan.use_gpu)
    cache = PretrainCache(Path(out).parent / "pretrain_cache")  # beside the experiments: shared by all of them
    trial_id = ray.tune.get_context().get_trial_id()
    folder, trained = cache.get_or_train(
        key, lambda f: run_pretrain(dataclasses.replace(pretrain, out=str(f.parent), name=key)), user=trial_id)
    print(f"[tune] pretraining {key}: {'trained now' if trained else 'taken from the cache'} ({folder})")
    finetune = build_section("finetune", cfg.finetune, fine_overrides | held)
    # Named by trial id (kept across a resume), so a restarted trial continues its own fine-tuning checkpoint.
    finetune = dataclasses.replace(finetune, name=trial_id, out=str(Path(out) / "trials"),
                                   init=f"patchtask:{folder}", eval_every=1)
    run_finetune(finetune, callbacks=[TuneReportCallback()])


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


def _plan_trial_cpus(cfg: TuneConfig) -> float:
    """CPUs each trial must leave to the others (and to the trial drivers); refuses starving Ray Data."""
    import ray

    from patchray.train.resources import MIN_DATA_CPUS, ResourceError

    cpus = ray.cluster_resources().get("CPU", 0)
    share = (cpus - TRIAL_DRIVER_CPU * cfg.max_concurrent_trials) / cfg.max_concurrent_trials
    if share < MIN_DATA_CPUS + 0.5:
        most = max(1, int((cpus - TRIAL_DRIVER_CPU) // 2))
        raise ResourceError(f"max_concurrent_trials={cfg.max_concurrent_trials} on {cpus:g} CPUs leaves "
                            f"{share:.2f} CPU per trial: Ray Data would starve and the search hang; "
                            f"at most {most} here")
    return cpus - share


def _trial_id_and_index(result) -> tuple[str, int]:
    """Tune names a trial's folder "<trainable>_<trial id>_<launch index>_<params>_<date>"."""
    parts = Path(result.path).name.removeprefix(f"{run_trial.__name__}_").split("_")
    trial_id = (result.metrics or {}).get("trial_id") or parts[0]
    return trial_id, int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def records_from(result_grid, cfg: TuneConfig, trials_dir: Path) -> list:
    """Tune's results as plain records, in launch order (a restored ResultGrid comes in another order)."""
    space, metric = cfg.search_space(), f"val_{cfg.metric}"
    states = trial_statuses(result_grid)  # an interrupted experiment leaves some RUNNING / PENDING
    records = []
    for result in sorted(result_grid, key=lambda r: _trial_id_and_index(r)[1]):
        frame = result.metrics_dataframe
        metrics = result.metrics or {}
        epochs_run = 0 if frame is None or "epoch" not in frame else int(frame["epoch"].nunique())
        trial_id, _ = _trial_id_and_index(result)
        params = {p.name: (result.config or {}).get(p.name) for p in space.params}
        infeasible = bool(metrics.get("infeasible"))
        ended = states.get(trial_id, "TERMINATED") in ("TERMINATED", "ERROR")
        status = res.trial_status(epochs_run, cfg.finetune_epochs(params, space), result.error is not None, infeasible,
                                  ended)
        at_grace = None
        if frame is not None and metric in frame and "training_iteration" in frame and not infeasible:
            rung = frame[frame["training_iteration"] == cfg.grace_period][metric].dropna()
            at_grace = float(rung.iloc[-1]) if len(rung) else None
        records.append(res.TrialRecord(
            trial_id=trial_id, params=params, status=status, epochs=epochs_run, at_grace=at_grace,
            objective=None if infeasible else metrics.get(metric),
            metrics={k: v for k, v in metrics.items() if k.startswith(("val_", "test_")) and v is not None},
            folder=str(trials_dir / trial_id)))
    return records


def write_outputs(out: Path, cfg: TuneConfig, records: list, wall_s: float) -> dict:
    from patchray.report import plots

    space = cfg.search_space()
    metric = f"val_{cfg.metric}"
    res.write_csv(records, space, metric, out / "trials.csv")
    (out / "trials.md").write_text(f"# Trials of {cfg.name}\n\n" + res.table_markdown(records, space, metric))
    plots.plot_tune_objective([dataclasses.asdict(r) for r in records], cfg.metric, out / "objective.png")
    written = ["trials.csv", "trials.md", "objective.png"]
    importances, basis = res.importances(records, space, cfg.seed)
    if importances:
        plots.plot_importances(importances, out / "importances.png", basis)
        written.append("importances.png")
    cells = res.heatmap(records)
    if cells:
        plots.plot_heatmap(*cells, cfg.metric, out / "heatmap.png")
        written.append("heatmap.png")
    best = res.best_record(records)
    if best is not None:
        pre, fine = space.split(best.params)
        configlib.dump_yaml(build_section("pretrain", cfg.pretrain, pre), out / "best_pretrain.yaml")
        best_fine = build_section("finetune", cfg.finetune, fine)
        # jobs/finetune.py --init patchtask:<this> reuses the pretraining the best trial started from.
        best_fine = dataclasses.replace(best_fine, init=_trial_init(best.folder) or best_fine.init)
        configlib.dump_yaml(best_fine, out / "best_finetune.yaml")
        written += ["best_pretrain.yaml", "best_finetune.yaml"]
    summary = {
        "name": cfg.name, "metric": metric, "search": cfg.search, "scheduler": cfg.scheduler,
        "trials": len(records), "epochs_spent": res.epochs_spent(records),
        "status": {s: sum(r.status == s for r in records) for s in res.STATUSES},
        "best": None if best is None else {"trial": best.trial_id, "params": best.params, metric: best.objective,
                                           **best.metrics},
        "importances": importances, "importances_on": basis, "wall_s": round(wall_s, 1), "outputs": written,
        "folder": str(out),
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
    lines = [f"[tune] {summary['trials']} trial(s) in {summary['wall_s']:.0f} s, {summary['epochs_spent']} "
             f"fine-tuning epochs; {summary['status']}"]
    best = summary["best"]
    if best:
        lines.append(f"[tune] best {metric} {best[metric]:.4f} (test {metric.replace('val_', 'test_')} "
                     f"{best.get(metric.replace('val_', 'test_'), float('nan')):.4f}) with {best['params']}")
    else:
        lines.append("[tune] no trial completed: no best configuration written")
    lines.append(f"[tune] outputs in {summary['folder']}: {', '.join(summary['outputs'])}, summary.json")
    return "\n".join(lines)


def run_tune(cfg: TuneConfig, log=print) -> dict:
    os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", TRIAL_CLEANUP_S)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from patchray.train.runner import default_storage, init_ray, run_dir

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
    reserved = _plan_trial_cpus(cfg)
    resolved = _resolve_data(cfg, log)
    total, infeasible = space.infeasible_pretext(cfg.pretrain)
    if infeasible:
        log(f"[tune] {len(infeasible)} of {total} pretext combinations do not fit the crop (e.g. "
            f"{infeasible[0][1]}); trials that sample one score 0 at once and are listed as infeasible")
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, tune_cfg=configlib.to_dict(resolved), out=str(out), reserved_cpus=reserved),
        {"cpu": TRIAL_DRIVER_CPU})
    metric, epochs = f"val_{cfg.metric}", cfg.max_finetune_epochs()
    if resuming:
        log(f"[tune] resuming {experiment}: finished trials are kept, unfinished ones continue")
        tuner = tune.Tuner.restore(experiment, trainable, resume_errored=True)
    else:
        grid = cfg.search == "grid"
        # max_t beyond the last epoch: ASHA never cuts a trial at its final report, so it ends by itself
        # (writing its test metrics) instead of being killed.
        scheduler = (ASHAScheduler(time_attr="training_iteration", grace_period=cfg.grace_period,
                                   reduction_factor=cfg.reduction_factor, max_t=epochs + 1)
                     if cfg.scheduler == "asha" else FIFOScheduler())
        tuner = tune.Tuner(
            trainable,
            param_space={p.name: _tune_param(p, grid) for p in space.params},
            tune_config=tune.TuneConfig(
                metric=metric, mode="max", num_samples=1 if grid else cfg.num_samples,
                max_concurrent_trials=cfg.max_concurrent_trials, time_budget_s=cfg.time_budget_s,
                search_alg=None if grid else OptunaSearch(seed=cfg.seed), scheduler=scheduler),
            run_config=tune.RunConfig(name=experiment.rsplit("/", 1)[1], storage_path=experiment.rsplit("/", 1)[0],
                                      verbose=1),
        )
        log(f"[tune] {cfg.search} search, {cfg.scheduler} scheduling, objective {metric}; output -> {out}")
    grid_result = tuner.fit()
    records = records_from(grid_result, cfg, out / "trials")
    summary = write_outputs(out, cfg, records, time.time() - t0)
    log(format_summary(summary))
    return summary
