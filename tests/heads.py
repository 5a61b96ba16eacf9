"""A Ray head of the test's own on loopback: free ports, token auth on, stopped alone (never `ray stop`)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")
TOKEN = Path.home() / ".ray" / "auth_token"
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bearer() -> dict:
    return {"Authorization": f"Bearer {TOKEN.read_text().strip()}"}


def wait_for_dashboard(url: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if TOKEN.exists():
                urllib.request.urlopen(urllib.request.Request(f"{url}/api/version", headers=bearer()), timeout=5)
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise TimeoutError(f"dashboard at {url} did not come up in {timeout:g} s")


@contextlib.contextmanager
def loopback_head(log: Path, *extra: str, env_extra: dict | None = None, gcs_port: int | None = None):
    """Yields (gcs address, dashboard url, env for clients). ``ray start --block``, when terminated, stops
    exactly the processes it started."""
    env = dict(os.environ, RAY_AUTH_MODE="token", **(env_extra or {}))
    ports = {flag: free_port() for flag in PORT_FLAGS} | ({"--port": gcs_port} if gcs_port else {})
    command = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
               "--disable-usage-stats", "--include-dashboard=true",
               *(f"{flag}={port}" for flag, port in ports.items()), *extra]
    head = subprocess.Popen(command, env=env, start_new_session=True, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        wait_for_dashboard(url)
        yield f"127.0.0.1:{ports['--port']}", url, env
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(10)
        except subprocess.TimeoutExpired:  # its processes are all ours (own session): end them for good
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)
        # `ray start` recorded this head as the machine's current cluster; left behind, a later plain
        # ray.init() (a job run by hand) would try to join the dead head instead of starting its own.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(f":{ports['--port']}"):
            current.unlink()
