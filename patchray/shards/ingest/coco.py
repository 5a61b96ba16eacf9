"""Ingest COCO-style JSON: ``images``, ``annotations`` (or a bare detection results list), ``categories``.

Only the ``person`` category is taken; ``iscrowd`` regions are skipped and counted.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterator

from patchray.shards.ingest.boxes import CropOptions
from patchray.shards.ingest.common import Detection, FrameJob, load_image_file, write_frame_jobs
from patchray.shards.report import RunReport
from patchray.shards.writer import ShardWriter

PERSON = "person"


class CocoFormatError(ValueError):
    pass


def _load(path: str | os.PathLike) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CocoFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc:
        raise CocoFormatError(f"{path}: expected an object with 'images' and 'annotations'")
    return doc


def person_category_ids(doc: dict, path) -> set:
    categories = doc.get("categories")
    if not categories:
        # Detection results often come without categories; COCO's person id is 1.
        return {1}
    ids = {c.get("id") for c in categories if str(c.get("name", "")).lower() == PERSON}
    if not ids:
        raise CocoFormatError(f"{path}: no category named {PERSON!r} among "
                              f"{sorted(str(c.get('name')) for c in categories)}")
    return ids


def frame_jobs(doc: dict, annotations_path, images_dir, source: str | None, options: CropOptions,
               report: RunReport) -> Iterator[FrameJob]:
    persons = person_category_ids(doc, annotations_path)
    images = {}
    for i, img in enumerate(doc["images"]):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            report.skip("bad_image_entry", f"{annotations_path}#images[{i}]", "needs 'id' and 'file_name'")
            continue
        images[img["id"]] = img
    by_image: dict = defaultdict(list)
    for i, ann in enumerate(doc["annotations"]):
        where = f"{annotations_path}#annotations[{i}]"
        if not isinstance(ann, dict):
            report.skip("bad_annotation", where, "not an object")
            continue
        if ann.get("category_id") not in persons:
            continue  # other categories are not ours to count
        if ann.get("iscrowd"):
            report.skip("crowd_region", where)
            continue
        bbox = ann.get("bbox")
        try:
            box = tuple(float(v) for v in bbox)
            if len(box) != 4:
                raise ValueError(f"{len(box)} values")
            score = float(ann["score"]) if ann.get("score") is not None else None
        except (TypeError, ValueError) as e:
            report.skip("bad_annotation", where, f"bbox {bbox!r}: {e}")
            continue
        image_id = ann.get("image_id")
        if image_id not in images:
            report.skip("unknown_image_id", where, f"image_id {image_id!r}")
            continue
        crop_id = f"{image_id}-{ann.get('id', i)}"
        by_image[image_id].append(Detection(box=box, score=score, crop_id=crop_id, where=where))
    for image_id, detections in by_image.items():
        img = images[image_id]
        path = Path(images_dir) / img["file_name"]
        yield FrameJob(source=source or str(img["file_name"]), frame=img.get("frame_id"), where=str(path),
                       load=lambda path=path: load_image_file(path), detections=detections)


def ingest_coco(annotations: str | os.PathLike, images: str | os.PathLike, writer: ShardWriter,
                report: RunReport, options: CropOptions, *, source: str | None = None,
                split: str | None = None) -> None:
    if not Path(images).is_dir():
        raise FileNotFoundError(f"--images {images}: not a folder")
    doc = _load(annotations)
    write_frame_jobs(frame_jobs(doc, annotations, images, source, options, report), writer, report, options, split)
