import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import gradient_frame
from PIL import Image

from patchray.shards import open_shards
from patchray.shards.cli import main


def _frames(folder, n=4, size=(64, 48)):
    folder.mkdir()
    for i in range(1, n + 1):
        Image.fromarray(gradient_frame(*size)).save(folder / f"{i:06d}.png")
    return folder


def _run(args):
    code = main(args)
    return code


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _rows(out):
    shards = open_shards(str(out))
    return [r for f in shards.files for r in pq.read_table(f).to_pylist()]


def test_mot_ingest_cuts_boxes_and_counts_every_bad_line(tmp_path, capsys):
    frames = _frames(tmp_path / "img1")
    # frame 3 exists but is corrupt; frame 4 is grayscale
    (frames / "000003.png").write_bytes(b"garbage")
    Image.fromarray(gradient_frame()[..., 0]).save(frames / "000004.png")
    boxes = tmp_path / "det.txt"
    boxes.write_text("\n".join([
        "1,1,10,5,8,12,0.9,-1,-1,-1",      # ok
        "1,2,-4,-3,10,10,0.8,-1,-1,-1",    # ok, leaves the frame: zero padded
        "1,3,10,5,8,12,0.1,-1,-1,-1",      # below --min-score
        "2,1,10,5,8,4,0.9,-1,-1,-1",       # below --min-height
        "2,2,10,5,0,12,0.9,-1,-1,-1",      # zero size
        "2,3,100,5,8,12,0.9,-1,-1,-1",     # outside the 64x48 frame
        "2,4,nan,5,8,12,0.9,-1,-1,-1",     # NaN coordinate
        "2,5,abc,5,8,12,0.9",              # text in a number field
        "2,6,10,5",                        # missing columns
        "1,1,11,6,8,12,0.9,-1,-1,-1",      # duplicate crop id (same frame and track)
        "3,1,10,5,8,12,0.9,-1,-1,-1",      # corrupt frame
        "4,1,10,5,8,12,0.9,-1,-1,-1",      # grayscale frame: converted
        "9,1,10,5,8,12,0.9,-1,-1,-1",      # frame that does not exist
        "",
    ]))
    out = tmp_path / "out"
    assert _run(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out),
                 "--min-score", "0.5", "--min-height", "6", "--split", "train"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 crops" in printed
    summary = _summary(out)
    assert summary["crops_written"] == 3
    assert summary["skipped"] == {"below_min_height": 1, "below_min_score": 1, "box_empty": 1, "box_not_finite": 1,
                                  "box_outside_frame": 1, "duplicate_crop_id": 1, "malformed_line": 2,
                                  "missing_frame": 1, "unreadable_image": 1}
    assert summary["converted"] == {"L->RGB": 1}
    assert any("det.txt:8: malformed_line" in m for m in summary["first_problems"])
    assert any("det.txt:9: malformed_line" in m for m in summary["first_problems"])
    rows = {r["crop_id"]: r for r in _rows(out)}
    source = tmp_path.name  # MOT layout SEQ/img1/: the sequence folder names the source
    assert set(rows) == {f"{source}-f000001-id1", f"{source}-f000001-id2", f"{source}-f000004-id1"}
    first = next(r for r in rows.values() if r["frame"] == 1 and r["box"][0] == 10)
    assert first["source"] == tmp_path.name and first["split"] == "train"
    assert first["score"] == pytest.approx(0.9)
    pixels = np.asarray(Image.open(io.BytesIO(first["image"])))
    assert pixels.shape == (12, 8, 3)
    # the gradient says where it was cut (JPEG may move a value by a step or two)
    assert abs(int(pixels[0, 0, 0]) - 10) <= 2 and abs(int(pixels[0, 0, 1]) - 5) <= 2
    padded = next(r for r in rows.values() if r["box"][0] == -4)
    pixels = np.asarray(Image.open(io.BytesIO(padded["image"])))
    # zero padding where the box leaves the frame (JPEG rings a little at the seam), frame pixels inside
    assert pixels[:2].mean() < 8 and pixels[:, :3].mean() < 8
    assert pixels[5:, 6:, 2].mean() > 60


def test_every_nth_frame_and_rescale(tmp_path):
    frames = _frames(tmp_path / "frames", n=4)
    boxes = tmp_path / "gt.txt"
    boxes.write_text("\n".join(f"{f},1,10,5,10,20,1" for f in range(1, 5)))
    out = tmp_path / "out"
    assert _run(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out), "--every", "2",
                 "--height", "40", "--context", "0.1", "--source", "cam7"]) == 0
    rows = _rows(out)
    assert sorted(r["frame"] for r in rows) == [1, 3]
    assert all(r["source"] == "cam7" for r in rows)
    assert _summary(out)["skipped"] == {"not_every_nth_frame": 2}
    image = Image.open(io.BytesIO(rows[0]["image"]))
    assert image.size == (20, 40)  # 12x24 with context, rescaled to height 40


