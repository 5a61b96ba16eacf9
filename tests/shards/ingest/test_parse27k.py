"""PARSE-27k from its own layout: ROOT/annotations.sqlite3 (tables Sequence, Image, Pedestrian, AttributeSet, as
the dataset's tools query them) and ROOT/sequences/<directory>/<filename>. The tests build a tiny release."""
import io
import json
import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import gradient_frame
from PIL import Image

from patchray.shards import PARSE27K, open_shards
from patchray.shards.cli import main

DB_ATTRIBUTES = ["Orientation", "Orientation8", "Gender", "Posture", "HasBagOnShoulderLeft", "HasBagOnShoulderRight",
                 "HasBagInHandLeft", "HasBagInHandRight", "HasTrolley", "HasBackpack", "isPushing",
                 "isTalkingOnPhone"]
FRAME_W, FRAME_H = 200, 150

SEQUENCES = {1: "seq1", 2: "seq2", 3: "seq3", 9: "seq9"}
IMAGES = {  # imageID: (sequenceID, filename, whether the file exists)
    1: (1, "000015.png", True), 2: (1, "000030.png", True), 3: (2, "000015.png", True),
    4: (3, "000045.png", True), 5: (3, "000060.png", False), 6: (9, "000015.png", True),
    7: (1, "../../outside.png", False),
}
ATTRIBUTE_SETS = {  # attributeSetID: database values that are not 1 (N/A)
    1: {"Orientation": 4, "Orientation8": 7, "Gender": 2, "Posture": 3, "HasBagOnShoulderLeft": 2,
        "HasBagInHandRight": 3},
    2: {},
    3: {"Orientation": 2, "Orientation8": 3, "Gender": 3, "Posture": 2, "isTalkingOnPhone": 2},
    4: {"Posture": 4},                          # sitting: left out, as the dataset's tools do
    5: {"Orientation": 7},                      # no such orientation
    6: {"Gender": None},                        # NULL label
}
PEDESTRIANS = [  # pedestrianID, imageID, attributeSetID, min_x, min_y, max_x, max_y
    (101, 1, 1, 60, 20, 90, 80),      # train
    (102, 1, 2, -10, 30, 20, 90),     # train, leaves the frame on the left: zero padded
    (103, 2, 3, 100, 10, 120, 50),    # train
    (104, 3, 3, 50, 50, 70, 90),      # val
    (105, 4, 1, 10, 10, 30, 50),      # test
    (106, 5, 1, 10, 10, 30, 50),      # missing_frame
    (107, 1, 1, None, 10, 30, 50),    # bad_box (NULL)
    (108, 1, 5, 10, 10, 30, 50),      # unknown_label
    (109, 1, 6, 10, 10, 30, 50),      # unknown_label
    (110, 1, 4, 10, 10, 30, 50),      # posture_sitting
    (111, 6, 1, 10, 10, 30, 50),      # unknown_sequence
    (112, 99, 1, 10, 10, 30, 50),     # unknown_image
    (113, 7, 1, 10, 10, 30, 50),      # path_outside_sequences
    (114, 1, 99, 10, 10, 30, 50),     # unknown_label (no AttributeSet row)
    (115, 2, 2, 10, 10, 10, 10),      # box_empty
]


def make_release(root, drop_column=None):
    """A PARSE-27k-shaped folder; column names spelled as the tools' SQL spells some of them (postureID)."""
    for _image_id, (seq, filename, exists) in IMAGES.items():
        if exists:
            path = root / "sequences" / SEQUENCES[seq] / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(gradient_frame(FRAME_W, FRAME_H)).save(path)
    (root / "sequences").mkdir(parents=True, exist_ok=True)
    (root / "outside.png").write_bytes(b"not read")
    conn = sqlite3.connect(root / "annotations.sqlite3")
    columns = [f"{name[0].lower()}{name[1:]}ID" for name in DB_ATTRIBUTES if name != drop_column]
    conn.executescript(f"""
        CREATE TABLE Sequence (sequenceID INTEGER PRIMARY KEY, directory TEXT);
        CREATE TABLE Image (imageID INTEGER PRIMARY KEY, sequenceID INTEGER, filename TEXT);
        CREATE TABLE AttributeSet (attributeSetID INTEGER PRIMARY KEY, {', '.join(f'{c} INTEGER' for c in columns)});
        CREATE TABLE Pedestrian (pedestrianID INTEGER PRIMARY KEY, imageID INTEGER, attributeSetID INTEGER,
                                 box_min_x REAL, box_min_y REAL, box_max_x REAL, box_max_y REAL);
    """)
    conn.executemany("INSERT INTO Sequence VALUES (?, ?)", SEQUENCES.items())
    conn.executemany("INSERT INTO Image VALUES (?, ?, ?)", [(i, s, f) for i, (s, f, _) in IMAGES.items()])
    for set_id, values in ATTRIBUTE_SETS.items():
        row = [values.get(name, 1) for name in DB_ATTRIBUTES if name != drop_column]
        conn.execute(f"INSERT INTO AttributeSet VALUES ({', '.join('?' * (len(row) + 1))})", [set_id, *row])
    conn.executemany("INSERT INTO Pedestrian VALUES (?, ?, ?, ?, ?, ?, ?)", PEDESTRIANS)
    conn.commit()
    conn.close()
    return root


