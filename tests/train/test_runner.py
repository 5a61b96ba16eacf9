import json
from pathlib import Path

import pytest

from patchray import config as configlib
from patchray.ray_compat import JOB_CONFIG_ENV, job_runtime_env
from patchray.train.config import PretrainConfig
from patchray.train.runner import _failure_message, _root_cause, run_dir, train_location


def test_local_runs_keep_ray_train_state_in_their_own_folder(monkeypatch):
    monkeypatch.delenv("PATCHRAY_STORAGE", raising=False)
    out = run_dir(configlib.build(PretrainConfig, {"out": "/tmp/x", "name": "a"}))
    assert out == Path("/tmp/x/a")
    assert train_location(out, None, "pretrain") == ("/tmp/x/a/ray", "pretrain")


def test_runs_in_shared_storage_never_share_a_ray_train_run(monkeypatch):
    monkeypatch.delenv("PATCHRAY_STORAGE", raising=False)
    # two jobs writing to one bucket must not resume each other's checkpoints: not with other names, and not
    # with the same (default) name and other output folders either
    a = train_location(Path("/runs/a/pretrain"), "s3://bucket/patchray", "pretrain")
    b = train_location(Path("/runs/b/pretrain"), "s3://bucket/patchray", "pretrain")
    other_name = train_location(Path("/runs/a/other"), "s3://bucket/patchray", "pretrain")
    fine = train_location(Path("/runs/a/pretrain"), "s3://bucket/patchray", "finetune")
    assert a[0] == "s3://bucket/patchray" and a[1].startswith("pretrain-pretrain-")
    assert len({a, b, other_name, fine}) == 4
    # and the same job run again finds its own run
    assert train_location(Path("/runs/a/pretrain"), "s3://bucket/patchray", "pretrain") == a


def test_the_cluster_s_storage_variable_is_the_default_and_a_flag_overrides_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATCHRAY_STORAGE", "gs://cluster-bucket/runs")
    storage, name = train_location(Path("/runs/a"), None, "pretrain")
    assert storage == "gs://cluster-bucket/runs" and name.startswith("pretrain-a-")
    assert train_location(Path("/runs/a"), "/mnt/nfs", "pretrain") == ("/mnt/nfs", name)
    # a relative local storage is made absolute (Ray Train refuses relative storage paths)
    monkeypatch.chdir(tmp_path)
    assert train_location(Path("/runs/a"), "shared", "pretrain")[0] == str(tmp_path / "shared")


def test_an_out_uri_is_refused_with_what_to_do_instead(monkeypatch):
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    with pytest.raises(configlib.ConfigError, match=r"out: 's3://bucket/runs' is a URI.*--storage s3://bucket/runs"):
        run_dir(configlib.build(PretrainConfig, {"out": "s3://bucket/runs"}))


def test_a_relative_out_inside_a_submitted_job_s_working_dir_copy_is_refused(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_abc.zip"},
                                                   "metadata": {}}))
    assert job_runtime_env() == {"working_dir": "gcs://_ray_pkg_abc.zip"}
    with pytest.raises(configlib.ConfigError,
                       match=r"out: 'runs' is relative.*temporary copy.*--out '~/patchray-runs'"):
        run_dir(configlib.build(PretrainConfig, {"out": "runs"}))
    assert run_dir(configlib.build(PretrainConfig, {"out": str(tmp_path / "kept"), "name": "n"})) == tmp_path / "kept/n"
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps({"runtime_env": {}, "metadata": {}}))  # no working dir copy
    assert run_dir(configlib.build(PretrainConfig, {"out": "runs", "name": "n"})) == tmp_path / "runs/n"
    monkeypatch.setenv(JOB_CONFIG_ENV, "not json")
    assert job_runtime_env() is None


def test_a_worker_failure_is_reported_by_its_own_message(tmp_path):
    import ray.train
    from ray.exceptions import RayTaskError

    inner = FloatingPointError("pretraining diverged in epoch 3 (step 7: loss nan); lower optim.lr (now 10)")
    wrapped = RayTaskError("train_fn", "Traceback ...", inner)
    error = ray.train.WorkerGroupError("worker 0 failed", {1: RuntimeError("other rank"), 0: wrapped})
    assert _root_cause(error) is inner
    message = _failure_message(error, (str(tmp_path), "pretrain"))  # no run there: nothing kept to mention
    assert message == ("training failed: FloatingPointError: pretraining diverged in epoch 3 (step 7: loss nan); "
                       "lower optim.lr (now 10)")
