"""Ingest a folder of ready-made crops (Market-1501 style), optionally with a CSV of attributes.

Labels CSV: a ``crop_id`` (or ``file``) column matching the crop's path relative
to the folder, with or without extension, then one column per attribute whose
cells are class names or stored integers; empty, ``NA`` or ``N/A`` mean N/A.
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from PIL import Image

from patchray.shards.attributes import PARSE27K, Attribute, AttributeSet
from patchray.shards.images import BadImage, encode_image, normalise_encoded, open_image, to_rgb
from patchray.shards.ingest.boxes import CropOptions
from patchray.shards.ingest.common import IMAGE_SUFFIXES
from patchray.shards.report import RunReport
from patchray.shards.writer import CropRecord, ShardWriter

ID_COLUMNS = ("crop_id", "file")
NA_CELLS = {"", "na", "n/a", "-", "none", "null"}
# Market-1501 names: <person>_c<camera>s<sequence>_<frame>_<box>.jpg
MARKET_NAME = re.compile(r"^(-?\d+)_(c\d+s\d+)_(\d+)_\d+$")


class LabelsFormatError(ValueError):
    pass


def list_crops(crops_dir: Path, report: RunReport) -> list[Path]:
    files = []
    for p in sorted(crops_dir.rglob("*")):
        if p.is_dir():
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
        else:
            report.skip("not_an_image_file", str(p))
    return files


def crop_identity(path: Path, crops_dir: Path) -> tuple[str, str, int | None]:
    """crop_id, source and frame for a crop file; Market-1501 names give camera/sequence and frame."""
    rel = path.relative_to(crops_dir).with_suffix("").as_posix()
    match = MARKET_NAME.match(path.stem)
    if match:
        return rel, match.group(2), int(match.group(3))
    parent = path.parent.relative_to(crops_dir).as_posix()
    return rel, (parent if parent != "." else crops_dir.name), None


def _subset_parse27k(names: list[str]) -> AttributeSet:
    chosen = []
    for a in PARSE27K:
        if a.name in names:
            partner = a.mirror_partner if a.mirror_partner in names else None
            chosen.append(Attribute(a.name, a.classes, partner, a.mirror_classes))
    order = {n: i for i, n in enumerate(names)}
    return AttributeSet(tuple(sorted(chosen, key=lambda a: order[a.name])))


def infer_attributes(names: list[str], rows: list[dict], attributes_file: str | None) -> AttributeSet:
    """The label set: from a JSON file if given, PARSE-27k's if the names are its, else inferred."""
    if attributes_file:
        doc = json.loads(Path(attributes_file).read_text())
        items = doc["attributes"] if isinstance(doc, dict) else doc
        attributes = AttributeSet.from_list(items)
        missing = set(names) - set(attributes.names)
        if missing:
            raise LabelsFormatError(f"{attributes_file}: no definition for label column(s) {sorted(missing)}")
        return AttributeSet(tuple(attributes[n] for n in names))
    if set(names) <= set(PARSE27K.names):
        return _subset_parse27k(names)
    inferred = []
    for name in names:
        values = {r[name].strip() for r in rows if r.get(name) is not None and r[name].strip().lower() not in NA_CELLS}
        if values and all(v.isdigit() for v in values):
            classes = tuple(str(i) for i in range(1, max(int(v) for v in values) + 1))
        else:
            classes = tuple(sorted(values))
        if len(classes) < 2:
            classes = classes + tuple(f"class{i}" for i in range(len(classes) + 1, 3))
        inferred.append(Attribute(name, classes))
    return AttributeSet(tuple(inferred))


def read_labels(path: str | os.PathLike) -> tuple[str, list[str], list[tuple[int, dict]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        id_column = next((c for c in ID_COLUMNS if c in header), None)
        if id_column is None:
            raise LabelsFormatError(f"{path}: line 1: needs a {' or '.join(ID_COLUMNS)} column, has {header}")
        names = [c for c in header if c != id_column]
        if not names:
            raise LabelsFormatError(f"{path}: line 1: no attribute columns besides {id_column!r}")
        rows = [(lineno, row) for lineno, row in enumerate(reader, 2)]
    return id_column, names, rows


def parse_label_cell(attribute: Attribute, cell: str | None) -> int:
    text = (cell or "").strip()
    if text.lower() in NA_CELLS:
        return 0
    if text.isdigit():
        value = int(text)
        if value > attribute.num_classes:
            raise ValueError(f"{value} is above the {attribute.num_classes} classes of {attribute.name}")
        return value
    return attribute.value(text)


def load_labels(path, attributes_file, report: RunReport) -> tuple[AttributeSet, dict[str, dict[str, int]]]:
    id_column, names, rows = read_labels(path)
    attributes = infer_attributes(names, [r for _, r in rows], attributes_file)
    labels: dict[str, dict[str, int]] = {}
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        key = (row.get(id_column) or "").strip()
        if not key:
            report.skip("malformed_label_row", where, f"empty {id_column}")
            continue
        key = Path(key).with_suffix("").as_posix() if Path(key).suffix.lower() in IMAGE_SUFFIXES else key
        try:
            values = {a.name: parse_label_cell(a, row.get(a.name)) for a in attributes}
        except ValueError as e:
            report.skip("malformed_label_row", where, str(e))
            continue
        if key in labels:
            report.skip("duplicate_label_row", where, key)
            continue
        labels[key] = values
    return attributes, labels


def ingest_folder(crops: str | os.PathLike, writer_factory, report: RunReport, options: CropOptions, *,
                  labels: str | os.PathLike | None = None, attributes_file: str | None = None,
                  split: str | None = None) -> ShardWriter:
    """``writer_factory(attributes)`` makes the writer once the label set is known."""
    crops_dir = Path(crops)
    if not crops_dir.is_dir():
        raise FileNotFoundError(f"--crops {crops}: not a folder")
    attributes, by_id = (load_labels(labels, attributes_file, report) if labels else (AttributeSet(), {}))
    writer = writer_factory(attributes)
    used = set()
    for path in list_crops(crops_dir, report):
        crop_id, source, frame = crop_identity(path, crops_dir)
        where = str(path)
        row_labels = {}
        if labels:
            if crop_id not in by_id:
                report.skip("no_label_row", where, f"{crop_id} is not in {labels}")
                continue
            row_labels = by_id[crop_id]
            used.add(crop_id)
        try:
            data = path.read_bytes()
            if options.height is None:
                data, converted_from = normalise_encoded(data)
            else:
                image = open_image(data)
                converted_from = image.mode if image.mode != "RGB" else None
                data = encode_image(_rescaled(to_rgb(image)[0], options.height))
        except BadImage as e:
            report.skip(e.reason, where, e.detail)
            continue
        record = CropRecord(image=data, crop_id=crop_id, source=source, frame=frame, split=split, labels=row_labels)
        reason = writer.add(record)
        if reason:
            report.skip(reason, where, crop_id)
        else:
            report.written += 1
            if converted_from:
                report.convert(f"{converted_from}->RGB")
    for crop_id in sorted(set(by_id) - used):
        report.skip("label_row_without_crop", f"{labels}", crop_id)
    return writer


def _rescaled(image: Image.Image, height: int) -> Image.Image:
    width = max(1, int(round(image.width * height / image.height)))
    return image.resize((width, height), Image.Resampling.BILINEAR)
