"""The cluster YAMLs, checked against Ray's own autoscaler schema offline (no cloud account needed), and what
their file mounts copy to every node: the code, never data, run outputs, environments or secrets."""
import fnmatch
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

from patchray.bench.cost import PIPELINE_PATCHES_PER_CPU_S, cost_table
from patchray.ray_compat import FREE_OBJECTS_PERIOD_MS, RAY_FREE_OBJECTS_ENV, validate_cluster_config

ROOT = Path(__file__).parents[2]
CLUSTER = ROOT / "configs" / "cluster"
FILES = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
STORAGE_SCHEME = {"aws": "s3://", "gcp": "gs://"}


@pytest.mark.parametrize("cloud", sorted(FILES))
def test_cluster_yaml_passes_ray_s_schema_with_the_intended_node_types(cloud):
    config = yaml.safe_load(FILES[cloud].read_text())
    prepared = validate_cluster_config(config)  # merged with the provider's defaults, as `ray up` does
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
    # patchray is installed on every node from the checkout that `ray up` runs in: all that install needs
    assert all(remote.startswith("~/patchray/") for remote in config["file_mounts"])
    assert any("pip install" in c and "-e ~/patchray" in c for c in config["setup_commands"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for needed in ("pyproject.toml", project["readme"], "patchray/__init__.py", "jobs/pretrain.py",
                   "configs/pretrain.yaml"):
        assert copied(config, needed) == f"~/patchray/{needed}", needed
    # shared storage wired to the jobs' --storage default; the dashboard only on the head's loopback
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert any(f"PATCHRAY_STORAGE={STORAGE_SCHEME[cloud]}" in c for c in commands)
        # every raylet deletes freed objects as promptly as a job's local cluster does
        assert any(f"export {RAY_FREE_OBJECTS_ENV}={FREE_OBJECTS_PERIOD_MS};" in c for c in commands)
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])


def _thousands(patches_per_s: float) -> str:
    return f"~{round(patches_per_s, -3):,.0f} patches/s"


@pytest.mark.parametrize("cloud", sorted(FILES))
def test_node_shapes_and_their_comments_follow_the_cost_model(cloud):
    """A GPU node holds the cores the cost model asks for one GPU training resnet18 at batch 1024 from the
    default pipeline; the node comments quote the model's current rates, so a new measurement that moves them
    fails here until the YAMLs are read again."""
    text = FILES[cloud].read_text()
    types = yaml.safe_load(text)["available_node_types"]
    need = {(row["net"], row["pipeline"]): row for row in cost_table()}
    for node in types.values():
        cpus = node["resources"].get("CPU", 0)
        if "trainer_node" in node["resources"]:
            per_gpu = cpus / node["resources"]["GPU"]
            assert per_gpu >= need[("resnet18, batch 1024", "data")]["cores"]
            assert _thousands((per_gpu - 1) * PIPELINE_PATCHES_PER_CPU_S["data"]) in text
        if "data_node" in node["resources"]:
            tiny = need[("tiny, batch 1024", "data")]
            delivers = cpus * PIPELINE_PATCHES_PER_CPU_S["data"]
            assert delivers >= tiny["gpu_patches_per_s"]  # a data node feeds at least one H200 of the tiny net
            assert _thousands(delivers) in text
            assert _thousands(cpus * PIPELINE_PATCHES_PER_CPU_S["data+cut"]).removesuffix(" patches/s") in text
            assert f"{delivers / tiny['gpu_patches_per_s']:.1f} H200s" in text
            assert f"{tiny['cpus_per_gpu']} CPUs per GPU" in text


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
    config = yaml.safe_load(FILES[cloud].read_text())
    breakage(config)
    with pytest.raises(ValueError, match=message):
        validate_cluster_config(config)


# ---- what `ray up` copies: the file mounts, less what rsync_exclude keeps back, evaluated as rsync does

# Must never reach a node: data and run outputs, environments, VCS state, credentials and keys, caches.
NEVER_COPIED = [
    "data/synthetic/unlabeled/unlabeled-train-00000.parquet", "runs/pretrain/summary.json",
    ".venv/bin/python", ".git/config", ".git/objects/ab/cdef", ".env", ".env.local", ".aws/credentials",
    ".ssh/id_ed25519", ".ray/auth_token", "key.pem", "my-cluster.pem", ".pytest_cache/v/cache/nodeids",
    ".ci/run", "build/lib/patchray/__init__.py", "patchray.egg-info/PKG-INFO", "notes/untracked.txt",
    "patchray/.env", "patchray/__pycache__/config.cpython-311.pyc", "patchray/tune/.secrets/token",
    "jobs/runs/pretrain/summary.json", "jobs/data/crops-0.parquet", "configs/cluster/my-key.pem",
    "configs/cluster/.aws/credentials", "configs/cluster/gcp-sa.key", "jobs/.ipynb_checkpoints/x.py",
]
# Ray's own single-file syncs under the same rsync options (`ray up` gives the head its SSH key and config).
RAY_OWN_SYNCS = {"~/ray_bootstrap_key.pem": "/home/me/.ssh/ray-autoscaler_us-west-2.pem",
                 "~/ray_bootstrap_config.yaml": "/tmp/ray-bootstrap-k2j3h4"}


