"""What quiet (default) and verbose output set: environment, loggers, ray.init and DataContext settings."""
import logging
import os

import pytest

from patchray import console

_NAMES = (console.VERBOSE_ENV, *console.ALWAYS_ENV, *console.QUIET_ENV)
_QUIET = {"RAY_DATA_LOG_LEVEL": "WARNING", "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
          "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING": "0"}


@pytest.fixture(autouse=True)
def clean_output_settings(monkeypatch):
    """Each test starts with none of the variables set and leaves the process as it found it."""
    for name in _NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(console, "_ours", {})
    data_logger, progress_logger = logging.getLogger("ray.data"), logging.getLogger("ray.data._internal.progress")
    levels = data_logger.level, progress_logger.level
    yield
    data_logger.setLevel(levels[0])
    progress_logger.setLevel(levels[1])
    for name in _NAMES:  # configure_output writes os.environ itself
        monkeypatch.delenv(name, raising=False)


def test_quiet_by_default():
    import ray

    settings = console.configure_output(console.verbose_from_env())
    assert not settings.verbose
    assert {name: os.environ[name] for name in _QUIET} == _QUIET
    assert os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0" and os.environ[console.VERBOSE_ENV] == "0"
    assert logging.getLogger("ray.data").level == logging.WARNING
    assert settings.data_context == {"enable_progress_bars": False, "print_on_execution_start": False}
    kwargs = settings.init_kwargs()
    assert kwargs["log_to_driver"] is True  # rank 0's epoch lines come from a worker
    assert kwargs["runtime_env"]["env_vars"] == _QUIET | {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", console.VERBOSE_ENV: "0"}
    assert isinstance(kwargs["logging_config"], ray.LoggingConfig) and kwargs["logging_config"].log_level == "WARNING"
    # every worker of the job quiets Ray Data's progress note as it starts; so does the driver, now
    assert kwargs["runtime_env"]["worker_process_setup_hook"] == "patchray.console.quiet_worker"
    progress = logging.getLogger("ray.data._internal.progress")
    assert not progress.isEnabledFor(logging.WARNING)
    # a cluster this process starts has no node to drain: no preemption watcher (and no error line of its)
    local = settings.init_kwargs(local=True)["runtime_env"]["env_vars"]
    assert local == kwargs["runtime_env"]["env_vars"] | {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def test_verbose_restores_rays_defaults_but_prints_once():
    console.configure_output(False)
    settings = console.configure_output(True)  # undoes quiet in the same process
    assert settings.verbose and console.verbose_from_env()
    assert not any(name in os.environ for name in _QUIET)
    assert logging.getLogger("ray.data").level == logging.DEBUG  # Ray Data's own default
    assert os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"
    assert settings.data_context["print_on_execution_start"] is True
    kwargs = settings.init_kwargs(local=True)
    assert "logging_config" not in kwargs and kwargs["log_to_driver"] is True
    assert kwargs["runtime_env"]["env_vars"] == {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", console.VERBOSE_ENV: "1"}
    assert "worker_process_setup_hook" not in kwargs["runtime_env"]
    assert logging.getLogger("ray.data._internal.progress").isEnabledFor(logging.WARNING)


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_verbose_from_env(monkeypatch, value):
    monkeypatch.setenv(console.VERBOSE_ENV, value)
    assert console.verbose_from_env()
    assert not console.verbose_from_env({console.VERBOSE_ENV: "0"})
    assert not console.verbose_from_env({})


def test_the_setup_hook_names_a_function_that_quiets_the_progress_note():
    import importlib

    hook = console.OutputSettings(verbose=False, log_level="WARNING").init_kwargs()["runtime_env"][
        "worker_process_setup_hook"]
    progress = logging.getLogger("ray.data._internal.progress")
    progress.setLevel(logging.NOTSET)
    module, name = hook.rsplit(".", 1)
    getattr(importlib.import_module(module), name)()  # as a Ray worker runs a hook given by name
    assert not progress.isEnabledFor(logging.WARNING) and progress.isEnabledFor(logging.ERROR)


def test_a_users_own_setting_wins_in_both_modes(monkeypatch):
    monkeypatch.setenv("RAY_DATA_LOG_LEVEL", "INFO")
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PRINT_PATCH", "1")
    assert console.configure_output(False).env_vars["RAY_DATA_LOG_LEVEL"] == "INFO"
    assert logging.getLogger("ray.data").level == logging.INFO
    console.configure_output(True)
    assert os.environ["RAY_DATA_LOG_LEVEL"] == "INFO" and os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "1"
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in console.configure_output(False).init_kwargs(local=True)[
        "runtime_env"]["env_vars"]
