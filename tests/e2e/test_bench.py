"""The benchmarks' Ray halves on the session cluster: streaming stays in bounded memory, every crop arrives."""
import pytest

from patchray.bench.data import repeated_shards
from patchray.patches import PatchTaskConfig
from patchray.pipeline import STREAM_BUFFER_BYTES
from patchray.shards import open_shards

pytestmark = pytest.mark.slow


def test_streaming_10x_the_shards_keeps_memory_flat(ray_cluster, synthetic_small, tmp_path):
    """Would catch a pipeline that materialises its dataset: at 10x, every decoded crop (~1 GB) would sit in
    the object store at once, and the training worker's or driver's memory would grow with the data."""
    from patchray.bench.memory import stream_and_sample

    base = list(open_shards(str(synthetic_small / "unlabeled")).files)
    task = PatchTaskConfig()
    runs = {}
    for copies in (2, 20):
        files = repeated_shards(base, copies, tmp_path / f"x{copies}")
        runs[copies] = stream_and_sample(files, task, 16, 0, tmp_path / "ray", sample_s=0.2)
    small, large = runs[2], runs[20]
    assert large["crops"] == 10 * small["crops"]
    for run in (small, large):  # every crop arrives (drop_last leaves less than one batch behind)
        assert run["crops"] - 16 < run["crops_streamed"] <= run["crops"]
        assert len(run["series"]["object_store_mib"]) >= 3
    assert large["decoded_mib"] > 900
    # The stream's object store is bounded by design (STREAM_BUFFER_BYTES, plus blocks in flight to the worker);
    # how long a run is must not move it. The small run is too short to fill the buffer, so the bound is absolute.
    # With Ray's default 1 s between deletions of freed objects the dead blocks alone took it to 467 MiB here
    # (and the data task's memory to 807, the worker's to 1,393); freed every 0.1 s (local_cluster_config), 120.
    store = large["peaks"]["object_store_mib"]
    assert store < min(0.5 * large["decoded_mib"], STREAM_BUFFER_BYTES / 2**20 + 64), (small["peaks"], store)
    # (Not the data task's memory: the small run may end before a fresh data worker has grown to its steady size,
    # 187 MiB against 467 in one full-suite run, so its ratio says nothing about the data.)
    for measure in ("driver_rss_mib", "train_worker_rss_mib"):
        assert large["peaks"][measure] <= 1.3 * small["peaks"][measure] + 64, (measure, small["peaks"], large["peaks"])


def test_bench_train_s_ray_side_steps_the_same_work_as_its_plain_loop(ray_cluster, synthetic_small, tmp_path):
    """bench_train's Ray Train contender (what `.ci/gpu.sh` runs on a GPU) on the session cluster: the same
    patches, steps and per-epoch checkpoints as the plain loop, so that their ratio is Ray Train's cost alone."""
    from patchray import config as configlib
    from patchray.bench.data import load_jpegs
    from patchray.bench.train import TrainBenchConfig, compare, plain_loop, ray_train
    from patchray.shards.decode import decode_crops

    cfg = configlib.to_dict(TrainBenchConfig(crops=48, epochs=2, patches_per_step=64, threads=[1], device="cpu"))
    images, crop_ids = load_jpegs(list(open_shards(str(synthetic_small / "unlabeled")).files), cfg["crops"])
    crops, _ = decode_crops(images, 100, 200)
    plain, plain_wall = plain_loop(cfg, crops, crop_ids, threads=1)
    ray_history, ray_wall = ray_train(cfg, crops, crop_ids, threads=1, storage=tmp_path / "ray")
    # 48 crops in steps of 8 crops: 6 steps of 64 patches an epoch, on both sides
    assert [h["patches"] for h in ray_history] == [h["patches"] for h in plain] == [48 * 8] * 2
    # the same seed, the same patches, the same net: the same first epoch, to float noise across processes
    assert ray_history[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-4)
    row = compare(1, plain, plain_wall, ray_history, ray_wall)
    assert row["plain_patches_per_s"] > 0 and row["ray_train_patches_per_s"] > 0
    assert 0 <= row["ray_data_wait_frac"] < 1
