"""Ingest a folder of ready-made crops (Market-1501 style), optionally with a CSV of attributes.

Labels CSV: a ``crop_id`` (or ``file``) column matching the crop's path relative
to the folder, with or without extension, then one column per attribute whose
cells are class names or stored integers; empty, ``NA`` or ``N/A`` mean N/A.

What a run is given (``report.inputs``): every entry under the folder that is not a folder (``crop_files``:
images, other files, pipes, dangling links; each is written or skipped), and every record of the labels CSV
after its header (``label_rows``: each is attached to a crop, counted in ``report.label_rows_used``, or skipped).
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from patchray.shards.attributes import PARSE27K, Attribute, AttributeSet
from patchray.shards.images import BadImage, encode_image, normalise_encoded, open_image, to_upright_rgb
from patchray.shards.ingest.boxes import CropOptions, rescaled_size, size_reason
from patchray.shards.ingest.common import IMAGE_SUFFIXES, brief, read_image_file
from patchray.shards.report import RunReport
from patchray.shards.writer import RETIRED_PREFIX, STAGING_PREFIX, CropRecord, ShardWriter, safe_text

ID_COLUMNS = ("crop_id", "file")
NA_CELLS = {"", "na", "n/a", "-", "none", "null"}
# Market-1501 names: <person>_c<camera>s<sequence>_<frame>_<box>.jpg (ASCII digits; a frame fits int64)
MARKET_NAME = re.compile(r"^(-?[0-9]+)_(c[0-9]+s[0-9]+)_([0-9]{1,18})_[0-9]+$")
# Attribute columns are int16: at most this many classes.
MAX_CLASSES = 32767
_DIGITS = re.compile(r"[0-9]+")


class LabelsFormatError(ValueError):
    pass


@dataclass
class LabelTable:
    """A labels CSV, read and checked: its attribute set and the labels of every good row, by crop id."""
    path: str
    attributes: AttributeSet
    by_id: dict[str, dict[str, int]]


def check_crops_dir(crops_dir: str | os.PathLike) -> None:
    if not Path(crops_dir).is_dir():
        raise FileNotFoundError(f"--crops {crops_dir}: not a folder")
    os.listdir(crops_dir)  # readable


def list_crops(crops_dir: Path, report: RunReport) -> list[Path]:
    """Every non-folder entry below ``crops_dir`` (each one input), in path order; those without an image
    suffix are skipped as ``not_an_image_file``. Symbolic links to folders are not followed."""
    entries = []

    def unreadable(error: OSError) -> None:
        report.given("unreadable_folders")
        report.skip("unreadable_folder", os.fsdecode(error.filename or crops_dir), error.strerror or str(error))

    for dirpath, dirnames, filenames in os.walk(crops_dir, onerror=unreadable):
        # never our own scratch folders (an --out inside --crops)
        dirnames[:] = [d for d in dirnames if not d.startswith((STAGING_PREFIX, RETIRED_PREFIX))]
        entries += [Path(dirpath) / name for name in filenames]
    files = []
    for p in sorted(entries):
        report.given("crop_files")
        if p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
        else:
            report.skip("not_an_image_file", str(p))
    return files


def _without_suffix(path: Path) -> str:
    try:
        return path.with_suffix("").as_posix()
    except ValueError:
        return path.as_posix()


def crop_identity(path: Path, crops_dir: Path) -> tuple[str, str, int | None]:
    """crop_id, source and frame for a crop file; Market-1501 names give camera/sequence and frame."""
    rel = _without_suffix(path.relative_to(crops_dir))
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


def _cell(cell: str | None) -> str:
    return safe_text((cell or "").strip())


def _small_int(text: str) -> int | None:
    """The value of a cell of ASCII digits that may be a class (<= MAX_CLASSES), else None."""
    if _DIGITS.fullmatch(text) and len(text.lstrip("0")) <= 5:
        value = int(text)
        return value if value <= MAX_CLASSES else None
    return None


def _load_attributes_file(attributes_file) -> AttributeSet:
    try:
        doc = json.loads(Path(attributes_file).read_bytes().decode("utf-8-sig"))
        items = doc["attributes"] if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise TypeError(f"expected a list, got {type(items).__name__}")
        return AttributeSet.from_list(items)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise LabelsFormatError(f"{attributes_file}: not a list of attribute definitions "
                                f"({type(e).__name__}: {brief(str(e))})") from None


def infer_attributes(names: list[str], rows: list[dict], attributes_file: str | None,
                     labels_path: str | os.PathLike = "labels") -> AttributeSet:
    """The label set: from a JSON file if given, PARSE-27k's if the names are its, else inferred."""
    if attributes_file:
        attributes = _load_attributes_file(attributes_file)
        missing = set(names) - set(attributes.names)
        if missing:
            raise LabelsFormatError(f"{attributes_file}: no definition for label column(s) {sorted(missing)}")
        chosen = AttributeSet(tuple(attributes[n] for n in names))
        for a in chosen:
            if a.num_classes > MAX_CLASSES:
                raise LabelsFormatError(f"{attributes_file}: attribute {a.name!r} has {a.num_classes} classes; "
                                        f"at most {MAX_CLASSES} fit the int16 label columns")
        return chosen
    if set(names) <= set(PARSE27K.names):
        return _subset_parse27k(names)
    inferred = []
    for name in names:
        values = {_cell(r.get(name)) for r in rows}
        values = {v for v in values if v.lower() not in NA_CELLS}
        if values and all(_DIGITS.fullmatch(v) for v in values):
            # stored integers: as many classes as the largest; cells above MAX_CLASSES make their rows malformed
            top = max((n for n in map(_small_int, values) if n is not None), default=0)
            classes = tuple(str(i) for i in range(1, top + 1))
        else:
            classes = tuple(sorted(values))
            if len(classes) > MAX_CLASSES:
                raise LabelsFormatError(f"{labels_path}: column {name!r} has {len(classes)} different values; "
                                        f"at most {MAX_CLASSES} classes fit the int16 label columns")
        if len(classes) < 2:
            classes = classes + tuple(f"class{i}" for i in range(len(classes) + 1, 3))
        inferred.append(Attribute(name, classes))
    return AttributeSet(tuple(inferred))


