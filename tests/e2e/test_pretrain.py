"""PatchTask pretraining end to end on a real local Ray cluster: 2 training workers on 2 CPUs."""
import json
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import small_config

from patchray.models import build_trunk
from patchray.shards import AttributeSet, CropRecord, DatasetMeta, ShardWriter
from patchray.train.identity import RunMismatchError
from patchray.train.pretrain import run_pretrain
from patchray.train.runner import TrainingError

pytestmark = pytest.mark.slow
# The tests that need a net that learns within their ~100 steps: the tiny net at the reference's dropout 0.5 stays
# near chance that long (patchray.models.trunks, tiny_d25).
LEARNS = {"model": "tiny_d25"}


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


try:  # the [mlflow] extra: the tracking checks run where it is installed (CI installs it)
    import mlflow as MLFLOW
except ImportError:
    MLFLOW = None


def _mlflow_run(out) -> dict:
    return json.loads((out / "tracking.json").read_text())


def _mlflow_status(run: dict) -> tuple:
    """(status, the config's epochs param, some of the artifacts) of a job's MLflow run."""
    client = MLFLOW.tracking.MlflowClient(run["uri"])
    found = client.get_run(run["run_id"])
    names = {a.path for a in client.list_artifacts(run["run_id"])}
    return found.info.status, found.data.params["epochs"], names & {"config.yaml", "summary.json", "curves.png",
                                                                   "filters.png"}


def _check_no_position_cue(pretext_file, model: str, synthetic_small) -> None:
    """A trained net cannot place patches of crops that carry no structure: no padding or border leaks."""
    from patchray.models import PretextNet
    from patchray.patches import PatchTaskConfig, normalize_patches, validation_patches
    from patchray.shards.decode import decode_crops

    task = PatchTaskConfig()
    net = PretextNet(build_trunk(model), task.num_classes)
    net.load_state_dict(torch.load(pretext_file, weights_only=True))
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