@pytest.fixture
def release(tmp_path):
    return make_release(tmp_path / "PARSE-27k")


def _rows(out):
    return {r["crop_id"]: r for f in open_shards(str(out)).files for r in pq.read_table(f).to_pylist()}


def _pixels(row):
    return np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB")).astype(float)


def test_parse27k_splits_labels_and_counts_every_pedestrian(release, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["parse27k", "--root", str(release), "--out", str(out)]) == 0
    assert "parse27k: wrote 5 crops" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == {"pedestrians": len(PEDESTRIANS)}
    assert summary["skipped"] == {"bad_box": 1, "box_empty": 1, "missing_frame": 1, "path_outside_sequences": 1,
                                  "posture_sitting": 1, "unknown_image": 1, "unknown_label": 3,
                                  "unknown_sequence": 1}
    assert summary["unaccounted"] == 0
    assert any("Pedestrian[pedestrianID=108]: unknown_label (OrientationID=7)" in m
               for m in summary["first_problems"])

    rows = _rows(out)
    assert {k: (r["split"], r["source"], r["frame"]) for k, r in rows.items()} == {
        "parse27k-p101": ("train", "seq1", 15), "parse27k-p102": ("train", "seq1", 15),
        "parse27k-p103": ("train", "seq1", 30), "parse27k-p104": ("val", "seq2", 15),
        "parse27k-p105": ("test", "seq3", 45)}
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "crops-test-00000.parquet", "crops-train-00000.parquet", "crops-val-00000.parquet"]
    assert rows["parse27k-p101"]["box"] == [60, 20, 30, 60]  # the annotated box, x y w h

    shards = open_shards(str(out))
    attributes = shards.attributes
    assert attributes.names == ["Orientation", "Orientation8", *PARSE27K.names[1:]]
    meta = json.loads((out / "dataset.json").read_text())
    o8 = next(a for a in meta["attributes"] if a["name"] == "Orientation8")
    assert ["right", "left"] in o8["mirror_classes"] and ["front-right", "front-left"] in o8["mirror_classes"]

    def labels(crop_id):
        row = rows[crop_id]
        named = {}
        for a in attributes:
            value = row[a.column]
            named[a.name] = a.classes[value - 1] if value else "N/A"
        return named

    first = labels("parse27k-p101")
    assert first["Orientation"] == "left" and first["Orientation8"] == "back-left"
    assert first["Gender"] == "male" and first["Posture"] == "standing"
    assert first["HasBagOnShoulderLeft"] == "yes" and first["HasBagInHandRight"] == "no"
    assert first["HasTrolley"] == "N/A" and first["HasBagInHandLeft"] == "N/A"
    third = labels("parse27k-p103")
    assert (third["Orientation"], third["Orientation8"], third["Gender"], third["Posture"],
            third["isTalkingOnPhone"]) == ("front", "front-right", "female", "walking", "yes")
    assert set(labels("parse27k-p102").values()) == {"N/A"}
    assert labels("parse27k-p105") == first


def test_parse27k_crop_is_the_authors_window_aspect_kept_zero_padded(release, tmp_path):
    out = tmp_path / "out"
    assert main(["parse27k", "--root", str(release), "--out", str(out)]) == 0
    rows = _rows(out)
    # box 60..90 x 20..80: height 60 -> 128 rows (0.46875 frame px a crop px), 64 + 2 * 32 columns around its
    # centre x = 75, 32 rows of context above and below; the gradient frame says where each pixel came from
    pixels = _pixels(rows["parse27k-p101"])
    assert pixels.shape == (192, 128, 3)
    step = 60 / 128
    expected_x = 75 - 64 * step + (np.arange(128) + 0.5) * step - 0.5
    expected_y = 20 - 32 * step + (np.arange(192) + 0.5) * step - 0.5
    assert np.abs(pixels[96, :, 0] - expected_x).max() < 2.5
    assert np.abs(pixels[:, 64, 1] - expected_y).max() < 2.5
    assert abs(pixels[32, 64, 1] - 20) < 2 and abs(pixels[160, 64, 1] - 80) < 2  # the box's top and bottom rows

    # a narrow box (20 x 40) gets the same 128 x 192 crop with the same scale on both axes: never stretched
    narrow = _pixels(rows["parse27k-p103"])
    assert narrow.shape == (192, 128, 3)
    step = 40 / 128
    assert (narrow[96, 120, 0] - narrow[96, 8, 0]) == pytest.approx(112 * step, abs=2.5)
    assert (narrow[180, 64, 1] - narrow[12, 64, 1]) == pytest.approx(168 * step, abs=2.5)
    assert narrow[96, 64, 0] == pytest.approx(110, abs=2)  # centred on the box

    # box -10..20: the window starts 25 px left of the frame; zeros there (B is 77 everywhere in the frame)
    padded = _pixels(rows["parse27k-p102"])
    edge = int((0 - (5 - 64 * 60 / 128)) / (60 / 128))  # crop column of the frame's left edge (53)
    assert padded[:, : edge - 3].mean() < 6
    assert padded[:, edge + 3:, 2].mean() == pytest.approx(77, abs=4)


