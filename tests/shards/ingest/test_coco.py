import io
import json

import numpy as np
import pyarrow.parquet as pq
from helpers import gradient_frame
from PIL import Image

from patchray.shards import open_shards
from patchray.shards.cli import main


def _setup(tmp_path, annotations, categories=({"id": 1, "name": "person"}, {"id": 3, "name": "car"})):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(gradient_frame(64, 48)).save(images / "a.jpg", quality=95)
    Image.fromarray(gradient_frame(64, 48)).convert("CMYK").save(images / "cmyk.jpg")
    (images / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                      {"id": 2, "file_name": "cmyk.jpg"},
                      {"id": 3, "file_name": "bad.jpg"},
                      {"id": 4, "file_name": "missing.jpg"},
                      {"file_name": "no-id.jpg"}],
           "annotations": annotations, "categories": list(categories)}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))
    return images, path


def test_coco_persons_only_crowds_and_bad_entries_counted(tmp_path):
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 5, 8, 16], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "iscrowd": 1},
        {"id": 12, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]},               # a car: not ours
        {"id": 13, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5]},                 # three numbers
        {"id": 14, "image_id": 1, "category_id": 1, "bbox": ["x", 1, 5, 5]},            # text
        {"id": 15, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]},             # unknown image
        {"id": 16, "image_id": 2, "category_id": 1, "bbox": [4, 4, 10, 20]},            # CMYK frame
        {"id": 17, "image_id": 3, "category_id": 1, "bbox": [4, 4, 10, 20]},            # unreadable frame
        {"id": 18, "image_id": 4, "category_id": 1, "bbox": [4, 4, 10, 20]},            # file missing
        {"id": 19, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 20], "score": 0.2},
        {"id": 20, "image_id": 1, "category_id": 1, "bbox": [4, 4, -10, 20]},           # negative size
    ]
    images, ann = _setup(tmp_path, annotations)
    out = tmp_path / "out"
    assert main(["coco", "--images", str(images), "--annotations", str(ann), "--out", str(out),
                 "--min-score", "0.5", "--context", "0.25", "--pad", "edge"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["crops_written"] == 2
    assert summary["skipped"] == {"bad_annotation": 2, "bad_image_entry": 1, "below_min_score": 1, "box_empty": 1,
                                  "crowd_region": 1, "missing_frame": 1, "unknown_image_id": 1,
                                  "unreadable_image": 1}
    assert summary["converted"] == {"CMYK->RGB": 1}
    assert any("ann.json#annotations[3]" in m for m in summary["first_problems"])
    rows = {r["crop_id"]: r for f in open_shards(str(out)).files for r in pq.read_table(f).to_pylist()}
    assert set(rows) == {"1-10", "2-16"}
    assert rows["1-10"]["source"] == "a.jpg" and rows["1-10"]["box"] == [10.0, 5.0, 8.0, 16.0]
    crop = np.asarray(Image.open(io.BytesIO(rows["1-10"]["image"])))
    assert crop.shape == (24, 12, 3)  # 8x16 plus a quarter on each side
    assert abs(int(crop[0, 0, 0]) - 8) <= 2 and abs(int(crop[0, 0, 1]) - 1) <= 2


def test_coco_broken_file_stops_at_the_start(tmp_path, capsys):
    images, ann = _setup(tmp_path, [])
    ann.write_text("{not json")
    assert main(["coco", "--images", str(images), "--annotations", str(ann), "--out", str(tmp_path / "o")]) == 2
    assert "ann.json: not valid JSON" in capsys.readouterr().err
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "dog"}]}))
    assert main(["coco", "--images", str(images), "--annotations", str(ann), "--out", str(tmp_path / "o")]) == 2
    assert "no category named 'person'" in capsys.readouterr().err