def read_labels(path: str | os.PathLike) -> tuple[str, list[str], list[tuple[int, dict | None, str]]]:
    """id column, attribute columns, and (line, row or None, error) per record; a record the CSV reader
    refuses (a field over its size limit, say) comes with row None and the reader's message."""
    # surrogateescape: bytes that are not UTF-8 survive, and match crop file names holding the same bytes
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        try:
            header = reader.fieldnames or []
        except csv.Error as e:
            raise LabelsFormatError(f"{path}: line {reader.line_num}: {e}") from None
        id_column = next((c for c in ID_COLUMNS if c in header), None)
        if id_column is None:
            raise LabelsFormatError(f"{path}: line 1: needs a {' or '.join(ID_COLUMNS)} column, has "
                                    f"{brief([safe_text(h) for h in header])}")
        names = [c for c in header if c != id_column]
        if not names:
            raise LabelsFormatError(f"{path}: line 1: no attribute columns besides {id_column!r}")
        rows: list[tuple[int, dict | None, str]] = []
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                rows.append((reader.line_num, None, str(e)))
            else:
                rows.append((reader.line_num, row, ""))
    return id_column, names, rows


def parse_label_cell(attribute: Attribute, cell: str | None) -> int:
    text = _cell(cell)
    if text.lower() in NA_CELLS:
        return 0
    if _DIGITS.fullmatch(text):
        value = _small_int(text)
        if value is None or value > attribute.num_classes:
            raise ValueError(f"{brief(text)} is above the {attribute.num_classes} classes of {attribute.name}")
        return value
    return attribute.value(text)


def _label_key(key: str) -> str:
    try:
        return _without_suffix(Path(key)) if Path(key).suffix.lower() in IMAGE_SUFFIXES else key
    except ValueError:
        return key


