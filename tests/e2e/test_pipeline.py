"""The Ray Data stage on a real local cluster."""
import numpy as np
import pytest

from patchray.pipeline import crop_dataset
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
