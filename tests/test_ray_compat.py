"""patchray.ray_compat against the installed Ray, where no cluster is needed (the rest, on the session's cluster:
tests/e2e/test_ray_compat_cluster.py). A Ray upgrade that moves what an adapter function reads fails here."""
import json
from pathlib import Path

import pytest
import yaml

from patchray import ray_compat

ROOT = Path(__file__).parents[1]


def test_job_runtime_env_reads_the_variable_ray_s_job_supervisor_sets(monkeypatch):
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    assert ray_compat.JOB_CONFIG_ENV == RAY_JOB_CONFIG_JSON_ENV_VAR
    monkeypatch.delenv(ray_compat.JOB_CONFIG_ENV, raising=False)
    assert ray_compat.job_runtime_env() is None  # not the driver of a submitted job
    # what the supervisor writes (json.dumps({"runtime_env": ..., "metadata": ...}))
    monkeypatch.setenv(ray_compat.JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_1.zip"},
                                                              "metadata": {"job_submission_id": "raysubmit_x"}}))
    assert ray_compat.job_runtime_env() == {"working_dir": "gcs://_ray_pkg_1.zip"}
    monkeypatch.setenv(ray_compat.JOB_CONFIG_ENV, json.dumps({"runtime_env": None, "metadata": {}}))
    assert ray_compat.job_runtime_env() == {}
    for unreadable in ("not json", "[1, 2]"):
        monkeypatch.setenv(ray_compat.JOB_CONFIG_ENV, unreadable)
        assert ray_compat.job_runtime_env() is None


def test_validate_cluster_config_merges_ray_s_defaults_and_refuses_what_ray_up_would():
    config = yaml.safe_load((ROOT / "configs" / "cluster" / "aws.yaml").read_text())
    before = json.dumps(config, sort_keys=True)
    prepared = ray_compat.validate_cluster_config(config)
    assert json.dumps(config, sort_keys=True) == before  # the caller's dict is left as it was
    assert prepared["provider"]["type"] == "aws"
    # filled in as `ray up` does: the head's max_workers (0), the workers' setup commands (the common ones)
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert "max_workers" not in config["available_node_types"][config["head_node_type"]] and head["max_workers"] == 0
    assert "worker_setup_commands" not in config and prepared["worker_setup_commands"] == config["setup_commands"]
    with pytest.raises(ValueError, match="'min_wokers' was unexpected"):  # Ray's schema
        ray_compat.validate_cluster_config(config | {"min_wokers": 0})
    with pytest.raises(ValueError, match="head_node_type` must be one of"):  # Ray's own checks after it
        ray_compat.validate_cluster_config(config | {"head_node_type": "no_such_type"})


def test_forget_loaded_auth_token_makes_ray_read_its_token_again(monkeypatch, tmp_path):
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    token = tmp_path / "token"
    token.write_text("a" * 64)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    try:
        ray_compat.forget_loaded_auth_token()
        assert loader.get_raw_token(ignore_auth_mode=True) == "a" * 64
        token.write_text("b" * 64)
        assert loader.get_raw_token(ignore_auth_mode=True) == "a" * 64  # cached
        ray_compat.forget_loaded_auth_token()
        assert loader.get_raw_token(ignore_auth_mode=True) == "b" * 64
    finally:
        monkeypatch.undo()
        ray_compat.forget_loaded_auth_token()  # no test token left cached for what runs next


def test_the_output_switches_are_the_ones_this_ray_reads(monkeypatch):
    """patchray.console quiets Ray through these names: Ray Train must read and propagate them, and Ray Data's
    logger setup must take its level from the environment."""
    import logging

    from ray.data import DataContext
    from ray.data._internal import progress
    from ray.data._internal.logging import configure_logging
    from ray.train.v2._internal import constants

    names = {ray_compat.TRAIN_PRINT_PATCH_ENV, ray_compat.TRAIN_WORKER_STRUCTURED_LOGGING_ENV,
             ray_compat.TRAIN_CONTROLLER_STRUCTURED_LOGGING_ENV, ray_compat.TRAIN_PREEMPTION_WATCHER_ENV}
    assert names == {constants.ENABLE_PRINT_PATCH_ENV_VAR, constants.ENABLE_WORKER_STRUCTURED_LOGGING_ENV_VAR,
                     constants.ENABLE_CONTROLLER_STRUCTURED_LOGGING_ENV_VAR,
                     constants.ENABLE_PREEMPTION_WATCHER_ENV_VAR}
    assert names <= constants.ENV_VARS_TO_PROPAGATE  # handed on from the driver to the controller and workers
    for context_setting in ("enable_progress_bars", "print_on_execution_start"):
        assert hasattr(DataContext.get_current(), context_setting), context_setting
    data_logger, progress_logger = logging.getLogger("ray.data"), logging.getLogger(ray_compat.DATA_PROGRESS_LOGGER)
    assert progress.logger is progress_logger  # the logger of the "Progress bars disabled" note
    level, progress_level = data_logger.level, progress_logger.level
    monkeypatch.setenv(ray_compat.DATA_LOG_LEVEL_ENV, "WARNING")
    progress_logger.setLevel(logging.ERROR)
    configure_logging()  # what Ray Data runs at import and in each worker per dataset
    try:
        assert not data_logger.isEnabledFor(logging.INFO) and data_logger.isEnabledFor(logging.WARNING)
        assert not progress_logger.isEnabledFor(logging.WARNING)  # Ray Data's setup leaves it quiet
    finally:
        data_logger.setLevel(level)
        progress_logger.setLevel(progress_level)


def test_cluster_to_join_is_ray_address_else_the_last_recorded_else_none(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6390")
    assert ray_compat.cluster_to_join(str(tmp_path)) == "10.1.2.3:6390"
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_compat.cluster_to_join(str(tmp_path)) is None  # nothing recorded there: ray.init starts one
    (tmp_path / "ray_current_cluster").write_text("10.1.2.4:6391")
    assert ray_compat.cluster_to_join(str(tmp_path)) == "10.1.2.4:6391"  # a `ray start` head on this machine


def test_the_free_objects_env_names_the_setting_local_clusters_get():
    """The cluster YAMLs export RAY_FREE_OBJECTS_ENV on every node; Ray reads a setting from ``RAY_<name>``, so
    it must name what local_cluster_config sets (a misspelt key would leave Ray's 1 s default in place)."""
    from patchray.ray_compat import FREE_OBJECTS_PERIOD_MS, RAY_FREE_OBJECTS_ENV, local_cluster_config

    (name, value), = local_cluster_config()["_system_config"].items()
    assert RAY_FREE_OBJECTS_ENV == f"RAY_{name}" and value == FREE_OBJECTS_PERIOD_MS < 1000
    assert local_cluster_config(metrics_interval_ms=1000)["_system_config"] == {name: value,
                                                                                 "metrics_report_interval_ms": 1000}


def test_the_execution_callback_base_is_the_one_ray_data_accepts(monkeypatch):
    """Ray Data loads a callback named in its environment variable only if it subclasses its own ExecutionCallback:
    data_scheduler's pause, built on ray_compat's base, passes that check."""
    from ray.data import DataContext
    from ray.data.context import EXECUTION_CALLBACKS_ENV_VAR

    from patchray.data_scheduler import PauseWhenIdle

    monkeypatch.setenv(EXECUTION_CALLBACKS_ENV_VAR, "patchray.data_scheduler.PauseWhenIdle")
    assert PauseWhenIdle in DataContext().execution_callback_classes
    assert callable(ray_compat.execution_callback_base().on_execution_step)
