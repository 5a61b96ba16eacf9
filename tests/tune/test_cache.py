import errno
import fcntl
import json
import multiprocessing
import os
import socket
import threading
import time

import pytest

from patchray import config as configlib
from patchray.shards import AttributeSet, CropRecord, DatasetMeta, ShardWriter, open_shards
from patchray.train.config import PretrainConfig
from patchray.tune.cache import (
    FAILED,
    USES,
    CachedFailure,
    CacheLockTimeout,
    PretrainCache,
    pretext_key,
)


def _uses(cache: PretrainCache, key: str) -> list[dict]:
    """The entry's log of who used it (one JSON line per get_or_train)."""
    return [json.loads(line) for line in (cache.entry(key) / USES).read_text().splitlines()]


def _fingerprint(folder, ids, images, overwrite=False) -> str:
    """Write ``folder`` as a one-shard dataset; return its fingerprint as a job reads it (``ShardSet``)."""
    with ShardWriter(folder, DatasetMeta("s", AttributeSet()), overwrite=overwrite) as writer:
        for crop_id, image in zip(ids, images):
            assert writer.add(CropRecord(image=image, crop_id=crop_id)) is None
    return open_shards(str(folder)).fingerprint


def test_key_ignores_names_and_places_but_not_the_task_or_the_data(tmp_path):
    fp = _fingerprint(tmp_path / "a", ["c0", "c1"], [b"jpeg-0", b"jpeg-1"])
    base = PretrainConfig()
    moved = configlib.build(PretrainConfig, configlib.to_dict(base) | {"name": "other", "out": "/elsewhere"})
    assert pretext_key(base, fp, num_workers=2, use_gpu=False) == pretext_key(moved, fp, num_workers=2,
                                                                              use_gpu=False)
    smaller = configlib.load(PretrainConfig, None, ["task.patch_size=24"])
    assert pretext_key(smaller, fp, num_workers=2, use_gpu=False) != pretext_key(base, fp, num_workers=2,
                                                                                 use_gpu=False)
    more = _fingerprint(tmp_path / "a", ["c0", "c1", "c2"], [b"jpeg-0", b"jpeg-1", b"jpeg-2"], overwrite=True)
    assert pretext_key(base, more, num_workers=2, use_gpu=False) != pretext_key(base, fp, num_workers=2,
                                                                                use_gpu=False)


def test_a_rewritten_shard_of_the_same_size_changes_the_key(tmp_path):
    """Same file name, same byte size, other rows: the footers (statistics) differ, so must the key."""
    fp_a = _fingerprint(tmp_path / "a", ["c0", "c1"], [b"aaaa", b"bbbb"])
    fp_b = _fingerprint(tmp_path / "b", ["c2", "c3"], [b"cccc", b"dddd"])
    (a,), (b,) = (sorted((tmp_path / side).glob("*.parquet")) for side in "ab")
    assert a.name == b.name and a.stat().st_size == b.stat().st_size
    cfg = PretrainConfig()
    assert fp_a != fp_b
    assert pretext_key(cfg, fp_a, num_workers=2, use_gpu=False) != pretext_key(cfg, fp_b, num_workers=2,
                                                                               use_gpu=False)
    # the same file read through a pyarrow filesystem (a URI) gives the same fingerprint; a copy elsewhere too
    assert open_shards(f"file://{a}").fingerprint == fp_a
    copy = tmp_path / "elsewhere" / a.name
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    assert open_shards(str(copy)).fingerprint == fp_a


