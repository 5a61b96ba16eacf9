"""Ingest COCO-style JSON: ``images``, ``annotations`` and ``categories``.

Only the ``person`` category is taken; ``iscrowd`` regions are skipped and counted. The JSON is untrusted:
every field is checked for its type before use, and a ``file_name`` must stay inside the images folder.

What a run is given (``report.inputs``): every element of ``annotations`` except well-formed objects whose
``category_id`` names another category (``annotations``), and every element of ``images`` that cannot be used
(``bad_image_entries``: not an object, no integer ``id``, no string ``file_name``, a ``frame_id`` that is not an
integer, an ``id`` seen before). Each is written or skipped under a reason.
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from patchray.shards.images import BadImage
from patchray.shards.ingest.boxes import CropOptions
from patchray.shards.ingest.common import Detection, FrameJob, brief, load_image_file, write_frame_jobs
from patchray.shards.report import RunReport
from patchray.shards.writer import ShardWriter, safe_text

PERSON = "person"
_INT64 = (-(1 << 63), (1 << 63) - 1)


class CocoFormatError(ValueError):
    pass


def load_coco(path: str | os.PathLike) -> dict:
    """The parsed file, checked far enough that ingest can run: an object with lists ``images`` and
    ``annotations`` and, if it has categories, one named person. Raises CocoFormatError naming the file."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CocoFormatError(f"{path}: not UTF-8 text ({e})") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: nesting too deep for the parser
        raise CocoFormatError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc:
        raise CocoFormatError(f"{path}: expected an object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(doc[key], list):
            raise CocoFormatError(f"{path}: '{key}' must be a list, is {type(doc[key]).__name__}")
    person_category_ids(doc, path)
    return doc


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} {brief(value)} is not a number")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{what} {brief(value)} is too large") from None


def person_category_ids(doc: dict, path) -> set:
    categories = doc.get("categories")
    if categories is None or categories == []:
        # Detection results often come without categories; COCO's person id is 1.
        return {1}
    if not isinstance(categories, list):
        raise CocoFormatError(f"{path}: 'categories' must be a list, is {type(categories).__name__}")
    ids = {c.get("id") for c in categories
           if isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"].lower() == PERSON
           and _hashable(c.get("id"))}
    if not ids:
        names = sorted(safe_text(c["name"]) for c in categories
                       if isinstance(c, dict) and isinstance(c.get("name"), str))
        raise CocoFormatError(f"{path}: no category named {PERSON!r} among {brief(names)}")
    return ids


def _image_problem(img) -> str | None:
    if not isinstance(img, dict):
        return "not an object"
    if "id" not in img or "file_name" not in img:
        return "needs 'id' and 'file_name'"
    if not _is_int(img["id"]):
        return f"id {brief(img['id'])} is not an integer"
    name = img["file_name"]
    if not isinstance(name, str):
        return f"file_name {brief(name)} is not a string"
    try:
        if "\0" in name:
            raise ValueError("a NUL character")
        os.fsencode(name)
    except (ValueError, UnicodeError) as e:
        return f"file_name {brief(name)} is not a usable path: {e}"
    frame = img.get("frame_id")
    if frame is not None and not (_is_int(frame) and _INT64[0] <= frame <= _INT64[1]):
        return f"frame_id {brief(frame)} is not an integer"
    return None


def inside(folder: str | os.PathLike, name: str) -> Path | None:
    """``folder / name`` if it stays inside ``folder`` (no absolute path, no ``..`` leading out), else None.

    Decided on the names alone, as written in the JSON: symbolic links inside the folder are the folder
    owner's choice and are followed."""
    base = os.path.abspath(folder)
    if os.path.isabs(name):
        return None
    full = os.path.abspath(os.path.join(base, name))
    if full != base and not full.startswith(base.rstrip(os.sep) + os.sep):
        return None
    return Path(full)


def frame_jobs(doc: dict, annotations_path, images_dir, source: str | None, options: CropOptions,
               report: RunReport) -> Iterator[FrameJob]:
    persons = person_category_ids(doc, annotations_path)
    images: dict[int, dict] = {}
    first_index: dict[int, int] = {}
    for i, img in enumerate(doc["images"]):
        where = f"{annotations_path}#images[{i}]"
        problem = _image_problem(img)
        if problem is None and img["id"] in images:
            problem = f"id {img['id']} repeats images[{first_index[img['id']]}]"
        if problem:
            report.given("bad_image_entries")
            report.skip("bad_image_entry", where, problem)
            continue
        images[img["id"]] = img
        first_index[img["id"]] = i
    by_image: dict = defaultdict(list)
    for i, ann in enumerate(doc["annotations"]):
        where = f"{annotations_path}#annotations[{i}]"
        if not isinstance(ann, dict):
            report.given("annotations")
            report.skip("bad_annotation", where, "not an object")
            continue
        category = ann.get("category_id")
        if not _hashable(category):
            report.given("annotations")
            report.skip("bad_annotation", where, f"category_id {brief(category)} is not a number or string")
            continue
        if category not in persons:
            continue  # other categories are not ours to count
        report.given("annotations")
        if ann.get("iscrowd"):
            report.skip("crowd_region", where)
            continue
        bbox = ann.get("bbox")
        try:
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError("expected a list of 4 numbers")
            box = tuple(_number(v, "value") for v in bbox)
            score = _number(ann["score"], "score") if ann.get("score") is not None else None
            if score is not None and not math.isfinite(score):
                score = None
        except ValueError as e:
            report.skip("bad_annotation", where, f"bbox {brief(bbox)}: {e}")
            continue
        image_id, ann_id = ann.get("image_id"), ann.get("id")
        ann_id = i if ann_id is None else ann_id
        if not _is_int(image_id):
            report.skip("bad_annotation", where, f"image_id {brief(image_id)} is not an integer")
            continue
        if not _is_int(ann_id):
            report.skip("bad_annotation", where, f"id {brief(ann_id)} is not an integer")
            continue
        if image_id not in images:
            report.skip("unknown_image_id", where, f"image_id {image_id}")
            continue
        crop_id = f"{image_id}-{ann_id}"
        by_image[image_id].append(Detection(box=box, score=score, crop_id=crop_id, where=where))
    for image_id, detections in by_image.items():
        img = images[image_id]
        name = img["file_name"]
        path = inside(images_dir, name)
        if path is None:
            def load(name=name):
                raise BadImage("path_outside_images", f"file_name {brief(name)} leads outside {images_dir}")
            where = name
        else:
            def load(path=path):
                return load_image_file(path)
            where = str(path)
        yield FrameJob(source=source or name, frame=img.get("frame_id"), where=where, load=load,
                       detections=detections)


def check_images_dir(images: str | os.PathLike) -> None:
    if not Path(images).is_dir():
        raise FileNotFoundError(f"--images {images}: not a folder")
    os.listdir(images)  # readable


def ingest_coco(annotations: str | os.PathLike, images: str | os.PathLike, writer: ShardWriter,
                report: RunReport, options: CropOptions, *, source: str | None = None,
                split: str | None = None, doc: dict | None = None) -> None:
    """``doc``: the file already loaded with :func:`load_coco` (the command line checks inputs first)."""
    check_images_dir(images)
    if doc is None:
        doc = load_coco(annotations)
    write_frame_jobs(frame_jobs(doc, annotations, images, source, options, report), writer, report, options, split)
