"""The pipeline's stages as plain functions (no cluster): read_and_decode, decode_batch and PatchCollate."""
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import torch
from helpers import jpeg_bytes

from patchray.data_tasks import DECODE_BATCH_ROWS, TASKS_PER_CPU, decode_batch, read_and_decode, task_units
from patchray.patches import PatchTaskConfig, training_patches
from patchray.pipeline import AttributeCollate, PatchCollate, split_steps
from patchray.shards import PARSE27K


def _np(table, column):
    return table.column(column).combine_chunks().to_numpy()


def _table(images, ids):
    return pa.table({"image": pa.array(images, pa.binary()), "crop_id": ids})


def test_decode_batch_resizes_marks_bad_rows_and_drops_held_out_ones():
    good = jpeg_bytes(50, 100, (10, 200, 30))
    batch = _table([good, b"junk", good[:40], good], ["a", "b", "c", "val0"])
    out = decode_batch(batch, 100, 200, exclude_ids=frozenset({"val0"}))
    pixels = _np(out, "pixels")
    assert pixels.shape == (3, 200, 100, 3) and pixels.dtype == np.uint8
    assert out.column("crop_id").to_pylist() == ["a", "b", "c"]
    assert out.column("skip").to_pylist() == ["", "unreadable_image", "truncated_image"]
    assert abs(int(pixels[0, 100, 50, 1]) - 200) <= 3  # resized, colour kept
    # a label budget keeps only its crops; a block left empty is still well typed
    assert decode_batch(batch, 100, 200, include_ids=frozenset({"c"})).column("crop_id").to_pylist() == ["c"]
    empty = decode_batch(batch, 100, 200, include_ids=frozenset())
    assert empty.num_rows == 0 and "pixels" in empty.column_names


def test_decode_batch_fits_a_wide_crop_without_stretching_it_unless_asked():
    wide = jpeg_bytes(400, 200, (10, 200, 30))  # 400x200: at height 200 it is 400 wide, centre 100 kept
    thin = jpeg_bytes(50, 400, (10, 200, 30))   # 50x400: 25 wide at height 200, zero bands either side
    fitted = _np(decode_batch(_table([wide, thin], ["w", "t"]), 100, 200), "pixels")
    assert (fitted[0, :, :, 1] > 150).all()  # no padding: the sides were cut
    assert (fitted[1, 100, :, 1] > 150).sum() == 25 and fitted[1, :, :30].max() == 0
    stretched = _np(decode_batch(_table([thin], ["t"]), 100, 200, fit="stretch"), "pixels")
    assert (stretched[0, :, :, 1] > 150).all()  # stretched over the whole width


def test_read_and_decode_reads_whole_row_groups_into_bounded_blocks(tmp_path):
    import pyarrow.parquet as pq

    rows = 2 * DECODE_BATCH_ROWS + 10
    good = jpeg_bytes()
    table = pa.table({"image": pa.array([good] * rows, pa.binary()), "crop_id": [f"c{i}" for i in range(rows)],
                      "extra": list(range(rows))})
    path = tmp_path / "shard.parquet"
    pq.write_table(table, path, row_group_size=rows - 5)  # two row groups: rows - 5 and 5
    groups = [(str(path), 0, rows - 5), (str(path), 1, 5)]
    units = {"path": np.array([g[0] for g in groups]), "row_group": np.array([g[1] for g in groups])}
    blocks = list(read_and_decode(units, filesystem=None, columns=["image", "crop_id"], width=100, height=200,
                                  exclude_ids=frozenset({"c3"})))
    assert [b.num_rows for b in blocks] == [DECODE_BATCH_ROWS - 1, DECODE_BATCH_ROWS, 5, 5]  # c3 held out
    ids = [c for b in blocks for c in b.column("crop_id").to_pylist()]
    assert ids == [f"c{i}" for i in range(rows) if i != 3]  # every row once, in file order within the task
    assert "extra" not in blocks[0].column_names  # only the columns asked for are read
    one_task = {"path": np.array([units["path"]], dtype=object), "row_group": np.array([units["row_group"]],
                                                                                        dtype=object)}
    again = list(read_and_decode(one_task, filesystem=None, columns=["image", "crop_id"], width=100, height=200,
                                 exclude_ids=frozenset({"c3"})))  # a task's row groups as one row (task_units)
    assert [b.column("crop_id").to_pylist() for b in again] == [b.column("crop_id").to_pylist() for b in blocks]


