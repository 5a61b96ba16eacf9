"""The cluster YAMLs, checked against Ray's own autoscaler schema offline (no cloud account needed)."""
import copy
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).parents[2] / "configs" / "cluster"
FILES = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
STORAGE_SCHEME = {"aws": "s3://", "gcp": "gs://"}


def check(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))  # merges the provider's defaults, as `ray up` does
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("cloud", sorted(FILES))
def test_cluster_yaml_passes_ray_s_schema_with_the_intended_node_types(cloud):
    config = yaml.safe_load(FILES[cloud].read_text())
    prepared = check(config)
    assert prepared["provider"]["type"] == cloud
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    # the head trains nothing: no GPU, no trainer marker
    assert "GPU" not in head["resources"] and "trainer_node" not in head["resources"]
    workers = {name: t for name, t in types.items() if name != prepared["head_node_type"]}
    data = [t for t in workers.values() if "data_node" in t["resources"]]
    train = [t for t in workers.values() if "trainer_node" in t["resources"]]
    assert data and all("GPU" not in t["resources"] for t in data)
    assert train and all(t["resources"]["GPU"] >= 1 for t in train)
    assert all(t["min_workers"] == 0 for t in workers.values())  # autoscaling from zero
    # patchray is installed on every node from the checkout that `ray up` runs in
    assert config["file_mounts"] == {"~/patchray": "."}
    assert any("pip install" in c and "-e ~/patchray" in c for c in config["setup_commands"])
    # shared storage wired to the jobs' --storage default; the dashboard only on the head's loopback
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert any(f"PATCHRAY_STORAGE={STORAGE_SCHEME[cloud]}" in c for c in commands)
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])


def _typo_key(config):
    config["available_node_types"]["gpu_train"]["min_wokers"] = 0


def _missing_head_type(config):
    config["head_node_type"] = "gpu_head"


def _wrong_type(config):
    config["max_workers"] = "twelve"


def _too_few_max_workers(config):
    config["available_node_types"]["cpu_data"]["min_workers"] = 20


@pytest.mark.parametrize("cloud", sorted(FILES))
@pytest.mark.parametrize("breakage, message", [
    (_typo_key, "'min_wokers' was unexpected"),
    (_missing_head_type, "head_node_type` must be one of"),
    (_wrong_type, "'twelve' is not of type"),
    (_too_few_max_workers, "max_workers` is smaller than the sum of `min_workers"),
])
def test_a_broken_copy_is_refused(cloud, breakage, message):
    import jsonschema

    config = yaml.safe_load(FILES[cloud].read_text())
    breakage(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=message):
        check(config)
