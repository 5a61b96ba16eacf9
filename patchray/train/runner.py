"""What every training job shares at the Ray edge: joining a cluster, sizing, building and running a trainer."""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from patchray.train.checkpoint import load_checkpoint
from patchray.train.resources import ResourceError, ResourcePlan, ResourcesConfig, plan_around_other_jobs


@dataclass
class PreparedRun:
    """What a training run is, before anything is written: resolved config, output folder, shards, plan, Ray
    Train location and identity (``patchray.train.identity``), so that a caller can tell whether a finished
    run is this one, and the run can refuse another's checkpoint before it writes a file."""
    cfg: object
    out: Path
    shards: object  # a ShardSet, or one per split
    plan: ResourcePlan
    location: tuple[str, str]
    identity: dict


def init_ray():
    """Join the cluster named by RAY_ADDRESS (as under ``ray job submit``), else start a local one; quiet unless
    verbose (``patchray.console``: the CLI's --verbose, or PATCHRAY_VERBOSE=1)."""
    import ray

    from patchray import console

    output = console.configure_output(console.verbose_from_env())
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray(\.|$)")
    if not ray.is_initialized():
        from patchray.ray_compat import cluster_to_join, local_cluster_config

        local = cluster_to_join() is None
        kwargs = output.init_kwargs(local=local) | (local_cluster_config() if local else {})
        kwargs["runtime_env"]["env_vars"]["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
        info = ray.init(address=os.environ.get("RAY_ADDRESS") or None, **kwargs)
        if not output.verbose and info.dashboard_url:  # Ray's own line is an INFO one
            url = info.dashboard_url
            print(f"[patchray] Ray dashboard: {url if '://' in url else 'http://' + url}", flush=True)
    from ray.data import DataContext

    context = DataContext.get_current()
    for name, value in output.data_context.items():
        setattr(context, name, value)
    return ray


def plan_for_cluster(requested: ResourcesConfig) -> ResourcePlan:
    """Size the workers on what this job may use: the cluster's totals, less what the caller already holds
    and what other jobs' trainers hold (with a data CPU kept for each of them). Two jobs each planning on the
    whole cluster would together starve Ray Data: the silent hang the planner exists to prevent."""
    import ray

    from patchray.ray_compat import placement_groups_of_other_jobs

    # Totals, not ray.available_resources(): free resources flicker while this job's own previous trainer shuts
    # down and while data tasks come and go; other jobs' trainers are counted by their placement groups.
    resources = ray.cluster_resources()
    return plan_around_other_jobs(resources.get("CPU", 0) - requested.reserved_cpus,
                                  resources.get("GPU", 0) - requested.reserved_gpus,
                                  placement_groups_of_other_jobs(), requested)


def unsplit_when_alone(plan: ResourcePlan) -> str | list:
    """``datasets_to_split`` for a fine-tuning run: one worker iterates its stream itself (Ray runs the stream's
    executor in the worker), with no split coordinator. That actor is a process of its own that starts with every
    run, about 2 s each (the Tune grid test, all of whose trials fine-tune alone, ran 107 -> 92 s). Pretraining
    keeps the coordinator even alone: its executor thread would share the worker's GIL with the step that feeds
    the GPU, and alone it slowed the ingest's later epochs by 5 to 25% (docs/performance.md)."""
    return [] if plan.num_workers == 1 else "all"


def check_cache(rows: int, width: int, height: int, share: float = 1.0) -> int:
    """``cache_decoded``'s bytes for ``rows`` crops, refused when they would not fit this run's ``share``
    (``resources.object_store_share``) of this cluster's object store (``pipeline.check_cache_fits``): called
    before any crop is decoded."""
    import ray

    from patchray.pipeline import check_cache_fits

    try:
        return check_cache_fits(rows, width, height, ray.cluster_resources().get("object_store_memory", 0.0), share)
    except ValueError as e:  # a setting the user changes: one line and exit code 2 (cli), not a traceback
        raise ResourceError(str(e)) from None


def decode_into_cache(dataset, rows: int, width: int, height: int, seed: int, cut=None, job: str = "pretrain",
                      log=print):
    """``cache_decoded`` for a recipe: the stream's ``rows`` crops decoded now into Ray's object store
    (``pipeline.cache_decoded``), said before and after; the stream the trainer gets then reads them from there."""
    import ray

    from patchray.pipeline import cache_decoded, decoded_bytes

    store = ray.cluster_resources().get("object_store_memory", 0.0)
    log(f"[{job}] cache_decoded: decoding {rows} crops once into Ray's object store "
        f"({decoded_bytes(rows, width, height) / 2**30:.2f} GiB of {store / 2**30:.1f})")
    started = time.time()
    cached = cache_decoded(dataset, seed, cut)
    log(f"[{job}] cache_decoded: done in {time.time() - started:.1f} s; every epoch streams from the cache")
    return cached


def make_trainer(loop, loop_config: dict, plan: ResourcePlan, *, location: tuple[str, str], max_failures: int = 0,
                 datasets: dict | None = None, datasets_to_split="all", callbacks=()):
    """The TorchTrainer of every training job and benchmark: ``plan``'s workers (``loop_config`` gains
    ``torch_threads``, see ``patchray.train.worker.start_worker``), Ray Train's run at ``location`` (storage path,
    name; the same pair resumes), the last two checkpoints kept."""
    import ray.train
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        loop,
        train_loop_config=loop_config | {"torch_threads": plan.torch_threads},
        scaling_config=ray.train.ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.use_gpu,
                                               resources_per_worker=plan.resources_per_worker),
        run_config=ray.train.RunConfig(storage_path=location[0], name=location[1],
                                       failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       callbacks=list(callbacks)),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=datasets_to_split),
    )