def _rsync_pattern_matches(pattern: str, parts: list[str], is_dir: bool) -> bool:
    """rsync's --exclude rule on one path (its components): a trailing / matches directories only; a leading
    / anchors at the top of the transfer; a pattern with a / inside matches the path's last components, one
    without matches the name; * and ? never cross a /, which matching component by component ensures."""
    assert "**" not in pattern and "[" not in pattern, f"{pattern}: not emulated here"
    if pattern.endswith("/"):
        if not is_dir:
            return False
        pattern = pattern.rstrip("/")
    anchored = pattern.startswith("/")
    pieces = pattern.lstrip("/").split("/")
    if len(parts) < len(pieces) or (anchored and len(parts) != len(pieces)):
        return False
    return all(fnmatch.fnmatchcase(part, piece) for part, piece in zip(parts[-len(pieces):], pieces))


def _excluded(parts: list[str], is_dir: bool, patterns: list[str]) -> bool:
    """rsync skips a path when an exclude rule matches it or any directory above it in the transfer."""
    return any(_rsync_pattern_matches(p, parts[:i], is_dir or i < len(parts))
               for i in range(1, len(parts) + 1) for p in patterns)


def copied(config: dict, path: str, is_dir: bool = False) -> str | None:
    """Where `ray up` puts ``path`` (relative to the checkout) on a node, or None when it is not copied."""
    patterns = config.get("rsync_exclude") or []
    assert not config.get("rsync_filter"), "rsync_filter merge files are not emulated here"
    for remote, local in config["file_mounts"].items():
        local = str(Path(local))  # "./jobs" -> "jobs", "." -> "."
        if local == path:  # a single file: rsync sees its name alone
            return None if _excluded([Path(path).name], is_dir, patterns) else remote
        if local == "." or path.startswith(local + "/"):  # a folder: rsync sees the names below it
            parts = list(Path(path).parts if local == "." else Path(path).relative_to(local).parts)
            return None if _excluded(parts, is_dir, patterns) else f"{remote}/{'/'.join(parts)}"
    return None


@pytest.mark.parametrize("cloud", sorted(FILES))
def test_no_data_run_outputs_environment_or_secret_is_copied_to_the_nodes(cloud):
    config = yaml.safe_load(FILES[cloud].read_text())
    leaked = [p for p in NEVER_COPIED if copied(config, p) is not None]
    assert not leaked, f"{FILES[cloud].name} copies {leaked} to every node"
    # and Ray's own syncs still go through the same patterns: the head's SSH key is not held back
    for remote, local in RAY_OWN_SYNCS.items():
        assert not _excluded([Path(local).name], False, config["rsync_exclude"]), remote


@pytest.mark.parametrize("cloud", sorted(FILES))
def test_every_tracked_file_under_the_mounts_is_copied(cloud):
    """A new code folder named like an exclusion (say patchray/data/) would be missing on the nodes."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    config = yaml.safe_load(FILES[cloud].read_text())
    roots = [str(Path(local)) for local in config["file_mounts"].values()]
    under = [p for p in tracked.splitlines() if any(p == r or p.startswith(r + "/") for r in roots)]
    assert len(under) > 20
    assert [p for p in under if copied(config, p) is None] == []


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
@pytest.mark.parametrize("cloud", sorted(FILES))
def test_the_emulated_rsync_agrees_with_rsync_itself(cloud, tmp_path):
    """Where rsync exists: build the sample checkout, run rsync with the arguments Ray's SSH runner builds
    for each file mount (--exclude per rsync_exclude), and compare what arrives with ``copied``."""
    config = yaml.safe_load(FILES[cloud].read_text())
    src, node = tmp_path / "checkout", tmp_path / "node"
    samples = NEVER_COPIED + ["pyproject.toml", "README.md", "patchray/__init__.py", "patchray/bench/data.py",
                              "jobs/pretrain.py", "configs/cluster/aws.yaml"]
    for sample in samples:
        (src / sample).parent.mkdir(parents=True, exist_ok=True)
        (src / sample).write_text("x")
    excludes = [arg for p in config["rsync_exclude"] for arg in ("--exclude", p)]
    for remote, local in config["file_mounts"].items():
        source, target = src / local, node / remote.removeprefix("~/")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Ray's updater appends / to folders: their contents go to the target
        args = [f"{source}/", f"{target}/"] if source.is_dir() else [str(source), str(target)]
        subprocess.run(["rsync", "-a", *excludes, *args], check=True)
    arrived = {"~/" + str(p.relative_to(node)) for p in node.rglob("*") if p.is_file()}
    assert arrived == {copied(config, s) for s in samples} - {None}
    # Ray's own single-file syncs (the head's SSH key) arrive under the same options
    key = tmp_path / "home" / ".ssh" / Path(RAY_OWN_SYNCS["~/ray_bootstrap_key.pem"]).name
    key.parent.mkdir(parents=True)
    key.write_text("key")
    subprocess.run(["rsync", "-a", *excludes, str(key), str(node / "ray_bootstrap_key.pem")], check=True)
    assert (node / "ray_bootstrap_key.pem").read_text() == "key"