def _units(runs):
    return [(path, group) for run in runs for path, group in zip(run["path"], run["row_group"])]


def test_task_units_read_every_row_group_once_in_tasks_of_about_task_rows():
    groups = [(f"f{f}.parquet", g, 500) for f in range(16) for g in range(6)] + [("f0.parquet", 6, 0)]
    runs = task_units(groups, seed=3, cpus=2, task_rows=2048)
    assert sorted(_units(runs)) == sorted((p, g) for p, g, rows in groups if rows)  # the empty group left out
    assert len(runs) == 24  # 48,000 crops in tasks of ~2,048: 4 row groups each
    assert {len(run["path"]) for run in runs} == {4}
    assert len({p for run in runs for p in run["path"][:1]}) > 1 and any(len(set(run["path"])) > 1 for run in runs)
    assert task_units(groups, seed=3, cpus=2, task_rows=2048) == runs  # seeded
    assert _units(task_units(groups, seed=4, cpus=2, task_rows=2048)) != _units(runs)


def test_task_units_keep_several_tasks_per_cpu_and_never_split_a_row_group():
    groups = [(f"f{f}.parquet", 0, 500) for f in range(96)]
    assert len(task_units(groups, seed=0, cpus=16, task_rows=2048)) == TASKS_PER_CPU * 16  # not 24: CPUs idle
    assert len(task_units(groups[:3], seed=0, cpus=16, task_rows=2048)) == 3  # at most one task per row group
    lopsided = [("big.parquet", 0, 100_000)] + [(f"s{i}.parquet", 0, 10) for i in range(5)]
    runs = task_units(lopsided, seed=1, cpus=1, task_rows=2048)
    assert all(run["path"] for run in runs) and sorted(_units(runs)) == sorted((p, g) for p, g, _ in lopsided)


def test_decode_batch_carries_labels():
    good = jpeg_bytes()
    batch = pa.table({"image": pa.array([good, good], pa.binary()), "crop_id": ["a", "b"],
                      "attr_Gender": pa.array([2, 0], pa.int16()), "attr_Posture": pa.array([1, 2], pa.int16())})
    out = decode_batch(batch, 100, 200, label_columns=("attr_Gender", "attr_Posture"))
    assert _np(out, "labels").tolist() == [[2, 1], [0, 2]]


def test_collate_cuts_epoch_patches_and_counts_bad_rows_only():
    task = PatchTaskConfig()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 200, 100, 3), dtype=np.uint8)
    batch = {"pixels": pixels, "crop_id": np.array(["a", "b", "c", "d"], dtype=object),
             "skip": np.array(["", "truncated_image", "truncated_image", ""], dtype=object)}
    out = PatchCollate(task, seed=5, epoch=2)(batch)
    assert dict(out["skipped"]) == {"truncated_image": 2}
    assert out["patches"].shape == (2 * task.patches_per_crop, 32, 32, 3)
    expected, labels = training_patches(pixels[[0, 3]], ["a", "d"], task, 5, 2)
    assert np.array_equal(out["patches"].numpy(), expected) and np.array_equal(out["labels"].numpy(), labels)
    other_epoch = PatchCollate(task, seed=5, epoch=3)(batch)
    assert not np.array_equal(other_epoch["patches"].numpy(), expected)


