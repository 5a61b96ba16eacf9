import errno
import fcntl
import json
import multiprocessing
import os
import socket
import threading
import time
import typing
from pathlib import Path

import pytest

from patchray import config as configlib
from patchray.shards import AttributeSet, CropRecord, DatasetMeta, ShardWriter, open_shards
from patchray.train.config import PretrainConfig
from patchray.tune.cache import (
    COMPLETE,
    FAILED,
    LEARNING_CODE,
    LINEAGE,
    PACKAGE_ROOT,
    USES,
    CachedFailure,
    CacheLockTimeout,
    PretrainCache,
    cached_pretraining,
    code_hash,
    code_version,
    lineage_key,
    longest_shorter_entry,
    pretext_key,
    source_files,
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
    assert key(["patches_per_step=256"], num_workers=2, use_gpu=False) != two_cpu  # global batch 2 x 256
    # the same global batch split otherwise (4 x 64, not 2 x 128) is another training too
    assert key(["patches_per_step=64"], num_workers=4, use_gpu=False) != two_cpu
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
        p.join(120)  # each child imports torch: slow on a loaded machine
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
        assert 1.5 <= time.monotonic() - t0 < 10  # waited the whole timeout, not more than a little longer
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
    assert f"cache entry {tmp_path / 'k'} failed earlier" in message  # the entry folder
    assert "RuntimeError: CUDA out of memory" in message  # the error
    assert "trial-A" in message and f"pid {os.getpid()} on {socket.gethostname()}" in message  # who
    assert time.strftime("%Y-%m-%d %H:%M", time.localtime(failed["time"])) in message  # when
    assert f"delete {tmp_path / 'k' / FAILED}" in message and "retry_failed=True" in message  # how to retry

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


def test_a_trial_waiting_for_a_training_that_fails_is_refused_with_its_error(tmp_path):
    """The next trial was already waiting on the lock when the first one failed: it refuses, it does not retry."""
    cache = PretrainCache(tmp_path)
    training, fail = threading.Event(), threading.Event()

    def crash(folder):
        training.set()
        fail.wait(30)
        raise ValueError("pretraining diverged in epoch 1")

    def first():
        with pytest.raises(ValueError):
            cache.get_or_train("k", crash, user="trial-A", log=None)

    holder = threading.Thread(target=first)
    holder.start()
    try:
        assert training.wait(30)
        lines, outcome = [], {}

        def second():
            try:
                cache.get_or_train("k", lambda folder: outcome.setdefault("trained", True), user="trial-B",
                                   log=lines.append, log_every_s=0.1)
            except CachedFailure as e:
                outcome["refused"] = str(e)

        waiter = threading.Thread(target=second)
        waiter.start()
        deadline = time.time() + 30
        while not lines:  # waiting, and saying so
            assert time.time() < deadline
            time.sleep(0.02)
    finally:
        fail.set()
        holder.join(30)
    waiter.join(30)
    assert "trained" not in outcome
    assert "pretraining diverged in epoch 1" in outcome["refused"] and "trial-A" in outcome["refused"]
    assert any("waiting" in line and "trial-A" in line for line in lines)


# ------------------------------------------------------------------------------------------- code version


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_code_hash_covers_the_listed_sources_and_nothing_else(tmp_path):
    _write(tmp_path / "pipeline.py", "def batches(): pass\n")
    _write(tmp_path / "models" / "trunks.py", "WIDTH = 64\n")
    _write(tmp_path / "tune" / "plots.py", "COLOR = 'red'\n")
    listed = ["pipeline.py", "models"]
    before = code_hash(tmp_path, listed)
    assert code_hash(tmp_path, listed) == before  # the same sources, the same hash
    _write(tmp_path / "tune" / "plots.py", "COLOR = 'blue'\n")  # not listed: a plot's edit keeps the cache
    assert code_hash(tmp_path, listed) == before
    _write(tmp_path / "models" / "trunks.py", "WIDTH = 128\n")  # a listed folder's file changed
    edited = code_hash(tmp_path, listed)
    assert edited != before
    _write(tmp_path / "models" / "heads.py", "")  # a new module in a listed folder
    assert code_hash(tmp_path, listed) != edited
    (tmp_path / "pipeline.py").rename(tmp_path / "data.py")  # a listed module renamed: said, not skipped
    with pytest.raises(FileNotFoundError, match=r"pipeline\.py: listed as code that decides what pretraining"):
        code_hash(tmp_path, listed)


def test_the_key_holds_the_code_version_computed_once():
    cfg, fp = PretrainConfig(), "0" * 16
    key = pretext_key(cfg, fp, num_workers=2, use_gpu=False)
    assert key == pretext_key(cfg, fp, num_workers=2, use_gpu=False, code=code_version())
    assert pretext_key(cfg, fp, num_workers=2, use_gpu=False, code="0.1.0+000000000000") != key
    assert code_version() is code_version() and code_version.cache_info().currsize == 1
    import patchray

    assert code_version() == f"{patchray.__version__}+{code_hash()}"
    # what the real list covers: what is learned, not the search, reports, benchmarks or the command line
    files = {p.relative_to(PACKAGE_ROOT).as_posix() for p in source_files(PACKAGE_ROOT, LEARNING_CODE)}
    assert {"models/trunks.py", "patches/task.py", "train/epoch.py", "train/optim.py", "train/pretrain_loop.py",
            "pipeline.py", "shards/decode.py", "shards/reader.py", "train/config.py"} <= files
    assert not [f for f in files if f.startswith(("tune/", "report/", "bench/")) or f in ("cli.py", "console.py")]


def test_the_key_ignores_names_places_and_the_run_continued():
    fp = "0" * 16
    base = pretext_key(PretrainConfig(), fp, num_workers=2, use_gpu=False)
    for overrides in (["name=other"], ["out=/elsewhere"], ["storage=s3://bucket/x"], ["start_from=/cache/abc"]):
        assert pretext_key(configlib.load(PretrainConfig, None, overrides), fp, num_workers=2, use_gpu=False) \
            == base, overrides


# ------------------------------------------------------------------------------------------------ lineage


def _cfg(*overrides):
    return configlib.load(PretrainConfig, None, list(overrides))


def _lineage(*overrides, code="v1", gpu=False):
    return lineage_key(_cfg(*overrides), "fp", num_workers=2, use_gpu=gpu, code=code)


def test_the_lineage_leaves_out_the_epochs_unless_the_schedule_depends_on_them():
    for schedule in ("step", "none"):
        one = _lineage("epochs=1", f"optim.schedule={schedule}")
        assert _lineage("epochs=5", f"optim.schedule={schedule}") == one
        assert pretext_key(_cfg("epochs=1"), "fp", num_workers=2, use_gpu=False) != \
            pretext_key(_cfg("epochs=5"), "fp", num_workers=2, use_gpu=False)
    assert _lineage("epochs=1", "optim.schedule=cosine") != _lineage("epochs=5", "optim.schedule=cosine")
    # anything else that changes what is learned makes another lineage
    assert _lineage() != _lineage("optim.lr=0.02")
    assert _lineage() != _lineage(code="v2")
    assert _lineage() != _lineage(gpu=True)
    assert _lineage() != _lineage("amp=false")  # same key on CPUs, but a run continues only its own identity


def test_the_schedules_that_depend_on_the_total_epochs_are_the_ones_the_optimiser_makes_so():
    from patchray.train.config import OptimConfig, Schedule
    from patchray.train.identity import SCHEDULES_SHAPED_BY_TOTAL
    from patchray.train.optim import lr_at_epoch

    for schedule in typing.get_args(Schedule):
        cfg = OptimConfig(schedule=schedule, step_epochs=1)
        depends = any(lr_at_epoch(cfg, e, 4) != lr_at_epoch(cfg, e, 8) for e in range(4))
        assert depends == (schedule in SCHEDULES_SHAPED_BY_TOTAL), schedule


def _entry(cache, key, lineage=None, epochs=None, complete=True, last=True, continued_from=None):
    """A hand-made cache entry: lineage.json, and optionally complete.json and a last checkpoint."""
    folder = cache.entry(key)
    folder.mkdir(parents=True)
    if lineage is not None:
        (folder / LINEAGE).write_text(json.dumps({"lineage": lineage, "epochs": epochs,
                                                  "continued_from": continued_from, "from_epoch": None}))
    if complete:
        (folder / COMPLETE).write_text(json.dumps({"epochs": epochs}))
    if last:
        _write(folder / "checkpoints" / "last" / "run.json", json.dumps({"epoch": (epochs or 1) - 1}))


def test_the_longest_shorter_complete_entry_of_the_lineage_is_found(tmp_path):
    cache = PretrainCache(tmp_path)
    _entry(cache, "one", "L", 1)
    _entry(cache, "three", "L", 3)
    _entry(cache, "five", "L", 5)
    _entry(cache, "other-lineage", "M", 4)
    _entry(cache, "unfinished", "L", 4, complete=False)
    _entry(cache, "no-last-checkpoint", "L", 4, last=False)
    _entry(cache, "before-lineages", None, 4)
    assert longest_shorter_entry(cache, "L", 5) == ("three", 3)  # not five: not shorter
    assert longest_shorter_entry(cache, "L", 4) == ("three", 3)
    assert longest_shorter_entry(cache, "L", 9) == ("five", 5)
    assert longest_shorter_entry(cache, "L", 1) is None
    assert longest_shorter_entry(cache, "M", 9) == ("other-lineage", 4)
    assert longest_shorter_entry(cache, "N", 9) is None


class FakePretraining:
    """Stands in for run_pretrain: records the configs it ran, and writes what a finished run leaves."""

    def __init__(self, refuse_start=False):
        self.runs, self.refuse_start = [], refuse_start

    def __call__(self, cfg):
        from patchray.train.identity import CannotContinueError

        if cfg.start_from and self.refuse_start:
            raise CannotContinueError(f"start_from: {cfg.start_from} is a run with other settings")
        self.runs.append(cfg)
        _write(Path(cfg.out) / cfg.name / "checkpoints" / "last" / "run.json", json.dumps({"epoch": cfg.epochs - 1}))
        return {"epochs": cfg.epochs, "continued_from": cfg.start_from}


def _pretrain(cache, train, *overrides, **kwargs):
    return cached_pretraining(cache, _cfg(*overrides), "fp", num_workers=2, use_gpu=False, train=train, log=None,
                              **kwargs)


def test_a_longer_pretraining_continues_the_longest_shorter_one(tmp_path):
    cache, train = PretrainCache(tmp_path), FakePretraining()
    one = _pretrain(cache, train, "epochs=1")
    assert one.trained and one.continued_from is None and train.runs[-1].start_from is None
    assert (train.runs[-1].out, train.runs[-1].name) == (str(tmp_path.resolve()), one.key)

    three = _pretrain(cache, train, "epochs=3", user="trial-7")
    assert three.trained and (three.continued_from, three.from_epoch) == (one.key, 1)
    assert train.runs[-1].start_from == str(cache.entry(one.key).resolve())
    assert "continuing the 1-epoch entry" in three.describe()
    record = json.loads((three.folder / LINEAGE).read_text())
    assert record | {"code": None} == {"lineage": _lineage_of("epochs=3"), "epochs": 3, "code": None,
                                       "continued_from": one.key, "from_epoch": 1}
    assert json.loads((three.folder / COMPLETE).read_text())["cache"]["continued_from"] == one.key

    # 2 epochs: continues the 1-epoch entry (the 3-epoch one is longer); 5: the 3-epoch one
    assert _pretrain(cache, train, "epochs=2").continued_from == one.key
    five = _pretrain(cache, train, "epochs=5")
    assert (five.continued_from, five.from_epoch) == (three.key, 3)
    # asked again, an entry is taken from the cache, still saying what it continued
    again = _pretrain(cache, train, "epochs=3")
    assert not again.trained and again.continued_from == one.key and len(train.runs) == 4
    assert "taken from the cache" in again.describe()

    # a schedule that depends on the total epochs trains each length from the start
    _pretrain(cache, train, "epochs=1", "optim.schedule=cosine")
    cosine = _pretrain(cache, train, "epochs=3", "optim.schedule=cosine")
    assert cosine.trained and cosine.continued_from is None and train.runs[-1].start_from is None


def _lineage_of(*overrides):
    return lineage_key(_cfg(*overrides), "fp", num_workers=2, use_gpu=False)


def test_a_shorter_entry_that_cannot_be_continued_is_trained_from_the_start(tmp_path):
    cache = PretrainCache(tmp_path)
    _pretrain(cache, FakePretraining(), "epochs=1")
    train, lines = FakePretraining(refuse_start=True), []
    two = cached_pretraining(cache, _cfg("epochs=2"), "fp", num_workers=2, use_gpu=False, train=train,
                             log=lines.append)
    assert two.trained and two.continued_from is None and [r.start_from for r in train.runs] == [None]
    assert "other settings" in json.loads((two.folder / LINEAGE).read_text())["not_continued"]
    assert any("training from the start instead" in line for line in lines)


def test_an_interrupted_continuation_keeps_its_starting_point(tmp_path):
    """Its Ray Train checkpoint holds start_from in its run identity: a new plan would refuse to resume it."""
    cache, train = PretrainCache(tmp_path), FakePretraining()
    one = _pretrain(cache, train, "epochs=1")
    key = pretext_key(_cfg("epochs=4"), "fp", num_workers=2, use_gpu=False)
    _entry(cache, key, _lineage_of("epochs=4"), 4, complete=False, last=False, continued_from=one.key)
    _pretrain(cache, train, "epochs=3")  # a longer entry appeared meanwhile
    resumed = _pretrain(cache, train, "epochs=4")
    assert resumed.key == key and resumed.continued_from == one.key
    assert train.runs[-1].start_from == str(cache.entry(one.key).resolve())
