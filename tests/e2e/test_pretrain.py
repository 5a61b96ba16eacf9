"""PatchTask pretraining end to end on a real local Ray cluster: 2 training workers on 2 CPUs."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from patchray.models import build_trunk
from patchray.shards import CropRecord, DatasetMeta, ShardWriter, AttributeSet
from patchray.train.pretrain import run_pretrain

from helpers import small_config

pytestmark = pytest.mark.slow


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_learns_writes_outputs_and_resumes(ray_cluster, synthetic_small, tmp_path, capsys):
    cfg = small_config(tmp_path, "run", [synthetic_small / "unlabeled"])
    summary = run_pretrain(cfg)
    out = tmp_path / "run"
    # learned something real: well above the 1/18 chance of pt18
    assert summary["chance"] == pytest.approx(1 / 18)
    assert summary["val_acc"] > 2 * summary["chance"]
    assert summary["resources"].startswith("2 training worker(s) on CPU")
    metrics = _metrics(out)
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert metrics[-1]["workers"] == 2
    assert metrics[-1]["patches_seen"] == summary["patches_seen"] > 0
    assert 0 <= metrics[-1]["data_wait_frac"] <= 1
    for name in ("config.yaml", "summary.json", "curves.png", "confusion.png"):
        assert (out / name).stat().st_size > 0, name
    # plain state_dicts, loadable without unpickling anything else
    trunk_state = torch.load(out / "checkpoints" / "trunk.pt", weights_only=True)
    fresh = build_trunk("tiny")
    assert fresh.load_state_dict(trunk_state) is not None
    pretext = torch.load(out / "checkpoints" / "pretext.pt", weights_only=True)
    assert any(k.startswith("head.") for k in pretext) and any(k.startswith("trunk.") for k in pretext)
    assert all(torch.equal(pretext[f"trunk.{k}"], v) for k, v in trunk_state.items())

    # the same name again with more epochs resumes: epochs continue, none repeated
    capsys.readouterr()
    summary = run_pretrain(small_config(tmp_path, "run", [synthetic_small / "unlabeled"], epochs=3))
    assert "resuming after epoch 1" in capsys.readouterr().out or summary["epochs"] == 3
    assert [m["epoch"] for m in _metrics(out)] == [0, 1, 2]
    assert summary["patches_seen"] > metrics[-1]["patches_seen"]


@pytest.mark.parametrize("decode_on", ["data", "trainer"])
def test_corrupt_rows_are_skipped_and_counted(ray_cluster, synthetic_small, tmp_path, decode_on):
    """Wherever crops are decoded (Ray Data's tasks, or the training worker), each bad row is counted once."""
    source = sorted((synthetic_small / "unlabeled").glob("*.parquet"))[0]
    rows = pq.read_table(source).slice(0, 300).to_pylist()
    good = rows[0]["image"]
    data = tmp_path / "mixed"
    with ShardWriter(data, DatasetMeta("mixed", AttributeSet()), rows_per_shard=1000) as writer:
        for i, row in enumerate(rows):
            image = row["image"]
            if i % 50 == 7:
                image = good[: len(good) // 2]  # truncated JPEG
            elif i % 50 == 31:
                image = b"definitely not an image"
            writer.add(CropRecord(image=image, crop_id=row["crop_id"]))
    # validation takes the first 100 good rows; the bad rows among them stay in the training stream
    summary = run_pretrain(small_config(tmp_path, "mixed", [data], epochs=1, val_crops=100, decode_on=decode_on))
    # rows 0..299: 6 truncated (7, 57, ...) and 6 garbage (31, 81, ...): every one counted once per epoch
    assert summary["skipped_rows"] == {"truncated_image": 6, "unreadable_image": 6}
    assert summary["patches_seen"] > 0


def test_no_position_cue_in_noise_or_constant_crops(ray_cluster, synthetic_small, tmp_path):
    """A trained net cannot place patches of crops that carry no structure: no padding or border leaks."""
    from patchray.models import PretextNet
    from patchray.patches import PatchTaskConfig, normalize_patches, validation_patches
    from patchray.shards.decode import decode_crops

    cfg = small_config(tmp_path, "probe", [synthetic_small / "unlabeled"], epochs=2)
    run_pretrain(cfg)
    task = PatchTaskConfig()
    net = PretextNet(build_trunk("tiny"), task.num_classes)
    net.load_state_dict(torch.load(tmp_path / "probe" / "checkpoints" / "pretext.pt", weights_only=True))
    net.eval()

    def accuracy(pixels):
        ids = [f"probe{i}" for i in range(len(pixels))]
        patches, labels = validation_patches(pixels, ids, task, seed=11)
        with torch.no_grad():
            pred = net(normalize_patches(torch.from_numpy(patches), task.normalize)).argmax(1).numpy()
        return float((pred == labels).mean()), len(labels)

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (300, 200, 100, 3), dtype=np.uint8)
    constant = np.repeat(rng.integers(0, 256, (300, 1, 1, 3), dtype=np.uint8), 200, 1).repeat(100, 2)
    real_rows = pq.read_table(sorted((synthetic_small / "unlabeled").glob("*.parquet"))[-1]).slice(0, 300)
    real, _ = decode_crops(real_rows.column("image").to_pylist(), 100, 200)

    real_acc, _ = accuracy(real)
    noise_acc, n = accuracy(noise)
    constant_acc, _ = accuracy(constant)
    chance = 1 / task.num_classes
    tolerance = 4 * np.sqrt(chance * (1 - chance) / n)  # four binomial standard deviations
    assert real_acc > chance + 5 * tolerance  # the probe is a net that did learn positions
    assert abs(noise_acc - chance) < tolerance
    assert abs(constant_acc - chance) < tolerance
