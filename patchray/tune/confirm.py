"""After a search: the top configurations fine-tuned again with other seeds, so that the chosen one is the best
on average and not a lucky seed; the only runs that score the test split."""
from __future__ import annotations

from patchray.tune import results as res
from patchray.tune.space import build_section
from patchray.tune.trial import CONFIRM


def confirm_top(cfg, records: list, trainable, experiment: str, log) -> list:
    """Fine-tune the top configurations again with other seeds (a second, FIFO Tune experiment beside the
    search's, resumable like it); their test numbers are made here, and only the chosen one's are reported."""
    from ray import tune

    from patchray.tune.search_alg import DIVERGED, WORST_SCORE
    from patchray.tune.tuner import tune_verbosity

    top = res.top_configurations(records, cfg.confirm_top_k, cfg.search_space())
    # With objective probe a trial fine-tuned nothing: every seed of a configuration is a fine-tuning run here.
    screened = cfg.objective == "probe"
    first = 0 if screened else 1
    if not top or cfg.confirm_seeds <= first:
        return []
    metric = f"val_{cfg.metric}"
    base_seed = build_section("finetune", cfg.finetune, {}).seed
    runs = [{"params": r.params, "seed": base_seed + i, "of": r.trial_id}
            for r in top for i in range(first, cfg.confirm_seeds)]
    path = f"{experiment}-{CONFIRM}"
    if screened:
        log(f"[tune] fine-tuning the top {len(top)} configuration(s) by the probe with {cfg.confirm_seeds} seed(s) "
            f"each: {len(runs)} fine-tuning run(s)")
    else:
        log(f"[tune] confirming the top {len(top)} configuration(s) with {cfg.confirm_seeds - 1} more seed(s) "
            f"each: {len(runs)} fine-tuning run(s)")
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space={CONFIRM: tune.grid_search(runs)},
                           tune_config=tune.TuneConfig(max_concurrent_trials=cfg.max_concurrent_trials),
                           run_config=tune.RunConfig(name=path.rsplit("/", 1)[1], storage_path=path.rsplit("/", 1)[0],
                                                     verbose=tune_verbosity()))
    by_trial = {r.trial_id: res.Confirmation(r.trial_id, r.params, [] if screened else [r.objective],
                                             seeds=[] if screened else [base_seed]) for r in top}
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
