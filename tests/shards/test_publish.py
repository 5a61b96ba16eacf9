"""make_shards never destroys what it has not yet replaced: inputs are checked before --out is touched, new
shards are staged and published at the end (summary.json last), and --overwrite removes only the old
dataset's own files."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import gradient_frame, jpeg_bytes
from PIL import Image

from patchray.shards import open_shards
from patchray.shards.attributes import AttributeSet
from patchray.shards.cli import build_parser, main, run
from patchray.shards.schema import DatasetMeta
from patchray.shards.writer import STAGING_PREFIX, CropRecord, ShardWriter

REPO = Path(__file__).resolve().parents[2]


def _mot_inputs(tmp_path, boxes_per_frame=2, frames=2):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(1, frames + 1):
        Image.fromarray(gradient_frame(64, 48)).save(folder / f"{i:06d}.png")
    boxes = tmp_path / "det.txt"
    boxes.write_text("".join(f"{f},{t},{2 * t},3,8,12,0.9\n" for f in range(1, frames + 1)
                             for t in range(1, boxes_per_frame + 1)))
    return folder, boxes


def _snapshot(folder: Path) -> dict:
    """Every visible file below ``folder`` and its bytes (the hidden scratch folders are not the dataset)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                path = Path(dirpath) / name
                found[str(path.relative_to(folder))] = path.read_bytes()
    return found


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _mot_args(frames, boxes, out, *extra):
    return ["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out), "--rows-per-shard", "1",
            *extra]


def test_overwrite_with_a_bad_input_keeps_the_old_dataset(tmp_path, capsys):
    frames, boxes = _mot_inputs(tmp_path)
    out = tmp_path / "out"
    assert main(_mot_args(frames, boxes, out)) == 0
    before = _snapshot(out)
    assert open_shards(str(out)).num_rows == 4
    ann = tmp_path / "ann.json"
    ann.write_text("{not json")
    labels = tmp_path / "labels.csv"
    labels.write_text("name,Hat\na,cap\n")
    bad_runs = [
        _mot_args(tmp_path / "typo", boxes, out, "--overwrite"),                  # --frames typo
        _mot_args(frames, tmp_path / "typo.txt", out, "--overwrite"),             # --boxes typo
        ["coco", "--images", str(tmp_path / "typo"), "--annotations", str(ann), "--out", str(out), "--overwrite"],
        ["coco", "--images", str(frames), "--annotations", str(ann), "--out", str(out), "--overwrite"],
        ["folder", "--crops", str(tmp_path / "typo"), "--out", str(out), "--overwrite"],
        ["folder", "--crops", str(frames), "--labels", str(labels), "--out", str(out), "--overwrite"],
        ["folder", "--crops", str(frames), "--labels", str(tmp_path / "typo.csv"), "--out", str(out), "--overwrite"],
    ]
    for args in bad_runs:
        assert main(args) == 2, args
        assert _snapshot(out) == before, args
        assert _hidden(out) == [], args
    err = capsys.readouterr().err
    assert "typo: not a folder" in err and "not valid JSON" in err and "needs a crop_id or file column" in err
    # nor is a new --out created for a run that cannot start
    assert main(_mot_args(tmp_path / "typo", boxes, tmp_path / "new")) == 2
    assert not (tmp_path / "new").exists()