def test_parse27k_orientation_variants(release, tmp_path):
    assert main(["parse27k", "--root", str(release), "--out", str(tmp_path / "o4"), "--orientation", "4"]) == 0
    assert open_shards(str(tmp_path / "o4")).attributes == PARSE27K
    assert main(["parse27k", "--root", str(release), "--out", str(tmp_path / "o8"), "--orientation", "8"]) == 0
    shards = open_shards(str(tmp_path / "o8"))
    assert shards.attributes.names == ["Orientation8", *PARSE27K.names[1:]]
    rows = _rows(tmp_path / "o8")
    o8 = shards.attributes["Orientation8"]
    assert rows["parse27k-p101"][o8.column] == o8.value("back-left")


def test_wrong_root_or_database_stops_at_the_start(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["parse27k", "--root", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "nope: not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["parse27k", "--root", str(empty), "--out", str(out)]) == 2
    assert "annotations.sqlite3: no such file" in capsys.readouterr().err
    (empty / "annotations.sqlite3").write_bytes(b"this is not a database" * 100)
    (empty / "sequences").mkdir()
    assert main(["parse27k", "--root", str(empty), "--out", str(out)]) == 2
    assert "cannot read as PARSE-27k's annotation database" in capsys.readouterr().err
    assert not out.exists()  # --out never touched

    old = make_release(tmp_path / "old", drop_column="Orientation8")
    assert main(["parse27k", "--root", str(old), "--out", str(out)]) == 2
    assert "table 'AttributeSet' has no column(s) ['Orientation8ID']" in capsys.readouterr().err
    assert not out.exists()
    assert main(["parse27k", "--root", str(old), "--out", str(out), "--orientation", "4"]) == 0


def test_hostile_database_values_are_counted_never_raised(tmp_path):
    root = make_release(tmp_path / "PARSE-27k")
    conn = sqlite3.connect(root / "annotations.sqlite3")
    conn.execute("DELETE FROM Pedestrian")
    conn.execute("CREATE TABLE Loose (a)")  # untyped columns keep whatever is stored
    hostile = [
        (201, 1, 1, "abc", 10, 30, 50),                  # text coordinate: bad_box
        (202, 1, 1, 0, 0, 1e308, 1e308),                 # enormous: box_too_large, nothing allocated
        (203, 1, 1, float("inf"), 10, 30, 50),           # box_not_finite
        (204, 1, 1, 30, 50, 10, 10),                     # inverted: box_empty
        (205, 1, 1, 500, 10, 530, 50),                   # box_outside_frame
        (206, 1, 1, b"\x00\x01", 10, 30, 50),            # a blob: bad_box
        (207, "1", "2", 10, 10, 30, 50),                 # ids as text join as numbers: written
        (208, 1.0, 2.0, 10, 10, 30, 50),                 # ids as reals: written
    ]
    conn.executemany("INSERT INTO Pedestrian VALUES (?, ?, ?, ?, ?, ?, ?)", hostile)
    conn.execute("ALTER TABLE AttributeSet RENAME TO AttributeSetTyped")
    conn.execute("CREATE TABLE AttributeSet AS SELECT * FROM AttributeSetTyped")
    for set_id, value in ((10, -1), (11, 2.5), (12, "front"), (13, 1e300)):
        conn.execute("INSERT INTO AttributeSet (attributeSetID, orientationID) VALUES (?, ?)", (set_id, value))
        conn.execute("INSERT INTO Pedestrian VALUES (?, 1, ?, 10, 10, 30, 50)", (300 + set_id, set_id))
    conn.execute("INSERT INTO Pedestrian VALUES (NULL, 1, 2, 10, 10, 30, 50)")  # pedestrianID: next integer
    conn.commit()
    conn.close()
    out = tmp_path / "out"
    assert main(["parse27k", "--root", str(root), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == {"pedestrians": len(hostile) + 5}
    assert summary["skipped"] == {"bad_box": 2, "box_too_large": 1, "box_not_finite": 1, "box_empty": 1,
                                  "box_outside_frame": 1, "unknown_label": 4}
    assert summary["crops_written"] == 3 and summary["unaccounted"] == 0