def fit(loop, loop_config: dict, plan: ResourcePlan, *, location: tuple[str, str], max_failures: int,
        datasets: dict, datasets_to_split="all", callbacks=(), tracking=None) -> tuple[dict, list[dict]]:
    """Run a TorchTrainer (``make_trainer``) to the end; return the last checkpoint's state and metric history.

    ``callbacks``: Ray Train callbacks, e.g. Tune's TuneReportCallback when run inside a trial. ``tracking``: a
    ``patchray.tracking.TrackerSpec`` that gets each epoch's metrics as the workers report them.
    """
    import ray.train

    if tracking is not None:
        callbacks = [*callbacks, tracking_callback(tracking)]
    trainer = make_trainer(loop, loop_config, plan, location=location, max_failures=max_failures, datasets=datasets,
                           datasets_to_split=datasets_to_split, callbacks=callbacks)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        error = DivergedError if isinstance(_root_cause(e), FloatingPointError) else TrainingError
        raise error(_failure_message(e, location)) from None
    if result.checkpoint is None:
        raise TrainingError(f"training ended without a checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as folder:
        return load_checkpoint(folder)


def tracking_callback(spec):
    """A Ray Train callback that logs rank 0's report of each epoch to the tracker run ``spec``. It runs in Ray
    Train's controller, which Ray places on the driver's node, so a local store in the job's folder is reached."""
    import ray.train

    from patchray.tracking import EpochLogger

    class TrackingCallback(ray.train.UserCallback):
        def __init__(self):
            self.log_epoch = EpochLogger(spec)

        def after_report(self, run_context, metrics, checkpoint):
            self.log_epoch(metrics[0])

    return TrackingCallback()


class TrainingError(RuntimeError):
    """Training failed on the workers (after Ray Train's retries); the message says why and what is kept."""


class DivergedError(TrainingError):
    """The loss stopped being finite (``TrainStep``): a setting, such as the learning rate, that does not train."""


def _root_cause(error: BaseException) -> BaseException:
    """The user-level exception inside Ray Train's wrappers (worker failures, task errors)."""
    failures = getattr(error, "worker_failures", None)
    if failures:
        error = failures[min(failures)]
    error = getattr(error, "controller_failure", None) or error
    cause = getattr(error, "cause", None)  # RayTaskError / ActorError wrap the exception raised in user code
    return cause if isinstance(cause, BaseException) else error


def _failure_message(error: BaseException, location: tuple[str, str]) -> str:
    from patchray.train.identity import last_checkpoint, location_path

    cause = _root_cause(error)
    text = str(cause).strip().splitlines()
    message = f"training failed: {type(cause).__name__}: {text[-1] if text else ''}"
    kept = last_checkpoint(location)
    if kept is not None:
        message += (f"; the last good checkpoint (after epoch {kept[0] + 1}) is kept in {location_path(location)}, "
                    "and running the same command again resumes from it")
    return message


# A cluster's default for every job's --storage (the cluster YAMLs export it on each node).
STORAGE_ENV = "PATCHRAY_STORAGE"


def default_storage(storage: str | None) -> str | None:
    return storage or os.environ.get(STORAGE_ENV) or None


def _is_uri(text: str) -> bool:
    return "://" in text


def train_location(out: Path, storage: str | None, kind: str) -> tuple[str, str]:
    """(storage_path, run name) of a job's Ray Train run. Locally it lives in the job's folder; in shared storage
    (S3, GCS, NFS; ``storage`` or else $PATCHRAY_STORAGE) its name carries the job's name and a hash of its
    whole output folder, so that two runs with other ``--out`` never resume each other's checkpoints, however
    their names agree (the cluster YAMLs give every job one PATCHRAY_STORAGE)."""
    storage = default_storage(storage)
    if storage:
        if not _is_uri(storage):  # Ray Train wants a local storage path absolute
            storage = str(Path(storage).expanduser().resolve())
        digest = hashlib.sha256(str(out).encode()).hexdigest()[:10]
        return storage, f"{kind}-{out.name}-{digest}"
    return str(out / "ray"), kind


def _job_working_dir() -> str | None:
    """The folder ``ray job submit --working-dir`` unpacked this job into (deleted with the job), if any."""
    from patchray.ray_compat import job_runtime_env

    runtime_env = job_runtime_env()
    if runtime_env and runtime_env.get("working_dir"):
        return os.getcwd()
    return None


def run_dir(cfg) -> Path:
    """Where a job with ``out`` and ``name`` writes: OUT/NAME, absolute.

    Refuses a URI (outputs are local files; shared checkpoints go to ``--storage``) and, inside a job submitted
    with ``--working-dir``, a relative ``--out``: it would land in the job's temporary copy of the working dir,
    which Ray deletes, and a resubmitted job could not find its checkpoints there.
    """
    from patchray.config import ConfigError

    if _is_uri(cfg.out):
        raise ConfigError(f"out: {cfg.out!r} is a URI; job outputs (config, metrics, plots, checkpoints) are "
                          "written to a local folder. Give a local --out, and --storage "
                          f"{cfg.out.rstrip('/')} for Ray Train's checkpoints in shared storage")
    out = Path(cfg.out).expanduser()
    working_dir = _job_working_dir()
    if working_dir and not out.is_absolute():
        raise ConfigError(f"out: {cfg.out!r} is relative, and this job runs in Ray's temporary copy of the "
                          f"working dir ({working_dir}), deleted when the job ends: give an absolute --out, "
                          "e.g. --out '~/patchray-runs' (quoted: expanded where the job runs)")
    return out.resolve() / cfg.name
