import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import jpeg_bytes

from patchray.shards import (
    DATASET_JSON,
    PARSE27K,
    CropRecord,
    DatasetMeta,
    NoShardsError,
    OutputExistsError,
    ShardWriter,
    open_shards,
    resolve_paths,
)
from patchray.shards.images import open_image, to_rgb


def _records(n, split=None, labeled=True, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        labels = {a.name: int(rng.integers(0, a.num_classes + 1)) for a in PARSE27K} if labeled else {}
        yield CropRecord(image=jpeg_bytes(10 + i % 5, 20, (i % 256, 0, 0)), crop_id=f"c{i}", source=f"seq{i % 3}",
                         frame=i if i % 4 else None, box=(i, 2.5, 10, 20) if i % 2 else None,
                         score=0.5 if i % 3 else None, split=split, labels=labels)


def test_round_trip_keeps_every_field(tmp_path):
    records = list(_records(23, split="train"))
    with ShardWriter(tmp_path, DatasetMeta("rt", PARSE27K), "rt") as w:
        for r in records:
            assert w.add(r) is None
    table = pq.read_table(resolve_paths(str(tmp_path))[0])
    assert table.num_rows == 23
    rows = table.to_pylist()
    for r, row in zip(records, rows):
        assert row["image"] == r.image and row["crop_id"] == r.crop_id and row["source"] == r.source
        assert row["frame"] == r.frame and row["split"] == "train"
        assert row["box"] == (list(map(float, r.box)) if r.box else None)
        assert row["score"] == (pytest.approx(r.score) if r.score is not None else None)
        for a in PARSE27K:
            assert row[a.column] == r.labels[a.name]
    assert to_rgb(open_image(rows[3]["image"]))[0].size == (13, 20)
    doc = json.loads((tmp_path / DATASET_JSON).read_text())
    assert doc["num_rows"] == 23 and doc["name"] == "rt"
    assert [a["name"] for a in doc["attributes"]] == PARSE27K.names
    assert open_shards(str(tmp_path)).meta.attributes == PARSE27K


def test_shards_roll_over_and_row_groups_are_bounded(tmp_path):
    with ShardWriter(tmp_path, DatasetMeta("r", PARSE27K), "crops", rows_per_shard=10, row_group_bytes=3000) as w:
        for r in _records(25):
            w.add(r)
    files = resolve_paths(str(tmp_path))[0]
    assert [f.rsplit("/", 1)[1] for f in files] == ["crops-all-00000.parquet", "crops-all-00001.parquet",
                                                    "crops-all-00002.parquet"]
    assert [pq.read_metadata(f).num_rows for f in files] == [10, 10, 5]
    md = pq.read_metadata(files[0])
    assert md.num_row_groups > 1
    image_bytes = len(jpeg_bytes())
    for g in range(md.num_row_groups):
        # a group closes once it reaches row_group_bytes, so it holds at most that plus one image
        assert md.row_group(g).num_rows * image_bytes <= 3000 + 2 * image_bytes
    # open_shards lists every row group, the units data tasks read: together they are every row, once
    shards = open_shards(str(tmp_path))
    assert sum(rows for _, _, rows in shards.row_groups) == shards.num_rows == 25
    assert {(path, group) for path, group, _ in shards.row_groups} == {
        (f, g) for f in files for g in range(pq.read_metadata(f).num_row_groups)}


def test_splits_go_to_their_own_files_so_globs_select_them(tmp_path):
    with ShardWriter(tmp_path, DatasetMeta("s", PARSE27K), "lab") as w:
        for split in ("train", "val", "test"):
            for r in _records(4, split=split):
                r.crop_id = f"{split}-{r.crop_id}"
                w.add(r)
    val = open_shards(str(tmp_path / "*-val-*.parquet"))
    assert val.num_rows == 4 and all("-val-" in f for f in val.files)
    assert open_shards(str(tmp_path / "lab-*.parquet")).num_rows == 12


def test_duplicates_and_bad_labels_are_refused_not_written(tmp_path):
    with ShardWriter(tmp_path, DatasetMeta("d", PARSE27K)) as w:
        assert w.add(CropRecord(image=jpeg_bytes(), crop_id="a")) is None
        assert w.add(CropRecord(image=jpeg_bytes(), crop_id="a")) == "duplicate_crop_id"
        assert w.add(CropRecord(image=jpeg_bytes(), crop_id="b", labels={"Gender": 3})) == "bad_label"
        assert w.add(CropRecord(image=jpeg_bytes(), crop_id="c", labels={"Hat": 1})) == "bad_label"
        assert w.add(CropRecord(image=jpeg_bytes(), crop_id="d", split="holdout")) == "bad_split"
    assert open_shards(str(tmp_path)).num_rows == 1


def test_existing_output_is_not_overwritten_unless_asked(tmp_path):
    with ShardWriter(tmp_path, DatasetMeta("d", PARSE27K)) as w:
        w.add(CropRecord(image=jpeg_bytes(), crop_id="a"))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        ShardWriter(tmp_path, DatasetMeta("d", PARSE27K))
    assert open_shards(str(tmp_path)).num_rows == 1
    with ShardWriter(tmp_path, DatasetMeta("d", PARSE27K), overwrite=True) as w:
        w.add(CropRecord(image=jpeg_bytes(), crop_id="x"))
        w.add(CropRecord(image=jpeg_bytes(), crop_id="y"))
    assert open_shards(str(tmp_path)).num_rows == 2


def test_resolve_paths_errors_and_uris(tmp_path):
    with pytest.raises(NoShardsError, match="no Parquet shards match"):
        resolve_paths(str(tmp_path / "*.parquet"))
    with ShardWriter(tmp_path, DatasetMeta("d", PARSE27K)) as w:
        w.add(CropRecord(image=jpeg_bytes(), crop_id="a"))
    # a file:// URI and a plain folder name the same shards
    assert resolve_paths(f"file://{tmp_path}")[0] == resolve_paths(str(tmp_path))[0]


def test_stored_size_is_the_median_of_the_first_crops_headers(tmp_path):
    from patchray.shards.reader import stored_size

    sizes = [(100, 200), (100, 200)] + [(300, 600)] * 5
    with ShardWriter(tmp_path, DatasetMeta("s", PARSE27K), "crops") as w:
        for i, (width, height) in enumerate(sizes):
            w.add(CropRecord(image=jpeg_bytes(width, height), crop_id=f"c{i}", labels={a.name: 0 for a in PARSE27K}))
    shards = open_shards(str(tmp_path))
    assert stored_size(shards) == (300, 600)
    assert stored_size(shards, sample=2) == (100, 200)  # only the first crops are looked at
