"""Autoscaling, shown on one machine with Ray's fake multi-node provider: a pretraining job asks for training
workers of a node type that is not up; the autoscaler adds such nodes, the job finishes, and the nodes are
removed once idle.

Started by hand rather than with ray.cluster_utils.AutoscalingCluster: that one misses its base config in the
2.60 wheel and runs `ray stop --force`, which would stop every Ray process on the machine. Here a head of our
own (free ports) is stopped alone."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray_heads

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]
TRAINER_TYPE = "trainer"


def fake_cluster_config(gcs_port: int) -> dict:
    return {
        "cluster_name": "patchray-fake", "max_workers": 2, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,  # 6 s
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{gcs_port}"},
        "auth": {"ssh_user": "ubuntu"}, "docker": {},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2, "data_node": 10}, "node_config": {}, "max_workers": 0},
            TRAINER_TYPE: {"resources": {"CPU": 1, "trainer_node": 1}, "node_config": {},
                           "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def trainer_nodes(dashboard: str) -> list[str]:
    """Alive nodes offering ``trainer_node``, from the state API over HTTP (with the cluster's token)."""
    import urllib.request

    request = urllib.request.Request(f"{dashboard}/api/v0/nodes?limit=100&detail=1", headers=ray_heads.bearer())
    with urllib.request.urlopen(request, timeout=10) as response:
        nodes = json.loads(response.read())["data"]["result"]["result"]
    return [n["node_id"] for n in nodes if n["state"] == "ALIVE" and "trainer_node" in (n.get("resources_total") or {})]


def test_trainer_nodes_are_added_for_a_job_and_removed_when_idle(synthetic_small, tmp_path):
    gcs_port = ray_heads.free_port()
    config = tmp_path / "fake_cluster.json"
    config.write_text(json.dumps(fake_cluster_config(gcs_port)))
    with ray_heads.loopback_head(tmp_path / "head.log", f"--autoscaling-config={config}", "--num-cpus=2",
                             '--resources={"data_node": 10}',
                             env_extra={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"},
                             gcs_port=gcs_port) as (gcs, dashboard, env):
        assert trainer_nodes(dashboard) == []  # nothing of the trainer type is up yet
        job = subprocess.Popen(
            [sys.executable, "jobs/pretrain.py", "--data", str(synthetic_small / "unlabeled"), "--out", str(tmp_path),
             "--name", "scaled", "epochs=1", "max_crops=200", "holdout_crops=30", "resources.num_workers=2",
             "resources.cpus_per_worker=1", "resources.trainer_resources={trainer_node: 1}",
             "resources.data_resources={data_node: 1}"],
            cwd=ROOT, env=dict(env, RAY_ADDRESS=gcs), stdout=open(tmp_path / "job.log", "w"),
            stderr=subprocess.STDOUT)
        most = 0
        while job.poll() is None:
            most = max(most, len(trainer_nodes(dashboard)))
            time.sleep(1)
        log = (tmp_path / "job.log").read_text()
        assert job.returncode == 0, log[-3000:]
        assert most == 2, f"the autoscaler brought up {most} trainer node(s), expected 2"
        assert json.loads((tmp_path / "scaled" / "summary.json").read_text())["epochs"] == 1
        deadline = time.time() + 120
        while trainer_nodes(dashboard):
            assert time.time() < deadline, "idle trainer nodes were not removed"
            time.sleep(2)