def _interrupt_on_crop(monkeypatch, n, exc):
    import patchray.shards.ingest.common as common

    real, calls = common.make_crop, []

    def make_crop(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(common, "make_crop", make_crop)


def test_interrupted_run_leaves_the_previous_dataset_whole(tmp_path, monkeypatch):
    frames, boxes = _mot_inputs(tmp_path)
    out = tmp_path / "out"
    assert main(_mot_args(frames, boxes, out)) == 0
    before = _snapshot(out)
    (tmp_path / "second").mkdir()
    frames2, boxes2 = _mot_inputs(tmp_path / "second", boxes_per_frame=3)
    # Ctrl-C on the 4th crop: three shards (rows-per-shard 1) are already written, in the staging folder
    _interrupt_on_crop(monkeypatch, 4, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run(build_parser().parse_args(_mot_args(frames2, boxes2, out, "--overwrite")))
    assert _snapshot(out) == before and _hidden(out) == []
    assert open_shards(str(out)).num_rows == 4
    # through the command: exit code 130, the same guarantee
    _interrupt_on_crop(monkeypatch, 2, KeyboardInterrupt())
    assert main(_mot_args(frames2, boxes2, out, "--overwrite")) == 130
    assert _snapshot(out) == before and _hidden(out) == []
    # a failure (the disk filling up, say) is no different
    _interrupt_on_crop(monkeypatch, 3, OSError(28, "No space left on device"))
    assert main(_mot_args(frames2, boxes2, out, "--overwrite")) == 2
    assert _snapshot(out) == before and _hidden(out) == []
    monkeypatch.undo()
    assert main(_mot_args(frames2, boxes2, out, "--overwrite")) == 0
    assert open_shards(str(out)).num_rows == 6


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_leaves_the_previous_dataset_whole(tmp_path, sig):
    frames, boxes = _mot_inputs(tmp_path)
    out = tmp_path / "out"
    assert main(_mot_args(frames, boxes, out)) == 0
    before = _snapshot(out)
    script = textwrap.dedent(f"""
        import os, signal, sys
        import patchray.shards.ingest.common as common
        from patchray.shards.cli import main
        real, calls = common.make_crop, []
        def make_crop(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), {int(sig)})
            return real(*args, **kwargs)
        common.make_crop = make_crop
        sys.exit(main(sys.argv[1:]))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script, *_mot_args(frames, boxes, out, "--overwrite")], env=env,
                          capture_output=True, text=True, timeout=120)
    if sig == signal.SIGKILL:
        assert done.returncode == -signal.SIGKILL
        assert [n for n in _hidden(out) if n.startswith(STAGING_PREFIX)]  # the killed run's scratch
    else:
        assert done.returncode == 130, done.stderr
        assert "keeps the dataset it held" in done.stderr
        assert _hidden(out) == []
    assert _snapshot(out) == before
    assert open_shards(str(out)).num_rows == 4
    # the next run replaces the dataset and clears what a killed run left behind
    assert main(_mot_args(frames, boxes, out, "--overwrite")) == 0
    assert _hidden(out) == []


def test_overwrite_removes_only_the_old_datasets_own_files(tmp_path):
    frames, boxes = _mot_inputs(tmp_path)
    out = tmp_path / "out"
    assert main(_mot_args(frames, boxes, out)) == 0
    old = sorted(p.name for p in out.glob("crops-*.parquet"))
    assert len(old) == 4
    (out / "notes.parquet").write_bytes(b"the user's, not ours")
    (out / "README").write_text("what this folder is")
    (out / "other-all-00000.parquet").write_bytes(b"another dataset's shard, not listed")
    (out / "crops-val-00007.parquet").write_bytes(b"our naming: left by an older run")
    (out / "sub").mkdir()
    (out / "sub" / "crops-all-00000.parquet").write_bytes(b"in a sub-folder: not ours")
    one_box = tmp_path / "one.txt"
    one_box.write_text("1,1,2,3,8,12,0.9\n")
    assert main(_mot_args(frames, one_box, out, "--overwrite")) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README", "crops-all-00000.parquet", "dataset.json", "notes.parquet",
                     "other-all-00000.parquet", "sub", "summary.json"]
    assert (out / "notes.parquet").read_bytes() == b"the user's, not ours"
    assert (out / "sub" / "crops-all-00000.parquet").exists()
    doc = json.loads((out / "dataset.json").read_text())
    assert [f["path"] for f in doc["files"]] == ["crops-all-00000.parquet"] and doc["num_rows"] == 1
    assert json.loads((out / "summary.json").read_text())["crops_written"] == 1


def test_a_failed_publication_puts_the_old_files_back(tmp_path, monkeypatch):
    frames, boxes = _mot_inputs(tmp_path)
    out = tmp_path / "out"
    assert main(_mot_args(frames, boxes, out)) == 0
    before = _snapshot(out)
    import patchray.shards.writer as writer

    real, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append(1)
        if len(calls) == 9:  # 6 old files moved aside, 2 new ones in, then a failure
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(writer.os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        run(build_parser().parse_args(_mot_args(frames, boxes, out, "--overwrite")))
    monkeypatch.undo()
    assert len(calls) > 9  # the rollback moved files back
    assert _snapshot(out) == before and _hidden(out) == []


def test_writer_publishes_only_when_it_closes_cleanly(tmp_path):
    meta = DatasetMeta("d", AttributeSet())
    with ShardWriter(tmp_path, meta, rows_per_shard=1) as w:
        w.add(CropRecord(image=jpeg_bytes(), crop_id="a"))
    before = _snapshot(tmp_path)
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, meta, rows_per_shard=1, overwrite=True) as w:
            for i in range(3):
                w.add(CropRecord(image=jpeg_bytes(), crop_id=f"x{i}"))
            raise RuntimeError("the run failed")
    assert _snapshot(tmp_path) == before and _hidden(tmp_path) == []
    assert open_shards(str(tmp_path)).num_rows == 1
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        with ShardWriter(fresh, meta) as w:
            w.add(CropRecord(image=jpeg_bytes(), crop_id="a"))
            raise RuntimeError("the run failed")
    assert _snapshot(fresh) == {} and _hidden(fresh) == []


def test_synthetic_overwrite_is_staged_and_keeps_other_files(tmp_path, monkeypatch):
    from patchray.shards import generate

    out = tmp_path / "syn"
    generate.generate_synthetic(out, num_crops=6, labeled=4, seed=1, workers=1, progress=False, rows_per_shard=2)
    (out / "unlabeled" / "notes.txt").write_text("mine")
    (out / "README").write_text("mine too")
    before = _snapshot(out)
    real, calls = generate._add, []

    def add(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(generate, "_add", add)
    with pytest.raises(KeyboardInterrupt):
        generate.generate_synthetic(out, num_crops=8, labeled=4, seed=2, workers=1, progress=False,
                                    rows_per_shard=2, overwrite=True)
    monkeypatch.undo()
    assert _snapshot(out) == before and _hidden(out) == []
    report = generate.generate_synthetic(out, num_crops=2, labeled=4, seed=2, workers=1, progress=False,
                                         rows_per_shard=2, overwrite=True)
    assert report.written == 6 and report.unaccounted == 0
    assert sorted(p.name for p in (out / "unlabeled").iterdir()) == ["dataset.json", "notes.txt",
                                                                     "unlabeled-train-00000.parquet"]
    assert (out / "README").read_text() == "mine too"
    assert open_shards(str(out / "unlabeled")).num_rows == 2
    assert json.loads((out / "summary.json").read_text())["crops_written"] == 6
