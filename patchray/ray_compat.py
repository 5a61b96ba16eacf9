"""Every use of Ray beyond its stable user API (private modules, underscore attributes, undocumented
environment variables and text formats), the test suite's included, each behind one small function so that a
Ray upgrade breaks one named place. Each function is tested against real Ray: in ``tests/test_ray_compat.py``
where no cluster is needed, in ``tests/e2e/test_ray_compat_cluster.py`` where one is."""
from __future__ import annotations

import json
import os
import re

# Ray Train V2's switches, read from the environment of its driver, controller and workers (its internal
# constants module); no public API sets them. patchray.console turns them off for quiet output.
TRAIN_PRINT_PATCH_ENV = "RAY_TRAIN_ENABLE_PRINT_PATCH"
TRAIN_WORKER_STRUCTURED_LOGGING_ENV = "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING"
TRAIN_CONTROLLER_STRUCTURED_LOGGING_ENV = "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING"
# Ray Train V2's preemption watcher (an actor polling the nodes' drain state), on by default. Its creation logs
# an error line of Ray's own C++ about its arguments, harmless, in every run's output.
TRAIN_PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# Ray Data's logger level, read where Ray Data configures its logging (at import, and per dataset in workers).
DATA_LOG_LEVEL_ENV = "RAY_DATA_LOG_LEVEL"
# The module of Ray Data that says, once a process, that its progress bars are off ("Progress bars disabled.
# To enable, ..."), a warning that RAY_DATA_LOG_LEVEL=WARNING lets through.
DATA_PROGRESS_LOGGER = "ray.data._internal.progress"