def test_mot_from_video(tmp_path):
    av = pytest.importorskip("av")
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(3):
            pixels = np.full((48, 64, 3), 40 + 80 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    boxes = tmp_path / "det.txt"
    boxes.write_text("1,1,4,4,16,32,1\n3,1,4,4,16,32,1\n7,1,4,4,16,32,1\n")
    out = tmp_path / "out"
    assert _run(["mot", "--video", str(video), "--boxes", str(boxes), "--out", str(out)]) == 0
    rows = sorted(_rows(out), key=lambda r: r["frame"])
    assert [r["frame"] for r in rows] == [1, 3]
    means = [np.asarray(Image.open(io.BytesIO(r["image"]))).mean() for r in rows]
    assert means[0] == pytest.approx(40, abs=8) and means[1] == pytest.approx(200, abs=8)
    assert _summary(out)["skipped"] == {"missing_frame": 1}


def test_existing_output_refused_and_missing_inputs_are_clear(tmp_path, capsys):
    frames = _frames(tmp_path / "frames", n=1)
    boxes = tmp_path / "b.txt"
    boxes.write_text("1,1,1,1,5,5,1\n")
    out = tmp_path / "out"
    assert _run(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out)]) == 0
    assert _run(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out)]) == 2
    assert "already holds 2 shard file(s)" in capsys.readouterr().err
    assert _run(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out), "--overwrite"]) == 0
    assert _run(["mot", "--frames", str(tmp_path / "nope"), "--boxes", str(boxes), "--out", str(tmp_path / "o2")]) == 2
    assert "nope: not a folder" in capsys.readouterr().err


def test_detector_boxes_without_track_ids_are_all_kept(tmp_path):
    """MOTChallenge det/det.txt (and most detectors' output in that format) say id -1 on every box: each box of
    a frame is its own crop, named by its place among the frame's boxes, not one crop per frame."""
    frames = _frames(tmp_path / "img1", n=2)
    boxes = tmp_path / "det.txt"
    people = [(2, 2, 8, 16), (12, 3, 8, 16), (22, 4, 8, 16), (32, 5, 8, 16), (42, 6, 8, 16)]
    lines = [f"{frame},-1,{x},{y},{w},{h},0.9,-1,-1,-1" for frame in (1, 2) for x, y, w, h in people]
    lines.insert(3, "1,-1,abc,5,8,12,0.9")  # a malformed line between them does not shift the names
    boxes.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert _run(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out)]) == 0
    summary = _summary(out)
    assert summary["crops_written"] == 10
    assert summary["skipped"] == {"malformed_line": 1}
    assert summary["unaccounted"] == 0
    rows = _rows(out)
    source = tmp_path.name
    assert {r["crop_id"] for r in rows} == {f"{source}-f{f:06d}-det{i}" for f in (1, 2) for i in range(1, 6)}
    by_id = {r["crop_id"]: r for r in rows}
    for i, (x, y, w, h) in enumerate(people, 1):
        assert by_id[f"{source}-f000002-det{i}"]["box"] == [x, y, w, h]
    # any negative id means "no track"; the same box twice in a frame is still two detections
    boxes.write_text("1,-1,2,2,8,16,0.9\n1,-7,2,2,8,16,0.8\n1,-1,2,2,8,16,0.7\n")
    assert _run(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out), "--overwrite"]) == 0
    assert _summary(out)["crops_written"] == 3


def test_repeated_track_id_in_a_frame_stays_a_duplicate(tmp_path):
    """Where the file has real track ids (gt.txt, a tracker's output), one id twice in a frame is an error."""
    frames = _frames(tmp_path / "frames", n=1)
    boxes = tmp_path / "gt.txt"
    boxes.write_text("1,3,2,2,8,16,1\n1,3,12,2,8,16,1\n1,-1,22,2,8,16,1\n1,4,32,2,8,16,1\n")
    out = tmp_path / "out"
    assert _run(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out), "--source", "s"]) == 0
    summary = _summary(out)
    assert summary["skipped"] == {"duplicate_crop_id": 1}
    assert {r["crop_id"] for r in _rows(out)} == {"s-f000001-id3", "s-f000001-det3", "s-f000001-id4"}
