"""No traceback on bad input: hostile numbers, unreadable files, odd JSON, label overflows and file names that
are not UTF-8 are each skipped and counted under a reason, with the place they came from."""
import contextlib
import json
import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
from helpers import gradient_frame, jpeg_bytes
from PIL import Image

from patchray.shards import open_shards
from patchray.shards.cli import main


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _rows(out):
    return {r["crop_id"]: r for f in open_shards(str(out)).files for r in pq.read_table(f).to_pylist()}


@contextlib.contextmanager
def _deadline(seconds=60):
    """Fail rather than hang (reading a pipe used to block for ever)."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _frames(folder, n=2):
    folder.mkdir()
    for i in range(1, n + 1):
        Image.fromarray(gradient_frame(64, 48)).save(folder / f"{i:06d}.png")
    return folder


def test_mot_infinite_and_enormous_numbers_are_counted(tmp_path):
    frames = _frames(tmp_path / "frames")
    boxes = tmp_path / "det.txt"
    boxes.write_text("\n".join([
        "1,1,10,5,8,12,inf",               # infinite score: kept, without a score
        "1,inf,10,5,8,12,1",               # infinite track id
        "inf,2,10,5,8,12,1",               # infinite frame
        "1e30,3,10,5,8,12,1",              # a frame beyond int64
        "nan,4,10,5,8,12,1",               # NaN frame
        "1,5,inf,5,8,12,1",                # box_not_finite
        "1,6,10,nan,8,12,1",               # box_not_finite
        "1,7,0,0,1e30,1e30,1",             # a 1e30 box: no 1e60-pixel crop is attempted
        "1,8,0,0,1e5,1e5,1",               # 1e5 x 1e5 px: 30 GB of RGB
        "1,9,-1e30,0,2e30,10,1",
        "1,10,0,0,70000,2,1",              # 140 kpx, but wider than JPEG can store
        "2,1,1,1,10,10,1e400",             # a score that overflows float: kept, without a score
        "2,2,1,1,10,10,0.5,1e400,1e400",   # extra columns are ignored, whatever they hold
    ]))
    out = tmp_path / "out"
    assert main(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out)]) == 0
    summary = _summary(out)
    assert summary["crops_written"] == 3
    assert summary["skipped"] == {"malformed_line": 4, "box_not_finite": 2, "box_too_large": 4}
    assert summary["inputs"] == {"box_lines": 13} and summary["unaccounted"] == 0
    problems = "\n".join(summary["first_problems"])
    assert "det.txt:2: malformed_line (id 'inf' is not a finite number)" in problems
    assert "det.txt:4: malformed_line (frame '1e30' is not a 1-based frame number)" in problems
    assert "det.txt:8: box_too_large" in problems and "det.txt:9: box_too_large" in problems
    rows = _rows(out)
    assert {r["score"] for r in rows.values()} == {None, 0.5}


def test_mot_box_over_the_budget_after_context_and_rescale(tmp_path):
    frames = _frames(tmp_path / "frames")
    boxes = tmp_path / "det.txt"
    # 6000 x 6000 is 36 MP, under the 50 MP budget; with a context of 0.5 on each side it is 144 MP
    boxes.write_text("1,1,0,0,6000,6000,1\n1,2,0,0,30000,1,1\n1,3,0,0,10,20,1\n")
    out = tmp_path / "out"
    assert main(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out), "--context", "0.5"]) == 0
    assert _summary(out)["skipped"] == {"box_too_large": 1} and _summary(out)["crops_written"] == 2
    # rescaled to height 200, the 30000 x 1 box (60000 x 2 with context) would be 1.2 billion pixels
    assert main(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out), "--context", "0.5",
                 "--height", "200", "--overwrite"]) == 0
    assert _summary(out)["skipped"] == {"box_too_large": 2} and _summary(out)["crops_written"] == 1


def test_frames_and_crops_that_cannot_be_read(tmp_path):
    frames = _frames(tmp_path / "frames", n=1)
    (frames / "000002.jpg").mkdir()                                  # a folder with a frame's name
    os.mkfifo(frames / "000003.jpg")                                 # a pipe: reading it would block
    (frames / "000004.jpg").symlink_to(tmp_path / "gone.jpg")        # a dangling link
    Image.fromarray(gradient_frame(64, 48)).save(frames / "000005.png")
    boxes = tmp_path / "det.txt"
    boxes.write_text("".join(f"{f},1,1,1,10,10,1\n" for f in range(1, 7)))
    out = tmp_path / "out"
    with _deadline():
        assert main(["mot", "--frames", str(frames), "--boxes", str(boxes), "--out", str(out)]) == 0
    summary = _summary(out)
    assert summary["crops_written"] == 2
    assert summary["skipped"] == {"unreadable_file": 3, "missing_frame": 1}
    problems = "\n".join(summary["first_problems"])
    assert "000002.jpg: a folder" in problems and "000004.jpg: dangling symbolic link" in problems
    assert "000003.jpg: not a regular file" in problems

    crops = tmp_path / "crops"
    (crops / "x.jpg").mkdir(parents=True)                            # a folder named like a crop: descended
    (crops / "x.jpg" / "inner.jpg").write_bytes(jpeg_bytes())
    (crops / "a.jpg").write_bytes(jpeg_bytes())
    os.mkfifo(crops / "p.jpg")
    (crops / "l.png").symlink_to(tmp_path / "gone.png")
    (crops / "d.jpg").symlink_to(crops / "x.jpg")                    # a link to a folder: not followed
    out = tmp_path / "out2"
    with _deadline():
        assert main(["folder", "--crops", str(crops), "--out", str(out)]) == 0
    summary = _summary(out)
    assert set(_rows(out)) == {"a", "x.jpg/inner"}
    assert summary["skipped"] == {"unreadable_file": 2}
    assert summary["inputs"] == {"crop_files": 4} and summary["unaccounted"] == 0


def test_coco_entries_of_the_wrong_type_are_counted(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(gradient_frame(64, 48)).save(images / "a.jpg")
    Image.fromarray(gradient_frame(64, 48)).save(tmp_path / "outside.jpg")
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg"},
            {"id": [2], "file_name": "a.jpg"},                       # unhashable id
            {"id": {"x": 3}, "file_name": "a.jpg"},
            {"id": "4", "file_name": "a.jpg"},                       # string id
            {"id": 5, "file_name": 123},                             # non-string file_name
            {"id": 6, "file_name": "a.jpg", "frame_id": "7"},        # string frame_id
            {"id": 7, "file_name": "a.jpg", "frame_id": 2 ** 70},    # beyond int64
            {"id": 1, "file_name": "b.jpg"},                         # repeated id
            {"id": 8, "file_name": "../outside.jpg"},
            {"id": 9, "file_name": "/dev/zero"},
            {"id": 10, "file_name": "sub/../../" + images.name + "/a.jpg"},  # leaves and comes back: inside
            {"id": 11, "file_name": "sub"},                          # a folder
            {"id": 12, "file_name": "a.jpg", "frame_id": 3},
            {"id": True, "file_name": "a.jpg"},
            "not an object",
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 20]},        # written
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": "1234"},                # a string is not a box
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": {"x": 1}},
            {"id": 13, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10 ** 400]},  # overflows float
            {"id": 14, "image_id": 1, "category_id": 1, "bbox": [1, True, 10, 20]},
            {"id": 15, "image_id": [1], "category_id": 1, "bbox": [1, 1, 10, 20]},      # unhashable image_id
            {"id": 16, "image_id": "1", "category_id": 1, "bbox": [1, 1, 10, 20]},
            {"id": 17, "image_id": 1, "category_id": [1], "bbox": [1, 1, 10, 20]},      # unhashable category
            {"id": "x", "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 20]},       # string id
            {"id": 18, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 20], "score": "0.9"},
            {"id": 19, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 20], "score": 10 ** 400},
            {"id": 20, "image_id": 6, "category_id": 1, "bbox": [1, 1, 10, 20]},        # its image entry is bad
            {"id": 21, "image_id": 8, "category_id": 1, "bbox": [1, 1, 10, 20]},        # ../outside.jpg
            {"id": 22, "image_id": 9, "category_id": 1, "bbox": [1, 1, 10, 20]},        # /dev/zero
            {"id": 23, "image_id": 10, "category_id": 1, "bbox": [1, 1, 10, 20]},       # written
            {"id": 24, "image_id": 11, "category_id": 1, "bbox": [1, 1, 10, 20]},       # a folder
            {"id": 25, "image_id": 12, "category_id": 1, "bbox": [1, 1, 10, 20]},       # written, frame 3
            {"id": 26, "image_id": 1, "category_id": "person", "bbox": [1, 1, 10, 20]},  # another category
            {"id": 27, "image_id": 1, "category_id": 3, "bbox": "junk"},                # another category
            ["not", "an", "object"],
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"name": ["odd"]}, "odd"],
    }
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(doc))
    out = tmp_path / "out"
    with _deadline():
        assert main(["coco", "--images", str(images), "--annotations", str(ann), "--out", str(out)]) == 0
    summary = _summary(out)
    assert summary["skipped"] == {"bad_image_entry": 9, "bad_annotation": 11, "unknown_image_id": 1,
                                  "path_outside_images": 2, "unreadable_file": 1}
    assert summary["crops_written"] == 3
    assert summary["inputs"] == {"annotations": 18, "bad_image_entries": 9} and summary["unaccounted"] == 0
    problems = "\n".join(summary["first_problems"])
    assert "ann.json#images[1]: bad_image_entry (id [2] is not an integer)" in problems
    assert "ann.json#images[7]: bad_image_entry (id 1 repeats images[0])" in problems
    assert "ann.json#annotations[1]: bad_annotation" in problems
    assert "ann.json#annotations[12]: path_outside_images" in problems
    rows = _rows(out)
    assert set(rows) == {"1-10", "10-23", "12-25"} and rows["12-25"]["frame"] == 3


def test_coco_json_that_cannot_be_used_stops_at_the_start(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    ann = tmp_path / "ann.json"
    cases = {
        "[" * 100_000: "not valid JSON",                                   # nesting too deep for the parser
        '{"images": 1, "annotations": []}': "'images' must be a list",
        '{"images": [], "annotations": {}}': "'annotations' must be a list",
        '{"images": [], "annotations": [], "categories": "person"}': "'categories' must be a list",
        '{"images": [], "annotations": [], "categories": [1, {"name": "dog"}]}': "no category named 'person'",
    }
    for text, message in cases.items():
        ann.write_text(text)
        assert main(["coco", "--images", str(images), "--annotations", str(ann), "--out", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err
    ann.write_bytes(b'{"images": [], "annotations": [], "x": "\xff"}')
    assert main(["coco", "--images", str(images), "--annotations", str(ann), "--out", str(tmp_path / "o")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_labels_beyond_the_classes_or_int16(tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    for name in "abcde":
        (crops / f"{name}.jpg").write_bytes(jpeg_bytes())
    labels = tmp_path / "labels.csv"
    # inferred integer classes: 99999 and 40000 do not fit int16, and make no 99999-class attribute
    labels.write_text("crop_id,Hat\na,1\nb,99999\nc,2\nd,40000\ne," + "9" * 5000 + "\n")
    out = tmp_path / "out"
    assert main(["folder", "--crops", str(crops), "--labels", str(labels), "--out", str(out)]) == 0
    summary = _summary(out)
    assert open_shards(str(out)).attributes["Hat"].classes == ("1", "2")
    assert summary["crops_written"] == 2
    assert summary["skipped"] == {"malformed_label_row": 3, "no_label_row": 3}
    assert any("labels.csv:3" in m and "above the 2 classes of Hat" in m for m in summary["first_problems"])
    assert summary["inputs"] == {"crop_files": 5, "label_rows": 5} and summary["unaccounted"] == 0
    # PARSE-27k's Orientation has 4 classes; 5 is one too many
    labels.write_text("crop_id,Orientation\na,4\nb,5\nc,32768\n")
    assert main(["folder", "--crops", str(crops), "--labels", str(labels), "--out", str(out), "--overwrite"]) == 0
    summary = _summary(out)
    assert summary["crops_written"] == 1 and summary["skipped"]["malformed_label_row"] == 2
    # a field over the CSV reader's size limit is one bad row, not the end of the run
    labels.write_text("crop_id,Hat\na,x\n\"b," + "y" * 200_000 + "\"\nc,z\n")
    assert main(["folder", "--crops", str(crops), "--labels", str(labels), "--out", str(out), "--overwrite"]) == 0
    summary = _summary(out)
    assert summary["crops_written"] == 2 and summary["skipped"]["malformed_label_row"] == 1
    assert summary["unaccounted"] == 0


def test_attributes_file_that_cannot_be_used_stops_at_the_start(tmp_path, capsys):
    crops = tmp_path / "crops"
    crops.mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_text("crop_id,Hat\na,cap\n")
    defs = tmp_path / "defs.json"
    for text in ('{"no_attributes": 1}', "[1, 2]", '{"attributes": 5}', "{broken",
                 json.dumps([{"name": "Hat", "classes": [str(i) for i in range(40000)]}])):
        defs.write_text(text)
        assert main(["folder", "--crops", str(crops), "--labels", str(labels), "--attributes", str(defs),
                     "--out", str(tmp_path / "o")]) == 2
        assert "defs.json" in capsys.readouterr().err


def test_file_names_that_are_not_utf8(tmp_path, capsys):
    root = os.fsencode(tmp_path)
    crops = os.path.join(root, b"crops")
    os.makedirs(os.path.join(crops, b"cam\xff"))
    for name in (b"caf\xe9.jpg", b"\xff\xfe.png", b"ok.jpg", os.path.join(b"cam\xff", b"p.jpg")):
        with open(os.path.join(crops, name), "wb") as f:
            f.write(jpeg_bytes(fmt="PNG" if name.endswith(b".png") else "JPEG"))
    with open(os.path.join(crops, b"notes\xff.txt"), "wb") as f:
        f.write(b"not an image")
    labels = os.path.join(root, b"labels.csv")
    with open(labels, "wb") as f:  # the file names' own bytes, as a CSV exported on the same machine has them
        f.write(b"crop_id,Hat\ncaf\xe9.jpg,cap\n\xff\xfe,cap\nok,beanie\ncam\xff/p,beanie\nghost\xff,cap\n")
    out = tmp_path / "out"
    assert main(["folder", "--crops", os.fsdecode(crops), "--labels", os.fsdecode(labels), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 crops" in printed
    rows = _rows(out)
    assert set(rows) == {"caf\\udce9", "\\udcff\\udcfe", "ok", "cam\\udcff/p"}
    assert rows["cam\\udcff/p"]["source"] == "cam\\udcff" and rows["caf\\udce9"]["attr_Hat"] == 2
    summary = _summary(out)
    assert summary["skipped"] == {"not_an_image_file": 1, "label_row_without_crop": 1}
    assert any("notes\\udcff.txt" in m for m in summary["first_problems"])

    frames = os.path.join(root, b"seq\xff")  # the frames folder names the source, and so every crop id
    os.makedirs(frames)
    Image.fromarray(gradient_frame(64, 48)).save(os.fsdecode(os.path.join(frames, b"000001.png")))
    with open(os.path.join(frames, b"00\xff02.jpg"), "wb") as f:
        f.write(jpeg_bytes())
    boxes = Path(tmp_path / "det.txt")
    boxes.write_text("1,1,1,1,10,10,1\n2,1,1,1,10,10,1\n")
    out = tmp_path / "out2"
    assert main(["mot", "--frames", os.fsdecode(frames), "--boxes", str(boxes), "--out", str(out)]) == 0
    assert set(_rows(out)) == {"seq\\udcff-f000001-id1"}
    assert _summary(out)["skipped"] == {"missing_frame": 1}
    assert "seq\\udcff" in capsys.readouterr().out
