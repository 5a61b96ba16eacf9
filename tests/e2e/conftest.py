"""One real local Ray cluster for the whole end-to-end session (starting one costs ~5 s), and small data.

Every Ray process of the session (this cluster, the jobs the tests start, their clients) uses a token of the
session's own, never the user's ~/.ray/auth_token: Ray reads $RAY_AUTH_TOKEN_PATH before that file, and with
a token found there it creates none."""
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray_heads

from patchray.ray_compat import forget_loaded_auth_token, local_cluster_config

_TOKEN_VARS = (ray_heads.TOKEN_ENV, ray_heads.TOKEN_PATH_ENV)
# Ray Train's controller polls its workers every 2 s, and a run's end waits for two polls: 3 to 5 s of a test's
# short run. At 0.5 s a run ends 2 to 4 s sooner (measured with a no-op TorchTrainer; the e2e tests start
# dozens). Set before any cluster starts, so that every Ray process the tests start inherits it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


@dataclass(frozen=True)
class SessionToken:
    token: str
    path: Path
    user_token_before: tuple | None  # ray_heads.file_state(~/.ray/auth_token) when the session started


@pytest.fixture(scope="session", autouse=True)
def session_token(tmp_path_factory) -> SessionToken:
    """A random token for the session, in a pytest folder, named by $RAY_AUTH_TOKEN_PATH for this process
    and every process it starts."""
    before = ray_heads.file_state(ray_heads.USER_TOKEN)
    path = ray_heads.write_token(tmp_path_factory.mktemp("auth"))
    saved = {name: os.environ.get(name) for name in _TOKEN_VARS}
    os.environ.pop(ray_heads.TOKEN_ENV, None)
    os.environ[ray_heads.TOKEN_PATH_ENV] = str(path)
    forget_loaded_auth_token()  # Ray's loader keeps the token it found first
    yield SessionToken(token=path.read_text().strip(), path=path, user_token_before=before)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    forget_loaded_auth_token()


@pytest.fixture(scope="session")
def ray_session(session_token):
    """The session's cluster: what ray.init returned (``dashboard_url``, ``address_info``...)."""
    import ray

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # A cluster of our own (never `ray stop`: it would stop every Ray process on the machine), and a new one:
    # address="local", not the machine's "current cluster" a `ray start` (another test's head) recorded.
    # The dashboard is what users have (and Ray Train's placement-group cleaner needs its state API); metrics
    # are exported every second so that the telemetry test sees them while a short run trains; freed objects
    # leave the store as promptly as in a job's own local cluster (init_ray).
    with socket.socket() as s:  # 8265 may belong to a cluster of someone else's
        s.bind(("127.0.0.1", 0))
        dashboard_port = s.getsockname()[1]
    context = ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_port=dashboard_port,
                       log_to_driver=True, **local_cluster_config(metrics_interval_ms=1000),
                       runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}})
    yield context
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_cluster(ray_session):
    """The ray module, connected to the session's cluster."""
    import ray

    return ray


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    from patchray.shards.generate import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, num_crops=900, labeled=0, seed=3, workers=2, progress=False)
    return root


@pytest.fixture(scope="session")
def probe_labeled(tmp_path_factory):
    """A small labeled folder (train, val and test splits) for the online probe of pretraining tests."""
    from patchray.shards.generate import generate_synthetic

    root = tmp_path_factory.mktemp("probe")
    generate_synthetic(root, num_crops=0, labeled=160, seed=4, workers=2, progress=False)
    return root / "labeled"