@pytest.mark.parametrize("pairwise", [False, True])
def test_fetches_of_any_size_become_steps_of_exactly_crops_per_step(pairwise):
    """Ray's local shuffle yields short batches now and then: re-cut, every step has crops_per_step rows (the
    last fewer), with the very patches, labels and bad-row counts of a collate over that step's rows alone."""
    task = PatchTaskConfig(pairwise=pairwise)
    k = task.patches_per_crop
    rng = np.random.default_rng(1)
    rows = 150
    pixels = rng.integers(0, 256, (rows, 200, 100, 3), dtype=np.uint8)
    ids = np.array([f"c{i}" for i in range(rows)], dtype=object)
    skip = np.array(["truncated_image" if i % 7 == 3 else "empty_image" if i == 40 else "" for i in range(rows)],
                    dtype=object)
    collate = PatchCollate(task, seed=2, epoch=1)
    edges = [0, 64, 112, 149, 150]  # fetches of 64, 48, 37 and 1 rows
    fetches = [collate({"pixels": pixels[a:b], "crop_id": ids[a:b], "skip": skip[a:b]})
               for a, b in zip(edges, edges[1:])]
    steps = list(split_steps(iter(fetches), crops_per_step=16, per_row={"patches": k, "labels": k}))
    assert [s["rows"] for s in steps] == [16] * 9 + [6]
    for i, step in enumerate(steps):
        rows_of_step = slice(16 * i, 16 * i + step["rows"])
        alone = collate({"pixels": pixels[rows_of_step], "crop_id": ids[rows_of_step], "skip": skip[rows_of_step]})
        assert torch.equal(step["patches"], alone["patches"]) and torch.equal(step["labels"], alone["labels"])
        assert step["skipped"] == alone["skipped"] and "reasons" not in step
    assert sum((s["skipped"] for s in steps), start=Counter()) == {
        "truncated_image": 21, "empty_image": 1}