def load_labels(path, attributes_file, report: RunReport) -> LabelTable:
    """Read and check a labels CSV (and ``--attributes``). Raises LabelsFormatError (or OSError) for a file
    that cannot be used at all; a bad row is counted and skipped."""
    id_column, names, rows = read_labels(path)
    try:
        attributes = infer_attributes(names, [r for _, r, _ in rows if r is not None], attributes_file, path)
    except LabelsFormatError:
        raise
    except ValueError as e:  # a column name that cannot be an attribute, repeated names...
        raise LabelsFormatError(f"{path}: line 1: {e}") from None
    labels: dict[str, dict[str, int]] = {}
    for lineno, row, error in rows:
        report.given("label_rows")
        where = f"{path}:{lineno}"
        if row is None:
            report.skip("malformed_label_row", where, error)
            continue
        key = (row.get(id_column) or "").strip()
        if not key:
            report.skip("malformed_label_row", where, f"empty {id_column}")
            continue
        key = _label_key(key)
        try:
            values = {a.name: parse_label_cell(a, row.get(a.name)) for a in attributes}
        except ValueError as e:
            report.skip("malformed_label_row", where, str(e))
            continue
        if key in labels:
            report.skip("duplicate_label_row", where, key)
            continue
        labels[key] = values
    return LabelTable(os.fspath(path), attributes, labels)


def ingest_folder(crops: str | os.PathLike, writer_factory, report: RunReport, options: CropOptions, *,
                  labels: str | os.PathLike | LabelTable | None = None, attributes_file: str | None = None,
                  split: str | None = None) -> ShardWriter:
    """``writer_factory(attributes)`` makes the writer once the label set is known. ``labels``: a CSV path,
    or a LabelTable already read with :func:`load_labels` (the command line checks inputs first)."""
    crops_dir = Path(crops)
    check_crops_dir(crops_dir)
    if labels is not None and not isinstance(labels, LabelTable):
        labels = load_labels(labels, attributes_file, report)
    attributes = labels.attributes if labels is not None else AttributeSet()
    writer = writer_factory(attributes)
    used = set()
    for path in list_crops(crops_dir, report):
        crop_id, source, frame = crop_identity(path, crops_dir)
        where = str(path)
        row_labels = {}
        if labels is not None:
            if crop_id not in labels.by_id:
                report.skip("no_label_row", where, f"{crop_id} is not in {labels.path}")
                continue
            row_labels = labels.by_id[crop_id]
            used.add(crop_id)
        try:
            data = read_image_file(path)
            # A folder's crops may be photos a camera stored sideways (its EXIF tag says how to turn them): they
            # are stored upright, as a viewer shows them. Frames of mot/coco stay as stored: their boxes are
            # in the stored pixels' coordinates.
            if options.height is None:
                data, conversions = normalise_encoded(data, turn_upright=True)
            else:
                rgb, conversions = to_upright_rgb(open_image(data), turn_upright=True)
                width, height = rescaled_size(rgb.width, rgb.height, options.height)
                if size_reason(width, height):
                    raise BadImage("image_too_large", f"{rgb.width}x{rgb.height} rescaled to height "
                                                      f"{options.height} is over the crop budget")
                data = encode_image(_rescaled(rgb, options.height))
        except FileNotFoundError as e:  # gone since it was listed
            report.skip("unreadable_file", where, str(e))
            continue
        except BadImage as e:
            report.skip(e.reason, where, e.detail)
            continue
        record = CropRecord(image=data, crop_id=crop_id, source=source, frame=frame, split=split, labels=row_labels)
        reason = writer.add(record)
        if reason:
            report.skip(reason, where, crop_id)
        else:
            report.written += 1
            for conversion in conversions:
                report.convert(conversion)
    if labels is not None:
        report.label_rows_used += len(used)
        for crop_id in sorted(set(labels.by_id) - used):
            report.skip("label_row_without_crop", labels.path, crop_id)
    return writer


def _rescaled(image: Image.Image, height: int) -> Image.Image:
    width = max(1, int(round(image.width * height / image.height)))
    return image.resize((width, height), Image.Resampling.BILINEAR)
