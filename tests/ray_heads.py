"""A Ray head of the test's own on loopback: free ports, token auth on with a token of its own (never the
user's ~/.ray/auth_token), stopped alone (never `ray stop`)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
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
# Where Ray 2.60 looks for its token, in this order: $RAY_AUTH_TOKEN, the file $RAY_AUTH_TOKEN_PATH, then
# ~/.ray/auth_token (the user's own: created by their first `ray.init()`, and what their clusters accept).
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
USER_TOKEN = Path.home() / ".ray" / "auth_token"
_heads: list[str] = []  # tokens of the heads started here and still up, the latest last
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_token(folder: Path) -> Path:
    """A new random token (as `ray get-auth-token --generate` makes one) in a new file in ``folder``, 0600."""
    fd, path = tempfile.mkstemp(prefix="ray-auth-token-", dir=folder)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return Path(path)


def token_env(token_file: Path) -> dict:
    """Environment that makes Ray (a head, `ray job submit`, a driver's ray.init) use ``token_file``'s token:
    $RAY_AUTH_TOKEN_PATH, with $RAY_AUTH_TOKEN removed (it would come first)."""
    env = dict(os.environ, RAY_AUTH_MODE="token", **{TOKEN_PATH_ENV: str(token_file)})
    env.pop(TOKEN_ENV, None)
    return env


def file_state(path: Path):
    """(modification time, content hash) of a file, or None when there is none."""
    try:
        return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def token_of(env: dict) -> str:
    return Path(env[TOKEN_PATH_ENV]).read_text().strip()


def bearer(token: str | None = None) -> dict:
    """The HTTP header of ``token``; by default the token of the head started last (and still up)."""
    if token is None:
        assert _heads, "no head of ours is up"
        token = _heads[-1]
    return {"Authorization": f"Bearer {token}"}


def wait_for_dashboard(url: str, token: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/api/version", headers=bearer(token)), timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise TimeoutError(f"dashboard at {url} did not come up in {timeout:g} s")


@contextlib.contextmanager
def loopback_head(log: Path, *extra: str, env_extra: dict | None = None, gcs_port: int | None = None):
    """Yields (gcs address, dashboard url, env for clients). ``ray start --block``, when terminated, stops
    exactly the processes it started. The head and every client given ``env`` use a new random token kept
    beside ``log`` (``token_of(env)``), never the user's ~/.ray/auth_token."""
    env = dict(token_env(write_token(Path(log).parent)), **(env_extra or {}))
    token = token_of(env)
    ports = {flag: free_port() for flag in PORT_FLAGS} | ({"--port": gcs_port} if gcs_port else {})
    command = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
               "--disable-usage-stats", "--include-dashboard=true",
               *(f"{flag}={port}" for flag, port in ports.items()), *extra]
    head = subprocess.Popen(command, env=env, start_new_session=True, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ports['--dashboard-port']}"
    _heads.append(token)
    try:
        wait_for_dashboard(url, token)
        yield f"127.0.0.1:{ports['--port']}", url, env
    finally:
        _heads.remove(token)
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(3)   # `ray start --block` often outwaits 10 s here; what it would flush is the test's own
        except subprocess.TimeoutExpired:  # its processes are all ours (own session): end them for good
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)
        # `ray start` recorded this head as the machine's current cluster; left behind, a later plain
        # ray.init() (a job run by hand) would try to join the dead head instead of starting its own.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(f":{ports['--port']}"):
            current.unlink()
