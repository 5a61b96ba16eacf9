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
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    yield
    data_logger.setLevel(level)
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


def test_verbose_restores_rays_defaults_but_prints_once():
    console.configure_output(False)
    settings = console.configure_output(True)  # undoes quiet in the same process
    assert settings.verbose and console.verbose_from_env()
    assert not any(name in os.environ for name in _QUIET)
    assert logging.getLogger("ray.data").level == logging.DEBUG  # Ray Data's own default
    assert os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"
    assert settings.data_context["print_on_execution_start"] is True
    kwargs = settings.init_kwargs()
    assert "logging_config" not in kwargs and kwargs["log_to_driver"] is True
    assert kwargs["runtime_env"]["env_vars"] == {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", console.VERBOSE_ENV: "1"}


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_verbose_from_env(monkeypatch, value):
    monkeypatch.setenv(console.VERBOSE_ENV, value)
    assert console.verbose_from_env()
    assert not console.verbose_from_env({console.VERBOSE_ENV: "0"})
    assert not console.verbose_from_env({})


def test_a_users_own_setting_wins_in_both_modes(monkeypatch):
    monkeypatch.setenv("RAY_DATA_LOG_LEVEL", "INFO")
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PRINT_PATCH", "1")
    assert console.configure_output(False).env_vars["RAY_DATA_LOG_LEVEL"] == "INFO"
    assert logging.getLogger("ray.data").level == logging.INFO
    console.configure_output(True)
    assert os.environ["RAY_DATA_LOG_LEVEL"] == "INFO" and os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "1"