def test_fine_tuning_fetches_become_steps_of_whole_crops_with_their_labels():
    rng = np.random.default_rng(2)
    rows = 66
    pixels = rng.integers(0, 256, (rows, 200, 100, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (rows, len(PARSE27K.names))).astype(np.int16)
    ids = np.array([f"c{i}" for i in range(rows)], dtype=object)
    skip = np.array(["truncated_image" if i in (5, 17, 50) else "" for i in range(rows)], dtype=object)
    collate = AttributeCollate(PARSE27K, seed=3, epoch=1)
    edges = [0, 40, 65, 66]

    def rows_of(a, b):
        return {"pixels": pixels[a:b], "labels": labels[a:b], "crop_id": ids[a:b], "skip": skip[a:b]}

    steps = list(split_steps((collate(rows_of(a, b)) for a, b in zip(edges, edges[1:])), 16,
                             {"images": 1, "labels": 1}))
    assert [s["rows"] for s in steps] == [16, 16, 16, 16, 2]
    for i, step in enumerate(steps):
        alone = collate(rows_of(16 * i, 16 * i + step["rows"]))
        assert torch.equal(step["images"], alone["images"]) and torch.equal(step["labels"], alone["labels"])
        assert step["skipped"] == alone["skipped"]
    assert [len(s["images"]) for s in steps] == [15, 15, 16, 15, 2]


@pytest.mark.parametrize("device", [None, "cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_collates_hand_the_step_its_batch_on_the_training_device(device):
    """On a GPU the collate thread pins and copies the batch (Ray would not: a batch with a Counter is no tensor
    batch to it), so the step finds it there; on the CPU the batch is left as it was made. Same values, same
    counts, wherever they land."""
    from patchray.pipeline import on_device

    task = PatchTaskConfig()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 200, 100, 3), dtype=np.uint8)
    batch = {"pixels": pixels, "crop_id": np.array(["a", "b", "c"], dtype=object),
             "skip": np.array(["", "truncated_image", ""], dtype=object),
             "labels": np.ones((3, len(PARSE27K.names)), dtype=np.int16)}
    reference = PatchCollate(task, seed=5, epoch=2)(batch)
    for out in (PatchCollate(task, seed=5, epoch=2, device=device)(batch),
                AttributeCollate(PARSE27K, 0, 0, mirror=False, device=device)(batch)):
        tensors = [value for value in out.values() if isinstance(value, torch.Tensor)]
        assert len(tensors) == 2 and all(t.device.type == (device or "cpu") for t in tensors)
        assert out["skipped"] == {"truncated_image": 1} and out["rows"] == 3
    moved = PatchCollate(task, seed=5, epoch=2, device=device)(batch)
    assert torch.equal(moved["patches"].cpu(), reference["patches"])
    assert torch.equal(moved["labels"].cpu(), reference["labels"])
    plain = {"x": torch.arange(4), "note": "kept"}
    assert on_device(plain, "cpu") is plain and on_device(plain, None) is plain


def test_attribute_collate_mirrors_pixels_and_labels_together():
    names = PARSE27K.names
    n = 64
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (n, 200, 100, 3), dtype=np.uint8)
    labels = np.zeros((n, len(names)), dtype=np.int16)
    labels[:, names.index("Orientation")] = 3  # left
    labels[:, names.index("HasBagInHandLeft")] = 2
    ids = np.array([f"c{i}" for i in range(n)], dtype=object)
    batch = {"pixels": pixels, "crop_id": ids, "skip": np.array([""] * n, dtype=object), "labels": labels}
    out = AttributeCollate(PARSE27K, seed=0, epoch=0)(batch)
    images, got = out["images"].numpy(), out["labels"].numpy()
    flipped = got[:, names.index("Orientation")] == 4
    assert 10 < flipped.sum() < n - 10  # about half are mirrored
    assert np.array_equal(images[flipped], pixels[flipped][:, :, ::-1])
    assert np.array_equal(images[~flipped], pixels[~flipped])
    assert (got[flipped, names.index("HasBagInHandRight")] == 2).all()
    assert (got[flipped, names.index("HasBagInHandLeft")] == 0).all()
    assert (got[~flipped, names.index("HasBagInHandLeft")] == 2).all()
    # deterministic for (seed, epoch, crop id), different in another epoch
    again = AttributeCollate(PARSE27K, seed=0, epoch=0)(batch)["labels"].numpy()
    assert np.array_equal(again, got)
    other = AttributeCollate(PARSE27K, seed=0, epoch=1)(batch)["labels"].numpy()
    assert not np.array_equal(other, got)
    assert np.array_equal(AttributeCollate(PARSE27K, 0, 0, mirror=False)(batch)["labels"].numpy(), labels)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_encoded_stream_decoded_in_the_trainer_gives_the_same_patches_and_counts(device):
    """decode=False ships the rows decode_batch keeps, still encoded; EncodedPatchCollate (here on the CPU)
    then yields what decode_batch + PatchCollate yield."""
    from patchray.data_tasks import select_batch
    from patchray.pipeline import EncodedPatchCollate

    task = PatchTaskConfig()
    good = [jpeg_bytes(100, 200, (10 * i, 200 - 10 * i, 30)) for i in range(4)]
    batch = pa.table({"image": pa.array([good[0], b"junk", good[1], good[2][:40], good[3], good[0]], pa.binary()),
                      "crop_id": ["a", "b", "c", "d", "e", "val0"],
                      "attr_Gender": pa.array([1, 2, 0, 1, 2, 0], pa.int16())})
    encoded = select_batch(batch, exclude_ids=frozenset({"val0"}))
    assert encoded.column_names == ["image", "crop_id"] and encoded.column("crop_id").to_pylist() == list("abcde")
    assert encoded.column("image").to_pylist()[1] == b"junk"  # shipped as is: the trainer judges it
    assert select_batch(batch, label_columns=("attr_Gender",)).column_names == ["image", "crop_id", "attr_Gender"]

    decoded = decode_batch(batch, 100, 200, exclude_ids=frozenset({"val0"}))
    expected = PatchCollate(task, seed=3, epoch=1)({
        "pixels": _np(decoded, "pixels"),
        "crop_id": np.array(decoded.column("crop_id").to_pylist(), dtype=object),
        "skip": np.array(decoded.column("skip").to_pylist(), dtype=object)})
    numpy_batch = {"image": np.array(encoded.column("image").to_pylist(), dtype=object),
                   "crop_id": np.array(encoded.column("crop_id").to_pylist(), dtype=object)}
    out = EncodedPatchCollate(task, seed=3, epoch=1, device=device)(numpy_batch)
    assert out["skipped"] == expected["skipped"] == {"unreadable_image": 1, "truncated_image": 1}
    assert out["patches"].shape == (3 * task.patches_per_crop, 32, 32, 3) and out["patches"].dtype == torch.uint8
    assert out["patches"].device.type == device
    assert torch.equal(out["labels"].cpu(), expected["labels"])
    difference = (out["patches"].cpu().int() - expected["patches"].int()).abs()
    assert difference.max() == 0 if device == "cpu" else difference.float().mean() < 1.5  # nvJPEG rounds otherwise


