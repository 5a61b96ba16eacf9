import json

import pyarrow.parquet as pq
from helpers import jpeg_bytes

from patchray.shards import PARSE27K, open_shards
from patchray.shards.cli import main


def _crops(tmp_path):
    crops = tmp_path / "crops"
    (crops / "cam2").mkdir(parents=True)
    (crops / "0002_c1s1_000451_03.jpg").write_bytes(jpeg_bytes(30, 60))
    (crops / "0007_c2s3_070952_01.jpg").write_bytes(jpeg_bytes(30, 60, mode="L"))
    (crops / "cam2" / "p1.png").write_bytes(jpeg_bytes(30, 60, mode="RGBA", fmt="PNG"))
    (crops / "broken.jpg").write_bytes(jpeg_bytes(30, 60, noise=True)[:200])
    (crops / "notes.txt").write_text("not an image")
    return crops


def _rows(out):
    return {r["crop_id"]: r for f in open_shards(str(out)).files for r in pq.read_table(f).to_pylist()}


def test_folder_without_labels(tmp_path):
    out = tmp_path / "out"
    assert main(["folder", "--crops", str(_crops(tmp_path)), "--out", str(out), "--height", "50"]) == 0
    rows = _rows(out)
    assert set(rows) == {"0002_c1s1_000451_03", "0007_c2s3_070952_01", "cam2/p1"}
    assert rows["0002_c1s1_000451_03"]["source"] == "c1s1" and rows["0002_c1s1_000451_03"]["frame"] == 451
    assert rows["cam2/p1"]["source"] == "cam2" and rows["cam2/p1"]["frame"] is None
    from patchray.shards.images import open_image, to_rgb
    assert all(to_rgb(open_image(r["image"]))[0].size == (25, 50) for r in rows.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == {"not_an_image_file": 1, "truncated_image": 1}
    assert summary["converted"] == {"L->RGB": 1, "RGBA->RGB": 1}


def test_folder_with_parse27k_labels(tmp_path):
    crops = _crops(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join([
        "file,Orientation,Gender,HasBagInHandLeft,HasBagInHandRight",
        "0002_c1s1_000451_03.jpg,left,female,yes,NA",
        "0007_c2s3_070952_01,2,,no,yes",            # stored integers and an empty (N/A) cell
        "cam2/p1.png,sideways,male,no,no",          # unknown class: the row is reported, the crop skipped
        "ghost.jpg,front,male,no,no",               # a label row without a crop
        "0002_c1s1_000451_03.jpg,front,male,no,no", # second row for the same crop
    ]))
    out = tmp_path / "out"
    assert main(["folder", "--crops", str(crops), "--labels", str(labels), "--out", str(out), "--split", "train"]) == 0
    shards = open_shards(str(out), require_attributes=True)
    assert shards.attributes.names == ["Orientation", "Gender", "HasBagInHandLeft", "HasBagInHandRight"]
    # PARSE-27k's definitions were recognised, mirror rules included
    assert shards.attributes["HasBagInHandLeft"].mirror_partner == "HasBagInHandRight"
    assert shards.attributes["Orientation"] == PARSE27K["Orientation"]
    rows = _rows(out)
    assert set(rows) == {"0002_c1s1_000451_03", "0007_c2s3_070952_01"}
    a = rows["0002_c1s1_000451_03"]
    assert (a["attr_Orientation"], a["attr_Gender"],
            a["attr_HasBagInHandLeft"], a["attr_HasBagInHandRight"]) == (3, 2, 2, 0)
    b = rows["0007_c2s3_070952_01"]
    assert (b["attr_Orientation"], b["attr_Gender"], b["attr_HasBagInHandRight"]) == (2, 0, 2)
    summary = json.loads((out / "summary.json").read_text())
    # cam2/p1 lost its row to the unknown class, broken.jpg never had one: both counted as no_label_row
    assert summary["skipped"] == {"duplicate_label_row": 1, "label_row_without_crop": 1, "malformed_label_row": 1,
                                  "no_label_row": 2, "not_an_image_file": 1}
    assert any("labels.csv:4" in m and "sideways" in m for m in summary["first_problems"])


def test_folder_with_custom_labels_infers_classes(tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    for name in ("a", "b", "c"):
        (crops / f"{name}.jpg").write_bytes(jpeg_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_text("crop_id,Hat\na,cap\nb,beanie\nc,N/A\n")
    out = tmp_path / "out"
    assert main(["folder", "--crops", str(crops), "--labels", str(labels), "--out", str(out)]) == 0
    shards = open_shards(str(out))
    assert shards.attributes["Hat"].classes == ("beanie", "cap")
    rows = _rows(out)
    assert [rows[k]["attr_Hat"] for k in "abc"] == [2, 1, 0]
    doc = json.loads((out / "dataset.json").read_text())
    assert doc["attributes"] == [{"name": "Hat", "classes": ["beanie", "cap"]}]


def test_labels_csv_without_id_column_stops(tmp_path, capsys):
    crops = tmp_path / "crops"
    crops.mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_text("name,Hat\na,cap\n")
    assert main(["folder", "--crops", str(crops), "--labels", str(labels), "--out", str(tmp_path / "o")]) == 2
    assert "labels.csv: line 1: needs a crop_id or file column" in capsys.readouterr().err


def test_photos_stored_sideways_are_written_upright_and_counted(tmp_path):
    """A folder's crops can be photos a camera stored sideways with an EXIF orientation tag: they are written as
    a viewer shows them (a person standing), with and without --height, and the summary counts them."""
    import io

    import numpy as np
    from PIL import Image

    from patchray.shards.images import open_image

    person = np.zeros((60, 30, 3), np.uint8)  # upright: 30 wide, 60 tall, head (green) at the top
    person[:, :] = (200, 30, 30)
    person[:15] = (30, 200, 30)
    sideways = np.rot90(person, k=1)  # stored turned 90 degrees counter-clockwise: 60 wide, 30 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    crops = tmp_path / "crops"
    crops.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(sideways)).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    (crops / "phone.jpg").write_bytes(buffer.getvalue())
    (crops / "camera.jpg").write_bytes(jpeg_bytes(30, 60))
    for height in (None, 40):
        out = tmp_path / f"out-{height}"
        args = ["folder", "--crops", str(crops), "--out", str(out)] + (["--height", str(height)] if height else [])
        assert main(args) == 0
        rows = _rows(out)
        image = np.asarray(open_image(rows["phone"]["image"]).convert("RGB"))
        assert image.shape == ((60, 30, 3) if height is None else (40, 20, 3))
        assert image[1, :, 1].mean() > 150 and image[-1, :, 0].mean() > 150  # the head on top, standing
        summary = json.loads((out / "summary.json").read_text())
        assert summary["converted"] == {"EXIF orientation 6->upright": 1} and summary["crops_written"] == 2