def test_key_holds_the_planned_workers_and_device_not_how_they_are_placed():
    fp = "0" * 16
    cfg = PretrainConfig()  # resources.num_workers / use_gpu None: decided by the planner
    with pytest.raises(ValueError, match="planned"):
        pretext_key(cfg, fp)

    def key(overrides=(), **planned):
        return pretext_key(configlib.load(PretrainConfig, None, list(overrides)), fp, **planned)

    two_cpu = key(num_workers=2, use_gpu=False)
    assert key(num_workers=4, use_gpu=False) != two_cpu  # global batch 4 x 128, not 2 x 128
    assert key(num_workers=2, use_gpu=True) != two_cpu   # bf16 autocast on GPUs
    # the planner's answer written in the config gives the same key as passing the plan
    assert key(["resources.num_workers=2", "resources.use_gpu=false"]) == two_cpu
    # how the workers are placed changes no weight
    assert key(["resources.cpus_per_worker=0.5", "resources.reserved_cpus=0.01", "max_failures=3"],
               num_workers=2, use_gpu=False) == two_cpu
    # amp changes nothing on CPUs (autocast is off there), and the precision on GPUs
    assert key(["amp=false"], num_workers=2, use_gpu=False) == two_cpu
    assert key(["amp=false"], num_workers=2, use_gpu=True) != key(num_workers=2, use_gpu=True)


def _train_slowly(root, key, log, user, started=None, seconds=1.0):
    def train(folder):
        folder.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write("trained\n")
        if started is not None:
            open(started, "w").close()
        time.sleep(seconds)
        return {"ok": True}
    PretrainCache(root).get_or_train(key, train, user=user, log=None)


def test_two_processes_needing_the_same_entry_train_it_once(tmp_path):
    log = tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_train_slowly, args=(tmp_path / "cache", "k1", log, f"p{i}"))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert log.read_text().count("trained") == 1
    cache = PretrainCache(tmp_path / "cache")
    assert cache.is_complete("k1")
    folder, trained = cache.get_or_train("k1", lambda f: (_ for _ in ()).throw(AssertionError("retrained")))
    assert not trained and folder == tmp_path / "cache" / "k1"
    uses = _uses(cache, "k1")
    assert sorted(u["user"] for u in uses) == ["", "p0", "p1"]
    assert [u["trained"] for u in uses].count(True) == 1


def test_waiting_for_another_process_s_training_is_bounded_logged_and_names_the_holder(tmp_path):
    started = tmp_path / "started"
    holder = multiprocessing.get_context("spawn").Process(
        target=_train_slowly, args=(tmp_path / "cache", "k2", tmp_path / "log.txt", "trial-A", started, 30.0))
    holder.start()
    try:
        deadline = time.time() + 60
        while not started.exists():
            assert time.time() < deadline and holder.is_alive(), "the holder never started training"
            time.sleep(0.05)
        lines = []
        t0 = time.monotonic()
        with pytest.raises(CacheLockTimeout) as timed_out:
            PretrainCache(tmp_path / "cache").get_or_train("k2", lambda f: {"ok": True}, user="trial-B",
                                                           lock_timeout_s=1.5, log=lines.append, log_every_s=0.3)
        assert time.monotonic() - t0 < 10
        message = str(timed_out.value)
        assert "k2" in message and str(tmp_path / "cache" / "k2.lock") in message
        assert f"pid {holder.pid}" in message and "trial-A" in message
        assert lines and all("waiting" in line and "k2" in line and "trial-A" in line for line in lines)
    finally:
        holder.terminate()
        holder.join(10)


def _no_flock(*args, **kwargs):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


