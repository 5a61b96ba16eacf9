"""One real local Ray cluster for the whole end-to-end session (starting one costs ~5 s), and small data."""
import warnings

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # A cluster of our own (never `ray stop`: it would stop every Ray process on the machine).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    from patchray.shards.generate import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, num_crops=900, labeled=0, seed=3, workers=2, progress=False)
    return root
