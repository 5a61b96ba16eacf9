"""One real local Ray cluster for the whole end-to-end session (starting one costs ~5 s), and small data."""
import socket
import warnings

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # A cluster of our own (never `ray stop`: it would stop every Ray process on the machine).
    # The dashboard is what users have (and Ray Train's placement-group cleaner needs its state API); metrics
    # are exported every second so that the telemetry test sees them while a short run trains.
    with socket.socket() as s:  # 8265 may belong to a cluster of someone else's
        s.bind(("127.0.0.1", 0))
        dashboard_port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=True, dashboard_port=dashboard_port, log_to_driver=True,
             _system_config={"metrics_report_interval_ms": 1000},
             runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    from patchray.shards.generate import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, num_crops=900, labeled=0, seed=3, workers=2, progress=False)
    return root
