"""The Tune pretraining cache on a real local Ray cluster: a longer pretraining continues a cached shorter one."""
import json

import pytest
import torch
from helpers import small_config

from patchray.shards import open_shards
from patchray.train.checkpoint import final_state, load_checkpoint
from patchray.tune.cache import PretrainCache, cached_pretraining

pytestmark = pytest.mark.slow


def _lines(folder):
    return (folder / "metrics.jsonl").read_text().splitlines()


def _epochs_ray_train_ran(folder) -> list[int]:
    """The epochs reported in this entry's own Ray Train run (not the history it carries over)."""
    import ray.train

    frame = ray.train.Result.from_path(str(folder / "ray" / "pretrain")).metrics_dataframe
    return [int(e) for e in frame["epoch"]]


def test_a_longer_pretraining_continues_the_cached_shorter_one(ray_cluster, synthetic_small, tmp_path):
    data = synthetic_small / "unlabeled"
    fingerprint = open_shards(str(data)).fingerprint
    cache = PretrainCache(tmp_path / "cache")

    def pretrain(epochs):
        cfg = small_config(tmp_path, "unused", [data], epochs=epochs, max_crops=320,
                           resources={"num_workers": 1, "use_gpu": False})
        return cached_pretraining(cache, cfg, fingerprint, num_workers=1, use_gpu=False, user=f"trial-{epochs}")

    one = pretrain(1)
    assert one.trained and one.continued_from is None
    two = pretrain(2)
    assert two.trained and (two.continued_from, two.from_epoch) == (one.key, 1) and two.key != one.key

    # epoch 1 of the longer entry is the shorter entry's, line for line (a re-trained epoch has new timings);
    # only epoch 2 ran in its own Ray Train run
    assert [json.loads(line)["epoch"] for line in _lines(two.folder)] == [0, 1]
    assert _lines(two.folder)[0] == _lines(one.folder)[0]
    assert _epochs_ray_train_ran(one.folder) == [0] and _epochs_ray_train_ran(two.folder) == [1]
    summary = json.loads((two.folder / "complete.json").read_text())
    assert summary["epochs"] == 2 and summary["from_epoch"] == 1
    assert summary["continued_from"] == str(one.folder.resolve())
    assert summary["cache"]["continued_from"] == one.key
    epochs = [json.loads(line) for line in _lines(two.folder)]
    assert epochs[1]["patches_seen"] > epochs[0]["patches_seen"] == json.loads(_lines(one.folder)[0])["patches_seen"]

    # it trained on from the shorter entry's weights: its last checkpoint is epoch 2's, with other weights
    (start, _), (end, _) = load_checkpoint(final_state(one.folder)), load_checkpoint(final_state(two.folder))
    assert (start["epoch"], end["epoch"]) == (0, 1)
    assert any(not torch.equal(start["model"][k], end["model"][k]) for k in start["model"])

    # asked again, the 2-epoch entry is taken from the cache
    again = pretrain(2)
    assert not again.trained and again.folder == two.folder and again.continued_from == one.key
