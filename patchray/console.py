"""How much a job prints: patchray's own lines by default, Ray's too with --verbose or PATCHRAY_VERBOSE=1.

Pure settings, Ray-free at import: ``configure_output`` is called by the command line before Ray starts, and again
by ``patchray.train.runner.init_ray``, which passes ``OutputSettings.init_kwargs()`` to ``ray.init`` (the
environment variables travel to every worker of the job in its runtime_env) and applies ``data_context``.

Where each kind of line comes from, and the documented Ray control that quiets it by default:

- every rank-0 print twice: Ray Train V2 patches ``print`` in its workers into a log record, and since Ray
  workers' ``sys.stdout`` is not ``sys.__stdout__`` it also echoes the print itself (``patch_print.py``).
  ``RAY_TRAIN_ENABLE_PRINT_PATCH=0`` (both modes: the second copy says nothing new) makes a print a print.
- Ray Train's own INFO lines: ``TrainingReport(...)`` per worker per report (logged by a logger named after its
  file, so through the root logger, which Train's structured logging sets to INFO on every worker), and
  "Checkpoint successfully created", resources requested, worker group started, process group, DDP wrapping.
  ``RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING=0`` and ``..._CONTROLLER_...=0`` leave Ray Train's loggers to
  Ray's, and ``ray.init(logging_config=ray.LoggingConfig(log_level="WARNING"))`` sets those (root and ``ray``)
  to WARNING in the driver and every worker of the job. (``RunConfig(logging_config=ray.train.LoggingConfig())``
  cannot: its level skips the root logger, so ``TrainingReport`` would stay.) Ray Train's session log files
  (``logs/train/``) are written with --verbose only.
- Ray's INFO line with the dashboard's address goes with them: ``init_ray`` prints the address itself.
- Ray Data's INFO lines per epoch ("Starting execution", "Execution plan", "execution finished"):
  ``DataContext.print_on_execution_start = False`` and ``RAY_DATA_LOG_LEVEL=WARNING``; warnings still show.
- Ray Data's warning that its progress bars are off (our per-epoch lines say more): its module's logger is set
  to ERROR in the driver and, by the job's ``worker_process_setup_hook`` (``quiet_worker``), in every worker.
- Ray Train's preemption watcher's error line about its constructor's arguments (Ray's C++, so no logger
  quiets it): on a local cluster that ``init_ray`` starts itself, where no node is ever drained, the watcher
  has nothing to watch and is not started (``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0`` in the job's
  environment). On a cluster joined through ``RAY_ADDRESS`` it stays, and so does its line.
- kept: Ray's warnings (token authentication, resources, a worker's failure), the dashboard address, and what
  patchray prints (workers' prints reach the driver: ``log_to_driver`` stays on).

A variable the user set already is left as it is: an explicit ``RAY_DATA_LOG_LEVEL=INFO`` wins over quiet.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from patchray.ray_compat import (
    DATA_LOG_LEVEL_ENV,
    DATA_PROGRESS_LOGGER,
    TRAIN_CONTROLLER_STRUCTURED_LOGGING_ENV,
    TRAIN_PREEMPTION_WATCHER_ENV,
    TRAIN_PRINT_PATCH_ENV,
    TRAIN_WORKER_STRUCTURED_LOGGING_ENV,
)

VERBOSE_ENV = "PATCHRAY_VERBOSE"

# Environment of the quiet default; in verbose mode those patchray set are removed again (Ray's defaults).
QUIET_ENV = {
    DATA_LOG_LEVEL_ENV: "WARNING",
    TRAIN_WORKER_STRUCTURED_LOGGING_ENV: "0",
    TRAIN_CONTROLLER_STRUCTURED_LOGGING_ENV: "0",
}
# Set in both modes.
ALWAYS_ENV = {
    TRAIN_PRINT_PATCH_ENV: "0",
}
QUIET_LOG_LEVEL = "WARNING"  # of the root and ``ray`` loggers in the driver and the job's workers

# Names patchray set itself (and to what), so that verbose can undo quiet in the same process and a user's own
# setting is never overwritten or removed.
_ours: dict[str, str] = {}


def verbose_from_env(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class OutputSettings:
    verbose: bool
    env_vars: dict = field(default_factory=dict)  # what every Ray worker of the job needs in its environment
    data_context: dict = field(default_factory=dict)  # ray.data.DataContext attributes
    log_level: str | None = None  # ray.init's LoggingConfig; None: Ray's default

    def init_kwargs(self, local: bool = False) -> dict:
        """Keyword arguments of ``ray.init``: workers' output forwarded to the driver (patchray's epoch lines
        are printed on rank 0), the output settings in the job's runtime_env, and, quiet, Ray's log level and
        ``quiet_worker`` run in every worker; quiet and ``local`` (a cluster started by this process), no
        preemption watcher."""
        kwargs = {"log_to_driver": True, "runtime_env": {"env_vars": dict(self.env_vars)}}
        if self.log_level is not None:
            import ray

            kwargs["logging_config"] = ray.LoggingConfig(log_level=self.log_level)
            kwargs["runtime_env"]["worker_process_setup_hook"] = f"{__name__}.quiet_worker"
            if local and TRAIN_PREEMPTION_WATCHER_ENV not in os.environ:
                kwargs["runtime_env"]["env_vars"][TRAIN_PREEMPTION_WATCHER_ENV] = "0"
        return kwargs


def quiet_worker() -> None:
    """Run in every Ray worker of a quiet job as it starts (the runtime_env's ``worker_process_setup_hook``):
    Ray Data's note that progress bars are off, once per process that runs a dataset, is not printed."""
    logging.getLogger(DATA_PROGRESS_LOGGER).setLevel(logging.ERROR)


def _set(name: str, value: str) -> None:
    current = os.environ.get(name)
    if current is None or _ours.get(name) == current:  # unset, or ours from an earlier call
        os.environ[name] = value
        _ours[name] = value


def _unset(name: str) -> None:
    if name in _ours and os.environ.get(name) == _ours[name]:
        del os.environ[name]
    _ours.pop(name, None)


def configure_output(verbose: bool) -> OutputSettings:
    """Choose quiet (default) or verbose output for this process and the Ray job it starts; idempotent.

    Sets environment variables (read by Ray in this process and, through ``init_kwargs()``, in every worker)
    and the driver's ``ray.data`` logger level; returns what ``init_ray`` passes on."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    for name, value in ALWAYS_ENV.items():
        _set(name, value)
    for name, value in QUIET_ENV.items():
        if verbose:
            _unset(name)
        else:
            _set(name, value)
    # Ray Data reads RAY_DATA_LOG_LEVEL when it configures its logger (at import and per dataset); a driver
    # that imported ray.data already gets the level now. DEBUG is Ray Data's own default.
    logging.getLogger("ray.data").setLevel(os.environ.get(DATA_LOG_LEVEL_ENV, "DEBUG").upper())
    if verbose:
        logging.getLogger(DATA_PROGRESS_LOGGER).setLevel(logging.NOTSET)
    else:
        quiet_worker()  # the driver runs datasets too
    names = [VERBOSE_ENV, *ALWAYS_ENV, *QUIET_ENV]
    env_vars = {name: os.environ[name] for name in names if name in os.environ}
    return OutputSettings(verbose=verbose, env_vars=env_vars,
                          data_context={"enable_progress_bars": False,  # our per-epoch lines say more
                                        "print_on_execution_start": verbose},
                          log_level=None if verbose else QUIET_LOG_LEVEL)
