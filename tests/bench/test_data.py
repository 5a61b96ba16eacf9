import pyarrow.parquet as pq
import pytest

from patchray.bench.data import describe_machine, machine, repeated_shards
from patchray.shards import open_shards


def _write_shard(path, rows):
    import pyarrow as pa

    pq.write_table(pa.table({"x": list(range(rows))}), path)


def test_repeated_shards_link_every_file_copies_times_and_replace_stale_links(tmp_path):
    sources = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    _write_shard(sources[0], 3)
    _write_shard(sources[1], 5)
    folder = tmp_path / "rep"
    files = repeated_shards([str(s) for s in sources], 3, folder)
    assert len(files) == 6 and len(set(files)) == 6
    assert sum(pq.read_metadata(f).num_rows for f in files) == 3 * (3 + 5)
    assert all((folder / f.split("/")[-1]).is_symlink() for f in files)
    again = repeated_shards([str(sources[0])], 1, folder)  # a smaller rerun leaves no stale copies behind
    assert sorted(p.name for p in folder.glob("*.parquet")) == [again[0].split("/")[-1]]
    with pytest.raises(ValueError, match="copies"):
        repeated_shards([str(sources[0])], 0, folder)


def test_repeated_real_shards_stay_valid_shards(tmp_path):
    from patchray.shards.generate import generate_synthetic

    generate_synthetic(tmp_path / "syn", num_crops=40, labeled=0, seed=1, workers=1, progress=False)
    base = open_shards(str(tmp_path / "syn" / "unlabeled"))
    doubled = open_shards(repeated_shards(list(base.files), 2, tmp_path / "rep"))
    assert doubled.num_rows == 2 * base.num_rows
    assert len(doubled.row_groups) == 2 * len(base.row_groups)


def test_machine_says_what_it_measured_on():
    info = machine()
    assert info["cores"] >= 1 and info["cpu"]
    assert describe_machine(info).startswith(f"{info['cores']} cores")
