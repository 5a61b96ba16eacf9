"""CPU time a contender consumes: this process and every process below it, sampled on a thread.

A benchmark's driver is the root of everything it measures: a DataLoader's worker processes are its children,
and a local Ray cluster it starts (GCS, raylet, dashboard, the data tasks' and training workers' processes) runs
below it. ``CpuClock`` sums the user + system seconds of that process tree every ``every_s`` and keeps a
running total, so ``seconds_between(t0, t1)`` gives what the whole tree spent between two wall-clock times (the
epochs' start and end, stamped where they happen). A process is followed by (pid, creation time); one that
ends between two samples loses at most its last ``every_s`` of CPU, one that starts is counted from its birth.
"""
from __future__ import annotations

import bisect
import threading
import time

import psutil

# What a process of the tree is, from its title (Ray workers retitle themselves with the task or actor they
# run, e.g. "ray::MapBatches(read_and_decode)"): the first pattern found in the title names it.
ROLES = (("read_and_decode", "data tasks"), ("MapBatches", "data tasks"), ("RayTrainWorker", "training worker"),
         ("SplitCoordinator", "split coordinator"), ("TrainController", "train controller"),
         ("raylet", "raylet"), ("gcs_server", "GCS"), ("dashboard", "dashboard and agents"),
         ("agent", "dashboard and agents"), ("monitor", "dashboard and agents"),
         ("ray::IDLE", "idle Ray workers"), ("ray::", "other Ray workers"))


def role_of(title: str, is_root: bool) -> str:
    if is_root:
        return "driver"
    for pattern, role in ROLES:
        if pattern in title:
            return role
    return "other processes (DataLoader workers)"


def tree_cpu_seconds(root: psutil.Process) -> dict[tuple[int, float], tuple[float, str]]:
    """(pid, creation time) -> (user + system CPU seconds so far, role) for ``root`` and all its descendants."""
    found = {}
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        processes = [root]
    for process in processes:
        try:
            with process.oneshot():
                times = process.cpu_times()
                title = " ".join(process.cmdline()[:2])
                found[(process.pid, process.create_time())] = (times.user + times.system,
                                                               role_of(title, process.pid == root.pid))
        except psutil.Error:  # ended while we looked
            continue
    return found


class CpuClock:
    """The CPU seconds of this process's tree, accumulated as wall-clock time passes (``samples``: (time.time(),
    total CPU seconds since the clock started))."""

    def __init__(self, every_s: float = 0.2):
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []
        self.by_role: list[dict[str, float]] = []  # beside each sample: the running total of each role
        self._root = psutil.Process()
        self._last: dict[tuple[int, float], float] = {}
        self._total = 0.0
        self._roles: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cpu-clock")

    def __enter__(self) -> CpuClock:
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self, first: bool = False) -> None:
        now = tree_cpu_seconds(self._root)
        if not first:
            # A process seen before adds what it spent since; a new one all it has spent (it started after the
            # last sample); an ended one adds nothing more. The interval goes to the role it has now.
            for key, (spent, role) in now.items():
                added = max(0.0, spent - self._last.get(key, 0.0))
                self._total += added
                self._roles[role] = self._roles.get(role, 0.0) + added
        self._last = {key: spent for key, (spent, _) in now.items()}
        self.samples.append((time.time(), self._total))
        self.by_role.append(dict(self._roles))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def seconds_at(self, when: float) -> float:
        """The tree's CPU seconds at wall-clock ``when``, interpolated between the samples around it."""
        times = [t for t, _ in self.samples]
        i = bisect.bisect_left(times, when)
        if i == 0:
            return self.samples[0][1]
        if i == len(times):
            return self.samples[-1][1]
        (t0, c0), (t1, c1) = self.samples[i - 1], self.samples[i]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0) if t1 > t0 else c1

    def seconds_between(self, start: float, end: float) -> float:
        return self.seconds_at(end) - self.seconds_at(start)

    def roles_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds by role (``ROLES``) between the samples nearest ``start`` and ``end``."""
        times = [t for t, _ in self.samples]
        first = self.by_role[min(bisect.bisect_left(times, start), len(times) - 1)]
        last = self.by_role[min(bisect.bisect_left(times, end), len(times) - 1)]
        return {role: round(spent - first.get(role, 0.0), 2) for role, spent in sorted(last.items())
                if spent - first.get(role, 0.0) > 0.005}
