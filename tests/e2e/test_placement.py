"""Placement on several nodes: with CPU-only data nodes and trainer nodes marked by a resource, a pretraining
run puts its Ray Data tasks on the data nodes and its training workers on the trainer nodes; a decoded cache on
the data nodes outlives losing them. Runs in a child process: it needs a multi-node cluster of its own
(ray.cluster_utils.Cluster), not the session's."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = r'''
import json, socket, sys, warnings
warnings.filterwarnings("ignore", category=DeprecationWarning)
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors, list_tasks

from patchray import config as configlib
from patchray.train.config import PretrainConfig
from patchray.train.pretrain import run_pretrain

data_dir, out = sys.argv[1], sys.argv[2]
with socket.socket() as s:  # a dashboard port of its own: 8265 may belong to another cluster
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True,
                                                        "dashboard_port": port})
data_nodes = [cluster.add_node(num_cpus=2, resources={"data_node": 10}) for _ in range(2)]
train_nodes = [cluster.add_node(num_cpus=1, resources={"trainer_node": 1}) for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address)
try:
    cfg = configlib.build(PretrainConfig, {
        "data": [data_dir], "out": out, "name": "placed", "epochs": 1, "max_crops": 200, "holdout_crops": 30,
        "resources": {"num_workers": 2, "cpus_per_worker": 0.5, "trainer_resources": {"trainer_node": 1},
                      "data_resources": {"data_node": 1}}})
    run_pretrain(cfg)
    here = cluster.address
    tasks = list_tasks(address=here, detail=True, limit=10000, raise_on_missing_output=False)
    workers = list_actors(address=here, filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=1000,
                          raise_on_missing_output=False)

    # cache_decoded on the data nodes, then both of them lost at once: Ray rebuilds the cache's blocks from their
    # lineage (the data tasks run again, on a new data node) and the next epoch streams every crop as decoded
    from patchray.pipeline import cache_decoded, crop_dataset
    from patchray.shards import open_shards

    cached = cache_decoded(crop_dataset(open_shards(data_dir), 100, 200, seed=1, data_resources={"data_node": 1}), 1)
    def epoch():
        return {crop: int(pixels.sum(dtype="int64")) for batch in cached.iter_batches(batch_size=None)
                for crop, pixels in zip(batch["crop_id"], batch["pixels"])}
    before = epoch()
    for node in data_nodes:
        cluster.remove_node(node, allow_graceful=False)
    cluster.add_node(num_cpus=2, resources={"data_node": 10})
    cluster.wait_for_nodes()
    after = epoch()
    print("PLACEMENT " + json.dumps({
        "data_nodes": [n.node_id for n in data_nodes], "train_nodes": [n.node_id for n in train_nodes],
        "data_tasks": [(t.name, t.node_id) for t in tasks if ("read_and_decode" in t.name)
                       and t.node_id],
        "all_tasks": sorted({t.name for t in tasks}),
        "train_workers": [a.node_id for a in workers],
        "cache": {"crops": len(before), "same_after_losing_the_data_nodes": after == before}}))
finally:
    ray.shutdown()
    cluster.shutdown()
'''


def test_data_tasks_run_on_data_nodes_and_training_workers_on_trainer_nodes(synthetic_small, tmp_path):
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(synthetic_small / "unlabeled"), str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    lines = [line for line in run.stdout.splitlines() if line.startswith("PLACEMENT ")]
    assert run.returncode == 0 and lines, (run.stdout[-3000:] + run.stderr[-3000:])
    placed = json.loads(lines[-1].removeprefix("PLACEMENT "))
    assert len(placed["train_workers"]) == 2
    assert set(placed["train_workers"]) <= set(placed["train_nodes"])
    assert placed["data_tasks"], "no Ray Data task found"
    names = {name for name, _ in placed["data_tasks"]}
    assert any("read_and_decode" in n for n in names), placed["all_tasks"]
    assert {node for _, node in placed["data_tasks"]} <= set(placed["data_nodes"])
    assert (tmp_path / "placed" / "checkpoints" / "trunk.pt").exists()
    assert placed["cache"] == {"crops": 900, "same_after_losing_the_data_nodes": True}
