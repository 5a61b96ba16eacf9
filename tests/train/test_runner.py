from pathlib import Path

from patchray import config as configlib
from patchray.train.config import PretrainConfig
from patchray.train.runner import run_dir, train_location


def test_local_runs_keep_ray_train_state_in_their_own_folder(monkeypatch):
    monkeypatch.delenv("PATCHRAY_STORAGE", raising=False)
    out = run_dir(configlib.build(PretrainConfig, {"out": "/tmp/x", "name": "a"}))
    assert out == Path("/tmp/x/a")
    assert train_location(out, None, "pretrain") == ("/tmp/x/a/ray", "pretrain")


def test_runs_in_shared_storage_never_share_a_ray_train_run():
    # two jobs writing to one bucket must not resume each other's checkpoints
    a = train_location(Path("/runs/a"), "s3://bucket/patchray", "pretrain")
    b = train_location(Path("/runs/b"), "s3://bucket/patchray", "pretrain")
    fine = train_location(Path("/runs/a"), "s3://bucket/patchray", "finetune")
    assert a == ("s3://bucket/patchray", "pretrain-a")
    assert len({a, b, fine}) == 3


def test_the_cluster_s_storage_variable_is_the_default_and_a_flag_overrides_it(monkeypatch):
    monkeypatch.setenv("PATCHRAY_STORAGE", "gs://cluster-bucket/runs")
    assert train_location(Path("/runs/a"), None, "pretrain") == ("gs://cluster-bucket/runs", "pretrain-a")
    assert train_location(Path("/runs/a"), "/mnt/nfs", "pretrain") == ("/mnt/nfs", "pretrain-a")
