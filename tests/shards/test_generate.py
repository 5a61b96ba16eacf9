import pyarrow.parquet as pq

from patchray.shards import PARSE27K, open_shards
from patchray.shards.cli import main
from patchray.shards.generate import generate_synthetic


def test_synthetic_shards_are_deterministic_whatever_the_worker_count(tmp_path):
    a = generate_synthetic(tmp_path / "a", num_crops=40, labeled=30, seed=7, workers=1, progress=False)
    b = generate_synthetic(tmp_path / "b", num_crops=40, labeled=30, seed=7, workers=2, progress=False)
    assert a.written == b.written == 70
    for part in ("unlabeled", "labeled"):
        files_a = open_shards(str(tmp_path / "a" / part)).files
        files_b = open_shards(str(tmp_path / "b" / part)).files
        assert [f.rsplit("/", 1)[1] for f in files_a] == [f.rsplit("/", 1)[1] for f in files_b]
        for fa, fb in zip(files_a, files_b):
            assert pq.read_table(fa).equals(pq.read_table(fb))
    labeled = open_shards(str(tmp_path / "a" / "labeled"), require_attributes=True)
    assert labeled.attributes == PARSE27K
    unlabeled = open_shards(str(tmp_path / "a" / "unlabeled"))
    assert len(unlabeled.attributes) == 0


def test_labeled_crops_split_by_sequence(tmp_path):
    generate_synthetic(tmp_path, num_crops=0, labeled=120, seed=1, workers=1, progress=False)
    rows = [r for f in open_shards(str(tmp_path / "labeled")).files
            for r in pq.read_table(f, columns=["split", "source"]).to_pylist()]
    by_split = {}
    for r in rows:
        by_split.setdefault(r["split"], set()).add(r["source"])
    assert by_split == {"train": {"synthetic-seq1", "synthetic-seq4", "synthetic-seq5"},
                        "val": {"synthetic-seq2", "synthetic-seq7", "synthetic-seq8"},
                        "test": {"synthetic-seq3", "synthetic-seq6"}}
    counts = {s: sum(r["split"] == s for r in rows) for s in by_split}
    assert counts == {"train": 60, "val": 30, "test": 30}


def test_make_shards_synthetic_command_refuses_existing_output(tmp_path, capsys):
    args = ["synthetic", "--out", str(tmp_path), "--num-crops", "10", "--labeled", "5", "--workers", "1"]
    assert main(args) == 0
    assert "wrote 15 crops" in capsys.readouterr().out
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