def test_read_and_decode_can_leave_rows_encoded(tmp_path):
    import pyarrow.parquet as pq

    good = jpeg_bytes()
    path = tmp_path / "shard.parquet"
    pq.write_table(pa.table({"image": pa.array([good] * 5, pa.binary()), "crop_id": list("abcde")}), path)
    units = {"path": np.array([str(path)]), "row_group": np.array([0])}
    blocks = list(read_and_decode(units, filesystem=None, columns=["image", "crop_id"], decode=False,
                                  exclude_ids=frozenset({"b"})))
    assert len(blocks) == 1 and blocks[0].column_names == ["image", "crop_id"]
    assert blocks[0].column("crop_id").to_pylist() == list("acde") and blocks[0].column("image")[0].as_py() == good


@pytest.mark.parametrize("pairwise", [False, True])
def test_patches_cut_in_the_data_task_are_the_ones_the_worker_would_cut(pairwise, capsys):
    """cut_on=data: a block of decoded crops becomes rows of K patches; the worker's collate lays them end to end
    and gets exactly PatchCollate's patches for the same crops and epoch, bad rows counted, not trained."""
    from patchray.data_tasks import CutSpec
    from patchray.pipeline import CutPatchCollate

    task = PatchTaskConfig(pairwise=pairwise)
    good = jpeg_bytes(100, 200, (10, 200, 30))
    noisy = [jpeg_bytes(100, 200, tuple(int(v) for v in np.random.default_rng(i).integers(0, 256, 3)))
             for i in range(3)]
    batch = _table([noisy[0], b"junk", noisy[1], good, noisy[2]], ["a", "b", "c", "d", "e"])
    spec = CutSpec(task.to_dict(), seed=5, epoch_offset=0)
    rows = decode_batch(batch, 100, 200, cut=spec)
    assert "pixels" not in rows.column_names
    patches = _np(rows, "patches")
    assert patches.shape[:2] == (5, task.patches_per_crop) and not patches[1].any()  # the bad row: zeros, kept
    assert set(_np(rows, "epoch").tolist()) == {0}  # outside a Ray Data execution the counter stands at 0
    def text(table, column):
        return np.array(table.column(column).to_pylist(), dtype=object)

    stream_batch = {"patches": patches, "patch_labels": _np(rows, "patch_labels"), "epoch": _np(rows, "epoch"),
                    "crop_id": text(rows, "crop_id"), "skip": text(rows, "skip")}
    from_data = CutPatchCollate(epoch=0)(stream_batch)
    pixel_rows = decode_batch(batch, 100, 200)
    from_worker = PatchCollate(task, seed=5, epoch=0)({"pixels": _np(pixel_rows, "pixels"),
                                                       "crop_id": text(pixel_rows, "crop_id"),
                                                       "skip": text(pixel_rows, "skip")})
    assert torch.equal(from_data["patches"], from_worker["patches"])
    assert torch.equal(from_data["labels"], from_worker["labels"])
    assert from_data["skipped"] == from_worker["skipped"] and from_data["rows"] == 5
    assert "cut for epoch" not in capsys.readouterr().out
    # a stream that restarted counts its epochs again: trained on, and said once
    CutPatchCollate(epoch=3, rank=1)(stream_batch)
    assert "worker 1: the stream's patches were cut for epoch(s) [1] while training epoch 4" in capsys.readouterr().out
    empty = decode_batch(batch, 100, 200, include_ids=frozenset(), cut=spec)
    assert empty.num_rows == 0 and "patches" in empty.column_names