# Set by Ray's job supervisor in a submitted job's driver: the job's runtime_env and metadata, as JSON.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def job_runtime_env() -> dict | None:
    """The runtime_env of the ``ray job submit`` job this process is the driver of, or None outside one."""
    raw = os.environ.get(JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        return json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None


def cluster_to_join(temp_dir: str | None = None) -> str | None:
    """The cluster ``ray.init()`` would join: RAY_ADDRESS, else the one ``ray start`` last recorded on this
    machine (under ``temp_dir``, Ray's by default); None when it would start a new local one."""
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(None, temp_dir)


def placement_groups_of_other_jobs() -> list[tuple[str, dict[str, float]]]:
    """(job id, resources reserved) of every created placement group of a job other than this driver's: the
    training workers of other jobs on the cluster.

    Read from the GCS this driver is connected to (``placement_group_table``; no dashboard needed, and never
    another cluster on the same machine). A placement group's id ends with the id of the job that created it:
    Ray's id layout (``PlacementGroupID`` = unique bytes + ``JobID``), which has no public accessor.
    """
    import ray
    from ray.util import placement_group_table

    mine = ray.get_runtime_context().get_job_id()
    suffix = 2 * ray.JobID.size()  # hex digits of a job id
    held = []
    for group_id, group in placement_group_table().items():
        job = group_id[-suffix:]
        if group.get("state") != "CREATED" or job == mine:
            continue
        total: dict[str, float] = {}
        for bundle in (group.get("bundles") or {}).values():
            for key, value in bundle.items():
                total[key] = total.get(key, 0.0) + float(value)
        held.append((job, total))
    return held


# The object store line of Ray's memory summary (``ray memory --stats-only``).
_PLASMA_USE = re.compile(r"Plasma memory usage (\d+) MiB")


def object_store_used_mib() -> float:
    """MiB of the object store in use across the cluster this driver is connected to, from Ray's memory summary
    (``ray._private.internal_api``). Asked of this driver's GCS: without an address Ray would guess the
    machine's latest ``ray start`` cluster, or refuse when several run."""
    import ray
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    found = _PLASMA_USE.search(text)
    if found is None:
        raise RuntimeError(f"Ray's memory summary has no object store line any more: {text[:300]!r}")
    return float(found.group(1))


def data_execution_index() -> int:
    """How many times this process's Ray Data context has finished executing a dataset (Ray's private
    ``DataContext._execution_idx``, what ``RandomSeedConfig(reseed_after_execution=True)`` reseeds by). Inside
    a data task it is the index of the execution the task belongs to; for a training stream, its epoch
    counted from where the stream was created."""
    from ray.data import DataContext

    return int(DataContext.get_current()._execution_idx)


def dataset_execution_index(dataset) -> int:
    """How many times ``dataset`` has been executed (its own context's ``_execution_idx``, see
    ``data_execution_index``): a stage built on it starts counting there."""
    return int(dataset.context._execution_idx)


def execution_callback_base() -> type:
    """Ray Data's ``ExecutionCallback`` (from a private module): the base of the callbacks that a
    ``DataContext``'s ``custom_execution_callback_classes`` runs at every step of every execution."""
    from ray.data._internal.execution.execution_callback import ExecutionCallback

    return ExecutionCallback


def executor_progress(executor) -> tuple:
    """What a Ray Data ``StreamingExecutor`` has done so far, per operator of its private ``_topology``: blocks
    received, tasks submitted and finished, outputs generated and taken, and blocks waiting for the consumer. Two
    equal values mean that nothing happened in between (``data_scheduler``)."""
    return tuple((m.num_inputs_received, m.num_tasks_submitted, m.num_tasks_finished, m.num_task_outputs_generated,
                  m.num_outputs_taken, m.num_external_outqueue_blocks)
                 for m in (op.metrics for op in executor._topology))


def trial_statuses(result_grid) -> dict[str, str]:
    """Tune's own status of each trial of a ResultGrid (``"TERMINATED"``, ``"ERROR"``, ``"RUNNING"``,
    ``"PENDING"``...; an interrupted experiment restored from disk leaves some unfinished), by trial id. Ray has
    no public accessor: read from the grid's ``_experiment_analysis``."""
    return {trial.trial_id: trial.status for trial in result_grid._experiment_analysis.trials}


def validate_cluster_config(config: dict) -> dict:
    """A cluster launcher YAML (as a dict, not modified) checked against Ray's autoscaler schema offline, as
    ``ray up`` does before it starts anything; returns it merged with the provider's defaults. A config Ray
    would refuse raises ValueError with Ray's message (``ray.autoscaler._private.util``)."""
    import copy

    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    try:
        validate_config(prepared)
    except jsonschema.ValidationError as e:
        raise ValueError(e.message) from e
    return prepared


def forget_loaded_auth_token() -> None:
    """Make Ray look for its authentication token again ($RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH,
    ~/.ray/auth_token): this process's loader keeps the first token it found (``ray._raylet``)."""
    from ray._raylet import AuthenticationTokenLoader

    AuthenticationTokenLoader.instance().reset_cache()


# How long a raylet may hold objects nobody refers to any more before it deletes them in a batch (Ray's
# ``free_objects_period_milliseconds``, 1,000 by default). A crop stream frees 300-600 MB a second on 2 cores:
# at Ray's default the dead blocks waiting for the next batch were most of the object store's peak (350 to 590
# MiB, with Ray Data's own budget at 192 MiB) and, mapped, of the workers' memory; at 100 ms, 98 to 128 MiB,
# at the same speed (docs/performance.md, "Memory"). The cluster YAMLs set it on every node, as
# ``RAY_FREE_OBJECTS_ENV``.
FREE_OBJECTS_PERIOD_MS = 100
RAY_FREE_OBJECTS_ENV = "RAY_free_objects_period_milliseconds"


def local_cluster_config(metrics_interval_ms: int | None = None) -> dict:
    """Keyword arguments of ``ray.init`` for the local cluster it starts, through ``_system_config`` (which Ray
    keeps for testing): freed objects deleted within ``FREE_OBJECTS_PERIOD_MS``, and with
    ``metrics_interval_ms`` metrics exported that often (Ray's default: 10 s)."""
    config = {"free_objects_period_milliseconds": FREE_OBJECTS_PERIOD_MS}
    if metrics_interval_ms is not None:
        config["metrics_report_interval_ms"] = metrics_interval_ms
    return {"_system_config": config}


# ----------------------------------------------------------------------------------------- Tune's ASHA and Optuna


def asha_rungs_of(scheduler) -> list[tuple[float, dict]]:
    """The (milestone, {trial id: value}) rungs of an AsyncHyperBandScheduler with one bracket, as the live
    dicts the scheduler compares against (``_brackets[0]._rungs``): what a resumed search refills."""
    return scheduler._brackets[0]._rungs


def optuna_trial_of(search, trial_id: str):
    """The optuna Trial that Ray's OptunaSearch asked for a Tune trial, or None (``_ot_trials``)."""
    return search._ot_trials.get(trial_id)


def optuna_study_of(search):
    """The optuna Study behind Ray's OptunaSearch (``_ot_study``)."""
    return search._ot_study


def optuna_search_told(search, trial_id: str) -> bool:
    """Whether Ray's OptunaSearch has already told Optuna this trial's end (``_completed_trials``): it then drops
    every later result of the trial, a retried one's included."""
    return trial_id in search._completed_trials


def optuna_search_replace_trial(search, trial_id: str, ot_trial, told: bool) -> None:
    """Point Ray's OptunaSearch at another optuna Trial for this Tune trial, told or not yet."""
    search._ot_trials[trial_id] = ot_trial
    if told:
        search._completed_trials.add(trial_id)
    else:
        search._completed_trials.discard(trial_id)


def optuna_search_forget_trial(search, trial_id: str) -> None:
    """Let Ray's OptunaSearch ask Optuna anew for this Tune trial: its ``suggest`` reuses the optuna Trial it holds
    for the id (``_ot_trials``)."""
    search._ot_trials.pop(trial_id, None)


def optuna_search_space(search):
    """The space Ray's OptunaSearch asks Optuna with: a define-by-run callable or a dict of distributions."""
    return search._space
