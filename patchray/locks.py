"""Cross-process locks with a bounded, logged wait that names the holder, on any filesystem.

``hold(path, what)`` takes an ``flock`` on ``path``; where the filesystem has no ``flock`` (some network
filesystems), an exclusive-create lock file ``<path>.excl`` holding its owner (pid, host, user, time), kept
fresh by a heartbeat so that a dead owner's lock is taken over. Used by the Tune pretraining cache and the
first-run rendering of the synthetic data.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

LOCK_LOG_EVERY_S = 30.0
# Exclusive-create lock files (filesystems without flock): the owner touches its file this often, and a file
# that nobody touched for STALE_AFTER_S (as seen by the waiter's own clock: no clock skew between nodes) is
# taken to be a dead owner's. An owner on this host whose process is gone is taken over at once.
HEARTBEAT_S = 15.0
STALE_AFTER_S = 300.0
# errno values of flock on filesystems that do not implement it
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
_HELD = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES}
LOCK_MODES = ("auto", "flock", "file")
LOCK_MODE_ENV = "PATCHRAY_CACHE_LOCK"  # auto (flock, else lock files), flock, or file (always lock files)


class LockTimeout(TimeoutError):
    """Another process held a lock for longer than we were willing to wait."""


def _owner(user: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "user": user, "since": time.time(),
            "token": uuid.uuid4().hex}


def read_json(path: Path) -> dict:
    try:
        text = path.read_text()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


def describe_owner(owner: dict) -> str:
    if not owner.get("pid"):
        return "an unknown process"
    since = owner.get("since")
    held = f", holding it since {time.strftime('%H:%M:%S', time.localtime(since))}" if since else ""
    user = f" ({owner['user']})" if owner.get("user") else ""
    return f"pid {owner['pid']} on {owner.get('host', '?')}{user}{held}"


def _process_gone(owner: dict) -> bool:
    """True only when the owner ran on this host and its process no longer exists."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, but not ours to signal
        return False
    return False


class _Waiter:
    """The bounded wait of one lock attempt: deadline, logging every ``log_every_s``, the timeout message."""

    def __init__(self, what: str, path: Path, timeout_s: float, log, log_every_s: float, tag: str,
                 error: type[LockTimeout]):
        self.what, self.path, self.timeout_s, self.log, self.log_every_s = what, path, timeout_s, log, log_every_s
        self.tag, self.error = tag, error
        self.start = time.monotonic()
        self.next_log = self.start + log_every_s
        self.pause = 0.05

    def wait(self, owner: dict) -> None:
        """Sleep a little, or raise CacheLockTimeout once the deadline has passed."""
        now = time.monotonic()
        waited = now - self.start
        if waited >= self.timeout_s:
            raise self.error(
                f"gave up after {waited:.0f} s waiting for {self.what}: its lock {self.path} is held by "
                f"{describe_owner(owner)}, which is still working on it (or hangs). Wait for it, stop that "
                f"process, or raise the wait (now {self.timeout_s:g} s)")
        if self.log is not None and now >= self.next_log:
            self.log(f"[{self.tag}] waiting {waited:.0f} s for {self.what}: {self.path} is held by "
                     f"{describe_owner(owner)} (giving up after {self.timeout_s:g} s)")
            self.next_log = now + self.log_every_s
        time.sleep(min(self.pause, max(self.timeout_s - waited, 0.0) + 0.01))
        self.pause = min(self.pause * 1.5, 1.0)


def _acquire_flock(path: Path, waiter: _Waiter, user: str) -> Callable[[], None]:
    """Hold the flock of ``path`` (waiting as ``waiter`` says); returns its release. Raises OSError with an
    errno of _NO_FLOCK where the filesystem does not implement flock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in _HELD:
                    raise
            waiter.wait(read_json(path))
        # who holds it, for the messages of those who wait
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_owner(user)).encode(), 0)
    except BaseException:
        os.close(fd)
        raise

    def release():
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            # Never unlinked: a waiter may have it open, and would then lock a file no one else sees.
            os.close(fd)
    return release


def _write_new(path: Path, owner: dict) -> bool:
    """Create ``path`` holding ``owner``, atomically and only if it does not exist."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(owner))
    return True


