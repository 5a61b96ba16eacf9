"""One trial of a search, as it runs inside its Tune trial actor: its values read back from Tune's config, its
share of the cluster, its pretraining from the shared cache, and its fine-tuning reported to Tune.

A search trial scores validation only; a confirmation run (``CONFIRM``) fine-tunes with its own seed and is
tested. A fine-tuning whose loss or predictions stop being finite reports the worst score (``diverged``), so the
search learns from it instead of recording an error.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from patchray import config as configlib
from patchray.tune.space import SearchSpace, build_section

# The driver of a trial only waits for its trainer; the trainer's workers and Ray Data hold the real CPUs.
TRIAL_DRIVER_CPU = 0.01
CONFIRM = "confirm"  # a confirmation run's config: {"params": the configuration's values, "seed": s, "of": trial}
PRETEXT = "pretext"  # where grid search passes a feasible pretext combination (values keyed by Param.name)



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
    drivers), on its GPUs (whole ones as data-parallel workers, or a fraction of one for one worker) and, for
    ``cache_decoded``, on its share of the object store.
    Refused when a trial's share would starve Ray Data, or the GPUs asked for are not there."""
    from patchray.train.resources import MIN_DATA_CPUS, ResourceError

    n = max_concurrent_trials
    share = (cluster_cpus - TRIAL_DRIVER_CPU * n) / n
    if share < MIN_DATA_CPUS + 0.5:
        most = max(1, int((cluster_cpus - TRIAL_DRIVER_CPU) // 2))
        raise ResourceError(f"max_concurrent_trials={n} on {cluster_cpus:g} CPUs leaves {share:.2f} CPU per "
                            f"trial: Ray Data would starve and the search hang; at most {most} here")
    overrides: dict[str, Any] = {"resources.reserved_cpus": cluster_cpus - share}
    if n > 1:  # each concurrent trial's cache_decoded holds a copy of its own
        overrides["resources.object_store_share"] = 1.0 / n
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


def check_caches_fit(tune_cfg, resources: dict) -> None:
    """``cache_decoded`` in the base configs, checked against a trial's share of the object store before any
    trial starts: a trial would find out only after its pretraining, and every trial alike. (Each run checks
    again as it starts, with its sampled values.) ResourceError when a cache would not fit."""
    from patchray.shards.reader import open_shards
    from patchray.train.finetune import resolve_splits
    from patchray.train.runner import check_cache

    pretrain = build_section("pretrain", tune_cfg.pretrain, resources)
    if pretrain.cache_decoded:
        check_cache(open_shards(pretrain.data).num_rows, pretrain.task.crop_width, pretrain.task.crop_height,
                    pretrain.resources.object_store_share)
    finetune = build_section("finetune", tune_cfg.finetune, resources)
    if finetune.cache_decoded and tune_cfg.objective == "finetune":
        rows = finetune.labels if finetune.labels is not None else open_shards(
            resolve_splits(finetune, log=lambda *_: None)["train"]).num_rows
        check_cache(rows, finetune.input.crop_width, finetune.input.crop_height,
                    finetune.resources.object_store_share)


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


def report_probe(folder, pretrain, finetune, metric: str) -> None:
    """``objective: probe``: the linear probe of the pretrained trunk on the fine-tuning data, as the trial's one
    report (kNN and the probe's seconds beside it)."""
    import ray.tune

    from patchray.train.probe_set import probe_pretraining
    from patchray.tune.search_alg import EPOCHS_DONE, WORST_SCORE

    scores = probe_pretraining(folder, pretrain.probe, finetune.data, finetune.val_seed)
    value = scores[metric.replace("val_", "probe_")]
    if value is None:  # undefined on these crops (mAP without a labeled positive): no ranking to learn from
        print(f"[tune] the probe's {metric} is undefined on {scores['probe_crops']}: scored {WORST_SCORE:g}")
        value = WORST_SCORE
    print(f"[tune] probe of {folder}: linear {metric} {value:.4f} ({scores['probe_crops']}; "
          f"{scores['probe_s']:.0f} s)")
    # epoch 0: the one report counts as the trial's one "epoch" (TuneConfig.trial_epochs)
    ray.tune.report({metric: value, EPOCHS_DONE: 1, "epoch": 0, "knn_mA": scores["knn_mA"],
                     "probe_s": scores["probe_s"]})


def run_trial(config: dict, *, tune_cfg: dict, out: str, resources: dict) -> None:
    """One trial (runs inside a Tune trial actor): cached pretraining, then fine-tuning reported to Tune. A
    search trial scores validation only; a confirmation run (``CONFIRM``) uses its own seed and is tested."""
    import ray.tune

    from patchray.train.finetune import run_finetune
    from patchray.train.runner import DivergedError
    from patchray.tune.search_alg import DIVERGED, EPOCHS_DONE, INFEASIBLE, WORST_SCORE, EpochReportCallback
    from patchray.tune.tuner import TuneConfig

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
    if cfg.objective == "probe" and not confirming:
        report_probe(folder, pretrain, build_section("finetune", cfg.finetune, {}), metric)
        return
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