def test_cutting_or_caching_in_the_data_tasks_needs_them_to_decode():
    from patchray.train.config import PretrainConfig

    with pytest.raises(ValueError, match="cut_on=data cuts patches in the data tasks, which then must decode"):
        PretrainConfig(decode_on="trainer", cut_on="data")
    with pytest.raises(ValueError, match="cache_decoded=true keeps decoded crops, which the data tasks then must"):
        PretrainConfig(decode_on="trainer", cache_decoded=True)
    PretrainConfig(cut_on="data", cache_decoded=True)  # the data tasks cut from the cache


@pytest.mark.parametrize("pairwise", [False, True])
def test_patches_cut_from_cached_crops_are_the_ones_cut_while_decoding(pairwise):
    """cache_decoded with cut_on=data: a cached block of decoded crops (bad rows kept as zeros with their reason)
    becomes the same rows of patches, labels and reasons that decoding and cutting in one task makes; an all-good
    block too (its patches are the cut rows themselves, not a copy)."""
    from patchray.data_tasks import CutSpec, cut_decoded

    task = PatchTaskConfig(pairwise=pairwise)
    noisy = [jpeg_bytes(100, 200, tuple(int(v) for v in np.random.default_rng(i).integers(0, 256, 3)))
             for i in range(3)]
    spec = CutSpec(task.to_dict(), seed=5, epoch_offset=3)
    for images, ids in (([noisy[0], b"junk", noisy[1], noisy[2][:50]], list("abcd")), (noisy, list("xyz"))):
        batch = _table(images, ids)
        at_once = decode_batch(batch, 100, 200, cut=spec)
        decoded = decode_batch(batch, 100, 200)
        cached = {"pixels": _np(decoded, "pixels"), "crop_id": np.array(ids, dtype=object),
                  "skip": np.array(decoded.column("skip").to_pylist(), dtype=object)}
        from_cache = cut_decoded(cached, cut=spec)
        assert from_cache.column_names == at_once.column_names
        for column in ("patches", "patch_labels", "epoch"):
            assert np.array_equal(_np(from_cache, column), _np(at_once, column)), column
        assert from_cache.column("skip").to_pylist() == at_once.column("skip").to_pylist()
        assert set(_np(from_cache, "epoch").tolist()) == {3}
        assert _np(from_cache, "patches")[:, 0].std() > 0  # real patches, not zeros


def test_a_cache_that_would_not_fit_the_object_store_is_refused_naming_the_sizes():
    from patchray.pipeline import CACHE_STORE_SHARE, check_cache_fits, decoded_bytes

    assert decoded_bytes(1000, 100, 200) == 60_000_000
    store = 60_000_000 / CACHE_STORE_SHARE
    assert check_cache_fits(1000, 100, 200, store) == 60_000_000
    with pytest.raises(ValueError, match=r"cache_decoded: 1001 crops of 100x200 decode to 57\.3 MiB, more than "
                                         r"70% of the cluster's object store \(81\.7 MiB\).*cache_decoded=false.*"
                                         r"larger object store"):
        check_cache_fits(1001, 100, 200, store)
    # a run that shares the store with others (concurrent Tune trials) plans on its share only
    assert check_cache_fits(500, 100, 200, store, share=0.5) == 30_000_000
    with pytest.raises(ValueError, match=r"1000 crops of 100x200 decode to 57\.2 MiB, more than 70% of this run's "
                                         r"share of the cluster's object store \(0\.5 of 81\.7 MiB\).*"
                                         r"max_concurrent_trials"):
        check_cache_fits(1000, 100, 200, store, share=0.5)
    with pytest.raises(ValueError, match=r"100000 crops of 100x200 decode to 5\.59 GiB, more than 70% of the "
                                         r"cluster's object store \(4\.00 GiB\)"):
        check_cache_fits(100_000, 100, 200, 4 * 2**30)