def _signature(path: Path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def _take_over(path: Path, stale: dict, log) -> None:
    """Move a dead owner's lock file out of the way. If, in between, a live owner replaced it (we moved the
    wrong file), put that one back unless yet another took the place."""
    grave = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return
    moved = read_json(grave)
    if stale.get("token") and moved.get("token") != stale.get("token"):
        with contextlib.suppress(OSError):
            os.link(grave, path)  # fails if the place is taken again: no clobbering
    elif log is not None:
        log(f"[lock] took over the stale lock {path} of {describe_owner(stale)}")
    with contextlib.suppress(OSError):
        os.unlink(grave)


def _acquire_lock_file(path: Path, waiter: _Waiter, user: str, stale_after_s: float,
                       heartbeat_s: float) -> Callable[[], None]:
    """Exclusive-create lock file holding its owner (pid, host, user, time), kept fresh by a heartbeat
    thread; returns its release."""
    me = _owner(user)
    seen, seen_since = None, time.monotonic()
    while not _write_new(path, me):
        owner = read_json(path)
        try:
            signature = _signature(path)
        except FileNotFoundError:
            continue  # released just now: try again
        if signature != seen:
            seen, seen_since = signature, time.monotonic()
        if _process_gone(owner) or time.monotonic() - seen_since > stale_after_s:
            _take_over(path, owner, waiter.log)
            seen = None
            continue
        waiter.wait(owner)
    stop = threading.Event()

    def beat():
        while not stop.wait(heartbeat_s):
            if read_json(path).get("token") == me["token"]:
                with contextlib.suppress(OSError):
                    os.utime(path)

    heart = threading.Thread(target=beat, name=f"lock-heartbeat-{path.name}", daemon=True)
    heart.start()

    def release():
        stop.set()
        heart.join()
        if read_json(path).get("token") == me["token"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return release


def check_lock_mode(mode: str | None) -> str:
    mode = mode or os.environ.get(LOCK_MODE_ENV) or "auto"
    if mode not in LOCK_MODES:
        raise ValueError(f"lock_mode must be one of {LOCK_MODES}, got {mode!r}")
    return mode


@contextlib.contextmanager
def hold(path: Path, what: str, *, timeout_s: float, log: Callable[[str], None] | None = print,
         log_every_s: float = LOCK_LOG_EVERY_S, user: str = "", mode: str | None = None,
         stale_after_s: float = STALE_AFTER_S, heartbeat_s: float | None = None, tag: str = "lock",
         error: type[LockTimeout] = LockTimeout):
    """Hold the lock ``path`` (``what`` it guards, for messages); wait at most ``timeout_s`` for it
    (LockTimeout), saying so through ``log`` every ``log_every_s``. ``mode``: auto (flock, and lock files
    where the filesystem has no flock), flock, or file (lock files always: for a filesystem whose flock
    succeeds without locking across nodes); default $PATCHRAY_CACHE_LOCK, else auto."""
    mode = check_lock_mode(mode)
    path = Path(path)
    waiter = _Waiter(what, path, timeout_s, log, log_every_s, tag, error)
    release = None
    if mode != "file":
        try:
            release = _acquire_flock(path, waiter, user)
        except OSError as e:
            if isinstance(e, LockTimeout) or mode == "flock" or e.errno not in _NO_FLOCK:
                raise
            if log is not None:
                log(f"[{tag}] flock is not supported on {path.parent} ({os.strerror(e.errno)}): "
                    f"locking with the lock file {path}.excl instead")
    if release is None:
        waiter.path = path.with_name(path.name + ".excl")
        beat = heartbeat_s if heartbeat_s is not None else min(HEARTBEAT_S, stale_after_s / 4)
        release = _acquire_lock_file(waiter.path, waiter, user, stale_after_s, beat)
    try:
        yield
    finally:
        release()
