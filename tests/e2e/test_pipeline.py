"""The Ray Data stage on a real local cluster."""
import numpy as np
import pytest

from patchray import pipeline
from patchray.pipeline import cache_decoded, crop_dataset
from patchray.shards import open_shards

pytestmark = pytest.mark.slow


def test_crop_stream_decodes_every_row_and_reorders_files_each_epoch(ray_cluster, synthetic_small, tmp_path):
    import shutil

    # four files, so that the per-epoch file order has room to change
    src = open_shards(str(synthetic_small / "unlabeled"))
    import pyarrow.parquet as pq
    table = pq.read_table(src.files[0])
    folder = tmp_path / "four"
    folder.mkdir()
    meta = pq.read_schema(src.files[0]).metadata
    for i in range(4):
        part = table.slice(i * 100, 100).replace_schema_metadata(meta)
        pq.write_table(part, folder / f"crops-all-{i:05d}.parquet")
    shards = open_shards(str(folder))
    held = {table.column("crop_id")[0].as_py()}
    ds = crop_dataset(shards, 100, 200, exclude_ids=held, seed=1)
    epochs = []
    for _ in range(3):
        rows = ds.select_columns(["crop_id", "skip"]).take_all()
        epochs.append([r["crop_id"] for r in rows])
        assert sorted(r["crop_id"] for r in rows) == sorted(set(table.column("crop_id").to_pylist()[:400]) - held)
        assert all(r["skip"] == "" for r in rows)
    assert len({tuple(e) for e in epochs}) > 1  # a new order in some epoch
    pixels = ds.limit(4).take_all()[0]["pixels"]
    assert pixels.shape == (200, 100, 3) and pixels.dtype == np.uint8 and pixels.std() > 10
    shutil.rmtree(folder)


def test_patches_cut_in_the_data_tasks_follow_the_epochs(ray_cluster, synthetic_small, tmp_path):
    """cut_on=data: each execution of the stream cuts the next epoch's patches, counted from the epoch it was
    created for (a resumed run's), both when iterated here and through Ray Train's split into a worker."""
    from patchray.bench.stream import stream_to_one_worker
    from patchray.data_tasks import CutSpec
    from patchray.patches import PatchTaskConfig, training_patches

    shards = open_shards(str(synthetic_small / "unlabeled"))
    task = PatchTaskConfig()
    ds = crop_dataset(shards, 100, 200, seed=1, cut=CutSpec.starting_at(task, 1, first_epoch=2))
    crops = crop_dataset(shards, 100, 200, seed=1).limit(6).take_all()
    pixels = np.stack([c["pixels"] for c in crops])
    ids = [c["crop_id"] for c in crops]
    for epoch in (2, 3, 4):  # three executions: three epochs, and each crop's patches are that epoch's draw
        rows = {r["crop_id"]: r for r in ds.take_all()}
        assert {int(r["epoch"]) for r in rows.values()} == {epoch}
        expected, labels = training_patches(pixels, ids, task, 1, epoch)
        k = task.patches_per_crop
        for i, crop in enumerate(ids):
            assert np.array_equal(rows[crop]["patches"], expected[i * k:(i + 1) * k])
            assert np.array_equal(rows[crop]["patch_labels"], labels[i * k:(i + 1) * k])
    # (a worker that runs the stream itself, unsplit, as a lone fine-tuning worker does; the cache below is split)
    epochs, _, _ = stream_to_one_worker(shards, task, 3, 16, 0, tmp_path / "ray", "cut", cut_on="data", split=False)
    assert [e["cut_for"] for e in epochs] == [[0], [1], [2]]
    assert all(e["crops"] > shards.num_rows - 16 for e in epochs)

    # cache_decoded: decoded once (the materialization is an execution of its own), then the same epochs' patches
    # cut from the cache, every crop each epoch, in a new order each epoch
    stream = crop_dataset(shards, 100, 200, seed=1)
    cached = cache_decoded(stream, 1, CutSpec.starting_at(task, 1, first_epoch=2))
    # the build ran without the stream's object-store bound (it keeps every block); both streams keep it
    bound = pipeline.STREAM_BUFFER_BYTES
    assert [d.context.execution_options.resource_limits.object_store_memory for d in (stream, cached)] == [bound] * 2
    orders = []
    for epoch in (2, 3, 4):
        rows = {r["crop_id"]: r for r in cached.take_all()}
        orders.append(tuple(rows))
        assert len(rows) == shards.num_rows and {int(r["epoch"]) for r in rows.values()} == {epoch}
        expected, labels = training_patches(pixels, ids, task, 1, epoch)
        for i, crop in enumerate(ids):
            assert np.array_equal(rows[crop]["patches"], expected[i * k:(i + 1) * k])
            assert np.array_equal(rows[crop]["patch_labels"], labels[i * k:(i + 1) * k])
    assert len(set(orders)) == 3
    decoded = {r["crop_id"]: r["pixels"] for r in cache_decoded(crop_dataset(shards, 100, 200, seed=1), 1).take_all()}
    assert all(np.array_equal(decoded[crop], pixels[i]) for i, crop in enumerate(ids))
    # ...and through Ray Train's split into a worker (a worker cutting from the cache: test_pretrain's bad rows)
    epochs, _, built = stream_to_one_worker(shards, task, 3, 16, 0, tmp_path / "ray", "cached", cut_on="data",
                                            cache=True)
    assert built["ended_at"] > built["started_at"]
    assert [e["cut_for"] for e in epochs] == [[0], [1], [2]]
    assert all(e["crops"] > shards.num_rows - 16 for e in epochs)


def test_a_stream_ahead_of_its_consumer_pauses_its_scheduler(ray_cluster, synthetic_small, monkeypatch):
    """Ray Data's scheduling loop (run here in the driver, by iter_batches) goes round without pause while its
    tasks wait on a slow consumer, 150 to 600 steps a second here when it spins; crop_dataset's streams carry
    data_scheduler's callback, which sleeps after every step that achieved nothing. The pause is lengthened to
    50 ms for the test: working, it allows at most 20 idle steps a second, which no run can exceed, while a pause
    that does not sleep lets Ray's own rate through whenever the loop spins (in most runs; in some it blocks
    instead, and no pause is needed)."""
    import time

    from patchray import data_scheduler, pipeline
    from patchray.data_scheduler import PauseWhenIdle

    shards = open_shards(str(synthetic_small / "unlabeled"))
    # the 900 crops (54 MB decoded) must not all fit the stream's buffer, or the stream ends before the consumer
    monkeypatch.setattr(pipeline, "STREAM_BUFFER_BYTES", 4 * 2**20)
    pause = 0.05
    monkeypatch.setattr(data_scheduler, "IDLE_PAUSE_S", pause)
    PauseWhenIdle.steps = PauseWhenIdle.pauses = 0
    started = time.time()
    for i, batch in enumerate(crop_dataset(shards, 100, 200, seed=1).iter_batches(batch_size=32)):
        assert len(batch["crop_id"]) == 32
        time.sleep(0.15)
        if i == 20:
            break
    seconds = time.time() - started
    assert PauseWhenIdle.pauses > 0  # it ran in this stream's executor, and found steps that achieved nothing
    assert PauseWhenIdle.pauses * pause <= seconds, (PauseWhenIdle.pauses, seconds)  # each pause slept