def test_pretrain_learns_writes_outputs_and_resumes(ray_cluster, synthetic_small, probe_labeled, tmp_path, capsys):
    probe = {"data": [str(probe_labeled)], "train_crops": 48, "val_crops": 32}
    tracked = {"tracking": "mlflow"} if MLFLOW else {}
    cfg = small_config(tmp_path, "run", [synthetic_small / "unlabeled"], probe=probe, **LEARNS, **tracked)
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
    for name in ("config.yaml", "summary.json", "curves.png", "confusion.png", "filters.png", "cell_predictions.png"):
        assert (out / name).stat().st_size > 0, name
    # the whole last checkpoint beside the outputs (what a longer run continues), named in the summary
    from patchray.train.checkpoint import load_checkpoint
    assert load_checkpoint(summary["last_checkpoint"])[0]["epoch"] == 1
    # the online probe: the untrained trunk once, then after every epoch, on the same 48 + 32 labeled crops
    assert [m.get("probe_mA") is not None for m in metrics] == [True, True]
    assert metrics[0]["init_probe_mA"] is not None and "init_probe_mA" not in metrics[1]
    for m in metrics:
        assert 0 <= m["probe_mA"] <= 1 and 0 <= m["knn_mA"] <= 1 and m["probe_s"] > 0
        assert set(m["probe_attributes"]) == {"Orientation", "Gender", "Posture", "HasBagOnShoulderLeft",
                                              "HasBagOnShoulderRight", "HasBagInHandLeft", "HasBagInHandRight",
                                              "HasTrolley", "HasBackpack", "isPushing", "isTalkingOnPhone"}
    probe_numbers = summary["probe"]
    assert probe_numbers["mA"] == metrics[-1]["probe_mA"] and probe_numbers["init_mA"] == metrics[0]["init_probe_mA"]
    assert probe_numbers["epoch"] == 2 and 0 < probe_numbers["share_of_run"] < 1
    # the time to the first step, phase by phase, adds up (each phase rounded to 0.1 s)
    startup = summary["startup_s"]
    assert set(startup) == {"shards and Ray", "validation crops", "input statistics", "probe crops",
                            "Ray Train starting the workers", "their setup and the untrained probe",
                            "the first batch", "total"}
    assert all(startup[phase] >= 0 for phase in startup)
    assert sum(v for k, v in startup.items() if k != "total") == pytest.approx(startup["total"], abs=0.3)
    assert 0 < startup["total"] < summary["wall_s"]
    # plain state_dicts, loadable without unpickling anything else
    trunk_state = torch.load(out / "checkpoints" / "trunk.pt", weights_only=True)
    build_trunk("tiny").load_state_dict(trunk_state)  # strict: a missing, extra or mis-shaped tensor raises
    pretext = torch.load(out / "checkpoints" / "pretext.pt", weights_only=True)
    assert any(k.startswith("head.") for k in pretext) and any(k.startswith("trunk.") for k in pretext)
    assert all(torch.equal(pretext[f"trunk.{k}"], v) for k, v in trunk_state.items())
    _check_no_position_cue(out / "checkpoints" / "pretext.pt", cfg.model, synthetic_small)

    if MLFLOW:  # each epoch as Ray Train's controller received it, the config, the plots, read back by MLflow
        run = _mlflow_run(out)
        history = MLFLOW.tracking.MlflowClient(run["uri"]).get_metric_history(run["run_id"], "val_acc")
        assert [(h.step, h.value) for h in history] == [(m["epoch"] + 1, m["val_acc"]) for m in metrics]
        assert _mlflow_status(run) == ("FINISHED", "2", {"config.yaml", "summary.json", "curves.png",
                                                        "filters.png"})

    # every row of every epoch accounted for: trained, skipped or dropped by the even split
    for m in metrics:
        assert m["rows_trained"] + m["rows_skipped"] + m["rows_dropped"] == m["rows_in_stream"] > 0
        assert 0 <= m["rows_dropped"] < m["workers"]

    # the same command again resumes after its last epoch: nothing trained twice, the history kept byte for byte
    config_before, metrics_before = (out / "config.yaml").read_text(), (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    again = run_pretrain(small_config(tmp_path, "run", [synthetic_small / "unlabeled"], probe=probe, **LEARNS,
                                      **tracked))
    assert "[pretrain] resuming after epoch 2 from" in capsys.readouterr().out
    if MLFLOW:  # the same MLflow run, closed again; no epoch logged twice
        assert _mlflow_run(out) == run and _mlflow_status(run)[0] == "FINISHED"
        assert len(MLFLOW.tracking.MlflowClient(run["uri"]).get_metric_history(run["run_id"], "val_acc")) == 2
    assert (out / "metrics.jsonl").read_text() == metrics_before  # a re-trained epoch would have new timings
    assert again["patches_seen"] == summary["patches_seen"] and again["epochs"] == 2

    # other settings at the same --out and --name: refused before anything is written, naming what differs
    with pytest.raises(RunMismatchError) as refused:
        run_pretrain(small_config(tmp_path, "run", [synthetic_small / "unlabeled"], epochs=3,
                                  optim={"lr": 0.02}, probe=probe, **LEARNS))
    assert "epochs: 2 -> 3" in str(refused.value) and "optim.lr: 0.01 -> 0.02" in str(refused.value)
    assert (out / "config.yaml").read_text() == config_before

    # a run that diverges stops, naming the epoch, and its last good checkpoint is kept
    with pytest.raises(TrainingError, match=r"FloatingPointError: pretraining diverged in epoch 1 .*lower optim.lr"):
        run_pretrain(small_config(tmp_path, "diverges", [synthetic_small / "unlabeled"], epochs=1, max_failures=0,
                                  optim={"lr": 1e8}))
    assert not (tmp_path / "diverges" / "summary.json").exists()
    from patchray.train.runner import _failure_message

    kept = _failure_message(FloatingPointError("x"), (str(out / "ray"), "pretrain"))
    assert f"the last good checkpoint (after epoch 2) is kept in {out / 'ray' / 'pretrain'}" in kept


def test_a_second_job_on_a_busy_cluster_is_refused_instead_of_starving_ray_data(ray_cluster):
    """Another job (a second driver) holding training workers' resources: this job plans around them."""
    import subprocess
    import sys
    import textwrap

    from ray.util.placement_group import placement_group, remove_placement_group

    from patchray.train.resources import ResourceError, ResourcesConfig
    from patchray.train.runner import plan_for_cluster

    # this job's own placement groups (a previous trainer, a Tune trial's) are its own business: not counted
    own = placement_group([{"CPU": 0.5}])
    ray_cluster.get(own.ready())
    assert plan_for_cluster(ResourcesConfig()).num_workers == 2
    remove_placement_group(own)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, ray
        from ray.util.placement_group import placement_group
        ray.init(address={ray_cluster.get_runtime_context().gcs_address!r}, log_to_driver=False)
        group = placement_group([{{"CPU": 0.5}}, {{"CPU": 0.5}}])  # what a 2-worker trainer reserves
        ray.get(group.ready())
        print("holding", flush=True)
        sys.stdin.read()  # until the test closes our stdin
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(ResourceError, match=r"other jobs are training on this cluster \(job \w+: 1 CPU for "
                                                r"training, 1 CPU kept for its data\)"):
            plan_for_cluster(ResourcesConfig())
    finally:
        holder.stdin.close()
        holder.wait(60)
    deadline = time.time() + 30
    while True:  # its placement group goes with its job
        try:
            assert plan_for_cluster(ResourcesConfig()).num_workers == 2
            break
        except ResourceError:
            assert time.time() < deadline
            time.sleep(1)


@pytest.mark.parametrize(("decode_on", "cut_on", "cache"), [("data", "worker", False), ("trainer", "worker", False),
                                                      ("data", "data", False), ("data", "worker", True),
                                                      ("data", "data", True)])
def test_corrupt_rows_are_skipped_and_counted(ray_cluster, synthetic_small, tmp_path, decode_on, cut_on, cache):
    """Wherever crops are decoded (Ray Data's tasks, or the training worker) and patches cut, each bad row is
    counted once an epoch; with cache_decoded also in the epochs streamed from the cache. Among the good rows,
    crops stored at a detector's sizes (300x600, decoded at a reduced scale; a thin 90x540, zero-padded) train
    like the others; a large crop cut short is skipped like a small one."""
    import io

    from PIL import Image

    def stored_at(image: bytes, width: int, height: int) -> bytes:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(image)).resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG")
        return buffer.getvalue()

    source = sorted((synthetic_small / "unlabeled").glob("*.parquet"))[0]
    rows = pq.read_table(source).slice(0, 300).to_pylist()
    good = rows[0]["image"]
    big = stored_at(good, 300, 600)
    data = tmp_path / "mixed"
    with ShardWriter(data, DatasetMeta("mixed", AttributeSet()), rows_per_shard=1000) as writer:
        for i, row in enumerate(rows):
            image = row["image"]
            if i % 50 == 7:  # truncated JPEGs, every other one a large crop's
                whole = big if i % 100 == 7 else good
                image = whole[: len(whole) // 2]
            elif i % 50 == 31:
                image = b"definitely not an image"
            elif i % 50 == 19:
                image = stored_at(image, 300, 600)
            elif i % 50 == 43:
                image = stored_at(image, 90, 540)
            writer.add(CropRecord(image=image, crop_id=row["crop_id"]))
    # validation takes the first 100 good rows; the bad rows among them stay in the training stream
    epochs = 2 if cache else 1
    summary = run_pretrain(small_config(tmp_path, "mixed", [data], epochs=epochs, holdout_crops=100,
                                        decode_on=decode_on, cut_on=cut_on, cache_decoded=cache))
    # rows 0..299: 6 truncated (7, 57, ...) and 6 garbage (31, 81, ...): every one counted once per epoch (the
    # summary's counts are the last epoch's)
    assert summary["skipped_rows"] == {"truncated_image": 6, "unreadable_image": 6}
    assert summary["rows_per_epoch"] == {"in_stream": 200, "trained": 188, "skipped": 12, "dropped": 0}
    assert summary["patches_seen"] == epochs * 188 * 8


def test_an_odd_stream_drops_one_row_and_says_so_and_a_too_small_dataset_is_refused(
        ray_cluster, synthetic_small, tmp_path):
    from patchray.train.pretrain import DatasetTooSmallError

    data = [synthetic_small / "unlabeled"]
    # 151 rows over 2 workers: the even split drops one, which the epoch's accounting names
    summary = run_pretrain(small_config(tmp_path, "odd", data, epochs=1, holdout_crops=50, max_crops=151))
    assert summary["rows_per_epoch"] == {"in_stream": 151, "trained": 150, "skipped": 0, "dropped": 1}
    with pytest.raises(DatasetTooSmallError,
                       match=r"holdout_crops=900 are held out for validation: none would be left"):
        run_pretrain(small_config(tmp_path, "tiny", data, holdout_crops=900))
    with pytest.raises(DatasetTooSmallError, match=r"10 crops are left for training .*fewer than one batch"):
        run_pretrain(small_config(tmp_path, "few", data, holdout_crops=100, max_crops=10))


def test_dataset_normalisation_is_computed_applied_and_recorded_for_fine_tuning(ray_cluster, synthetic_small,
                                                                                tmp_path):
    """input.normalize=dataset, the reference's: per-pixel statistics of training patches computed by the driver,
    applied by the workers (a zero-filled channel drop after it), stored beside the checkpoint; fine-tuning from
    the run takes them, pooled per channel."""
    import math

    from patchray import config as configlib
    from patchray.patches import channel_stats
    from patchray.train.config import FinetuneConfig
    from patchray.train.finetune_loop import resolve_normalization

    cfg = small_config(tmp_path, "dataset", [synthetic_small / "unlabeled"], epochs=1, holdout_crops=50, max_crops=160,
                       stats_patches=900, input={"normalize": "dataset"}, task={"channel_drop": 0.5})
    summary = run_pretrain(cfg)
    out = tmp_path / "dataset"
    assert summary["normalization"]["mode"] == "dataset"
    assert (summary["normalization"]["patches"], summary["normalization"]["crops"]) == (900, 50)  # 18 cells a crop
    record = torch.load(out / "checkpoints" / "normalization.pt", weights_only=True)
    assert record["mode"] == "dataset" and record["mean"].shape == record["std"].shape == (3, 32, 32)
    assert 0 < float(record["mean"].min()) and float(record["mean"].max()) < 1 and float(record["std"].min()) > 0
    assert all(math.isfinite(m["loss"]) and math.isfinite(m["val_loss"]) for m in _metrics(out))
    assert summary["patches_seen"] == 160 * 8

    finetune = configlib.build(FinetuneConfig, {"init": f"patchtask:{out}"})
    resolve_normalization(finetune)
    mean, std = channel_stats(record["mean"], record["std"])
    assert finetune.input.normalize == "dataset"
    assert np.allclose(finetune.input.normalize_mean, mean) and np.allclose(finetune.input.normalize_std, std)