def test_without_flock_a_lock_file_serialises_training_and_times_out_naming_its_owner(tmp_path, monkeypatch):
    monkeypatch.setattr(fcntl, "flock", _no_flock)  # as on a network filesystem without locks
    cache = PretrainCache(tmp_path)
    trained, lines = [], []
    release = threading.Event()

    def train(folder):
        trained.append(threading.current_thread().name)
        release.wait(30)
        return {"ok": True}

    first = threading.Thread(target=cache.get_or_train, args=("k", train), name="first",
                             kwargs={"user": "trial-A", "log": lines.append})
    first.start()
    try:
        deadline = time.time() + 10
        while not trained:
            assert time.time() < deadline
            time.sleep(0.02)
        excl = tmp_path / "k.lock.excl"
        owner = json.loads(excl.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["user"] == "trial-A"
        with pytest.raises(CacheLockTimeout, match=r"k\.lock\.excl.*trial-A"):
            cache.get_or_train("k", train, user="trial-B", lock_timeout_s=0.5, log=None)
        # a second user that waits long enough gets the entry trained once
        second = threading.Thread(target=cache.get_or_train, args=("k", train), name="second",
                                  kwargs={"user": "trial-C", "log": None})
        second.start()
        time.sleep(0.3)
    finally:
        release.set()
        first.join(30)
    second.join(30)
    assert trained == ["first"] and cache.is_complete("k")
    assert not (tmp_path / "k.lock.excl").exists()  # released
    assert any("flock is not supported" in line for line in lines)
    assert sorted(u["user"] for u in _uses(cache, "k")) == ["trial-A", "trial-C"]


def test_a_stale_lock_file_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(fcntl, "flock", _no_flock)
    cache = PretrainCache(tmp_path)
    excl = tmp_path / "k.lock.excl"
    # an owner on this host whose process is gone: taken over at once
    gone = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    gone.start()
    gone.join(30)
    excl.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "user": "dead", "token": "t1"}))
    lines = []
    _, trained = cache.get_or_train("k", lambda f: {"ok": True}, lock_timeout_s=5, log=lines.append)
    assert trained and any("stale lock" in line and "dead" in line for line in lines)
    # an owner elsewhere that stopped touching its file: taken over once it has not changed for stale_after_s
    excl2 = tmp_path / "k2.lock.excl"
    excl2.write_text(json.dumps({"pid": 1, "host": "some-other-node", "user": "silent", "token": "t2"}))
    t0 = time.monotonic()
    with cache.lock("k2", stale_after_s=0.5, timeout_s=5, log=None):
        assert json.loads(excl2.read_text())["pid"] == os.getpid()
    assert 0.5 <= time.monotonic() - t0 < 5
    # a live owner keeps its lock fresh with a heartbeat: not taken over however long it holds it
    with cache.lock("k4", stale_after_s=0.4, heartbeat_s=0.05, log=None, user="alive"):
        with pytest.raises(CacheLockTimeout, match="alive"):
            with cache.lock("k4", stale_after_s=0.4, timeout_s=1.2, log=None):
                pass


def test_a_failed_training_is_marked_and_refused_until_retried(tmp_path):
    cache = PretrainCache(tmp_path)

    def crash(folder):
        (folder / "partial.pt").write_bytes(b"half")
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        cache.get_or_train("k", crash, user="trial-A")
    assert not cache.is_complete("k")
    failed = json.loads((tmp_path / "k" / FAILED).read_text())
    assert "RuntimeError: CUDA out of memory" in failed["error"] and failed["user"] == "trial-A"
    assert failed["time"] > 0 and "Traceback" in failed["traceback"]

    # later calls refuse at once, naming the error and how to retry, and train nothing
    t0 = time.monotonic()
    with pytest.raises(CachedFailure) as refused:
        cache.get_or_train("k", lambda folder: (_ for _ in ()).throw(AssertionError("trained again")))
    assert time.monotonic() - t0 < 1
    message = str(refused.value)
    assert "CUDA out of memory" in message and "trial-A" in message
    assert str(tmp_path / "k" / FAILED) in message and "retry_failed=True" in message

    # retrying trains, and the entry is complete with no failure left
    _, trained = cache.get_or_train("k", lambda folder: {"ok": True}, retry_failed=True)
    assert trained and cache.is_complete("k") and not (tmp_path / "k" / FAILED).exists()
    assert json.loads((tmp_path / "k" / "complete.json").read_text()) == {"ok": True}

    # deleting the marker is the other way to retry
    with pytest.raises(RuntimeError):
        cache.get_or_train("k2", crash)
    (tmp_path / "k2" / FAILED).unlink()
    _, trained = cache.get_or_train("k2", lambda folder: {"ok": True})
    assert trained and cache.is_complete("k2")


def test_an_interrupted_training_leaves_no_failure_marker(tmp_path):
    """Ctrl-C (or a stopped Tune trial) is not a failure of the configuration: the next run trains it."""
    cache = PretrainCache(tmp_path)

    def interrupted(folder):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_train("k", interrupted)
    assert not cache.is_complete("k") and not (tmp_path / "k" / FAILED).exists()
    _, trained = cache.get_or_train("k", lambda folder: {"ok": True})
    assert trained
