import multiprocessing
import time

from patchray import config as configlib
from patchray.train.config import PretrainConfig
from patchray.tune.cache import PretrainCache, data_fingerprint, pretext_key


def test_key_ignores_names_and_places_but_not_the_task_or_the_data(tmp_path):
    shard = tmp_path / "a.parquet"
    shard.write_bytes(b"x" * 10)
    fp = data_fingerprint([str(shard)])
    base = PretrainConfig()
    moved = configlib.build(PretrainConfig, configlib.to_dict(base) | {"name": "other", "out": "/elsewhere"})
    assert pretext_key(base, fp) == pretext_key(moved, fp)
    smaller = configlib.load(PretrainConfig, None, ["task.patch_size=24"])
    assert pretext_key(smaller, fp) != pretext_key(base, fp)
    shard.write_bytes(b"x" * 11)
    assert pretext_key(base, data_fingerprint([str(shard)])) != pretext_key(base, fp)


def _train_slowly(root, key, log, user):
    def train(folder):
        folder.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write("trained\n")
        time.sleep(1.0)
        return {"ok": True}
    PretrainCache(root).get_or_train(key, train, user=user)


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
    uses = cache.uses("k1")
    assert sorted(u["user"] for u in uses) == ["", "p0", "p1"]
    assert [u["trained"] for u in uses].count(True) == 1


def test_a_crash_mid_training_leaves_no_complete_entry(tmp_path):
    cache = PretrainCache(tmp_path)

    def crash(folder):
        (folder / "partial.pt").write_bytes(b"half")
        raise RuntimeError("killed")

    try:
        cache.get_or_train("k", crash)
    except RuntimeError:
        pass
    assert not cache.is_complete("k")
    _, trained = cache.get_or_train("k", lambda folder: {"ok": True})
    assert trained and cache.is_complete("k")
