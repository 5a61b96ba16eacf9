"""Ingest PARSE-27k (Sudowe, Spitzer & Leibe, ICCV 2015), the PatchTask paper's benchmark, from its own release.

The layout, as the dataset's tools read it (psudowe/parse27k_tools ``attribute_datasets.py``, also used by
psudowe/patchit ``preprocess_dataset.py``)::

    ROOT/annotations.sqlite3            the annotation database
    ROOT/sequences/<directory>/<file>   the annotated frames (every 15th frame of 8 sequences)

    Sequence(sequenceID, directory)
    Image(imageID, sequenceID, filename)
    Pedestrian(pedestrianID, imageID, attributeSetID, box_min_x, box_min_y, box_max_x, box_max_y)
    AttributeSet(attributeSetID, OrientationID, Orientation8ID, GenderID, PostureID, HasBagOnShoulderLeftID, ...)

Every attribute column holds 1 for N/A, then the classes (``DB_CLASSES``). The split is the sequence's: train
{1, 4, 5}, val {2, 7, 8}, test {3, 6}. Pedestrians sitting (Posture 4, very few) are left out, as the
dataset's tools and the papers do. Each pedestrian (one row of ``Pedestrian``) is one input: written, or
skipped and counted under a reason (``unknown_image``, ``unknown_sequence``, ``bad_image_entry``,
``path_outside_sequences``, ``bad_box``, ``unknown_label``, ``posture_sitting``, ``missing_frame``, ...).
Crops are cut by :class:`~patchray.shards.ingest.boxes.ReferenceCrop` (the tools' rule: 64x128 plus 32 px
of context, 128 x 192 px, aspect kept, zero padded).
"""
from __future__ import annotations

import math
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from patchray.shards.attributes import NA, ORIENTATION8, PARSE27K, PARSE27K_BOTH_ORIENTATIONS, AttributeSet
from patchray.shards.ingest.boxes import CropOptions, ReferenceCrop
from patchray.shards.ingest.coco import inside
from patchray.shards.ingest.common import Detection, FrameJob, brief, load_image_file, write_frame_jobs
from patchray.shards.report import RunReport
from patchray.shards.writer import ShardWriter, safe_text

ANNOTATIONS_DB = "annotations.sqlite3"
SEQUENCES_DIR = "sequences"
SPLIT_SEQUENCES = {"train": (1, 4, 5), "val": (2, 7, 8), "test": (3, 6)}
SEQUENCE_SPLIT = {seq: split for split, seqs in SPLIT_SEQUENCES.items() for seq in seqs}
ORIENTATIONS = ("both", "4", "8")

DB_NA = 1
DB_SITTING = 4  # Posture: sitting; the dataset's tools (exclude_sitting=True) and the papers leave these out
_BINARY = {2: "yes", 3: "no"}
# Database value -> class name, per attribute (value 1 = N/A everywhere). From the tools' translation to
# "softmax" labels (value - 1; 0 = N/A, 1 = the positive class: yes / male / standing) and their mirror tables.
DB_CLASSES: dict[str, dict[int, str]] = {
    "Orientation": {2: "front", 3: "back", 4: "left", 5: "right"},
    "Orientation8": {2: "front", 3: "front-right", 4: "right", 5: "back-right", 6: "back", 7: "back-left",
                     8: "left", 9: "front-left"},
    "Gender": {2: "male", 3: "female"},
    "Posture": {2: "walking", 3: "standing"},
    **{name: _BINARY for name in ("HasBagOnShoulderLeft", "HasBagOnShoulderRight", "HasBagInHandLeft",
                                  "HasBagInHandRight", "HasTrolley", "HasBackpack", "isPushing",
                                  "isTalkingOnPhone")},
}
BOX_COLUMNS = ("box_min_x", "box_min_y", "box_max_x", "box_max_y")
_DIGITS = re.compile(r"[0-9]+")


def parse27k_attributes(orientation: str = "both") -> AttributeSet:
    """PARSE-27k's attributes with 4-way ``Orientation``, 8-way ``Orientation8``, or both."""
    if orientation == "both":
        return PARSE27K_BOTH_ORIENTATIONS
    if orientation == "4":
        return PARSE27K
    if orientation == "8":
        return AttributeSet((ORIENTATION8, *PARSE27K.attributes[1:]))
    raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")


@dataclass
class Parse27kIndex:
    """The annotation database, read whole (it is small) before any output is touched."""
    root: Path
    db: Path
    attributes: AttributeSet
    sequences: dict        # sequenceID -> directory
    images: dict           # imageID -> (sequenceID, filename)
    attribute_sets: dict   # attributeSetID -> {attribute name: database value}
    pedestrians: list      # (pedestrianID, imageID, attributeSetID, min_x, min_y, max_x, max_y), table order


def _key(value):
    """A join key as SQLite may hand it back: 5, 5.0 and "5" are one key."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value)
    return value


def _int(value) -> int | None:
    """An integer database value (5 or 5.0), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1].lower() for row in conn.execute(f'PRAGMA table_info("{table}")')}


def _required(attributes: AttributeSet) -> dict[str, tuple[str, ...]]:
    return {
        "Sequence": ("sequenceID", "directory"),
        "Image": ("imageID", "sequenceID", "filename"),
        "Pedestrian": ("pedestrianID", "imageID", "attributeSetID", *BOX_COLUMNS),
        "AttributeSet": ("attributeSetID", *(f"{name}ID" for name in attributes.names)),
    }


def check_parse27k_root(root: str | os.PathLike, db: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The folder and database of a PARSE-27k release; FileNotFoundError naming what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root}: not a folder (expected the PARSE-27k folder holding "
                                f"{ANNOTATIONS_DB} and {SEQUENCES_DIR}/)")
    db = Path(db) if db is not None else root / ANNOTATIONS_DB
    if not db.is_file():
        raise FileNotFoundError(f"{db}: no such file (PARSE-27k's annotation database; --db names another)")
    if not (root / SEQUENCES_DIR).is_dir():
        raise FileNotFoundError(f"--root {root}: no {SEQUENCES_DIR}/ folder (the frames of the sequences)")
    os.listdir(root / SEQUENCES_DIR)  # readable
    return root, db


def load_parse27k(root: str | os.PathLike, db: str | os.PathLike | None = None,
                  orientation: str = "both") -> Parse27kIndex:
    """Check the release and read its database. A missing folder or file, a file that is not an SQLite
    database, a missing table or column: FileNotFoundError / ValueError naming it (exit code 2)."""
    attributes = parse27k_attributes(orientation)
    root, db = check_parse27k_root(root, db)
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except (sqlite3.Error, ValueError) as e:
        raise ValueError(f"{db}: cannot open as an SQLite database ({e})") from None
    conn.text_factory = lambda data: data.decode("utf-8", "surrogateescape")  # names as the file system has them
    try:
        tables = {row[0].lower(): row[0] for row in
                  conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        for table, columns in _required(attributes).items():
            if table.lower() not in tables:
                raise ValueError(f"{db}: no table {table!r} (tables: {sorted(tables.values())}); "
                                 "not PARSE-27k's annotation database?")
            missing = [c for c in columns if c.lower() not in _columns(conn, tables[table.lower()])]
            if missing:
                raise ValueError(f"{db}: table {table!r} has no column(s) {missing}")
        sequences, images, attribute_sets = {}, {}, {}
        for seq, directory in conn.execute("SELECT sequenceID, directory FROM Sequence"):
            sequences.setdefault(_key(seq), directory)
        for image, seq, filename in conn.execute("SELECT imageID, sequenceID, filename FROM Image"):
            images.setdefault(_key(image), (_key(seq), filename))
        names = attributes.names
        query = f"SELECT attributeSetID, {', '.join(f'{n}ID' for n in names)} FROM AttributeSet"
        for row in conn.execute(query):
            attribute_sets.setdefault(_key(row[0]), dict(zip(names, row[1:])))
        pedestrians = conn.execute(f"SELECT pedestrianID, imageID, attributeSetID, {', '.join(BOX_COLUMNS)} "
                                   "FROM Pedestrian").fetchall()
    except sqlite3.Error as e:  # not a database, corrupt, locked
        raise ValueError(f"{db}: cannot read as PARSE-27k's annotation database ({type(e).__name__}: {e})") from None
    finally:
        conn.close()
    return Parse27kIndex(root, db, attributes, sequences, images, attribute_sets, pedestrians)


def _labels(values: dict, attributes: AttributeSet) -> tuple[dict[str, int] | None, str, str]:
    """Stored labels of one AttributeSet row, or (None, reason, detail)."""
    posture = _int(values.get("Posture"))
    if posture == DB_SITTING:
        return None, "posture_sitting", "PostureID=4 (sitting)"
    labels = {}
    for attribute in attributes:
        value = _int(values.get(attribute.name))
        if value == DB_NA:
            labels[attribute.name] = NA
        elif value in DB_CLASSES[attribute.name]:
            labels[attribute.name] = attribute.value(DB_CLASSES[attribute.name][value])
        else:
            return None, "unknown_label", f"{attribute.name}ID={brief(values.get(attribute.name))}"
    return labels, "", ""


def _frame_number(filename: str) -> int | None:
    digits = _DIGITS.findall(Path(filename).stem)
    if digits and len(digits[-1].lstrip("0")) <= 18:
        return int(digits[-1])
    return None


def frame_jobs(index: Parse27kIndex, report: RunReport) -> Iterator[FrameJob]:
    """One job per annotated frame (each loaded once), its pedestrians as detections with their labels."""
    sequences_dir = index.root / SEQUENCES_DIR
    db_name = index.db.name
    jobs: dict[tuple, FrameJob] = {}
    for pid, image_id, set_id, *box in index.pedestrians:
        where = f"{db_name}#Pedestrian[pedestrianID={brief(pid)}]"
        report.given("pedestrians")
        if _int(pid) is None:
            report.skip("bad_annotation", where, "pedestrianID is not an integer")
            continue
        image = index.images.get(_key(image_id))
        if image is None:
            report.skip("unknown_image", where, f"imageID {brief(image_id)} has no Image row")
            continue
        seq, filename = image
        split, directory = SEQUENCE_SPLIT.get(seq), index.sequences.get(seq)
        if split is None or directory is None:
            report.skip("unknown_sequence", where, f"sequenceID {brief(seq)} "
                        + ("is none of PARSE-27k's 1..8" if split is None else "has no Sequence row"))
            continue
        if not isinstance(directory, str) or not directory or not isinstance(filename, str) or not filename:
            report.skip("bad_image_entry", where, f"directory {brief(directory)}, filename {brief(filename)}")
            continue
        path = inside(sequences_dir, os.path.join(directory, filename))
        if path is None:
            report.skip("path_outside_sequences", where, f"{brief(directory)}/{brief(filename)}")
            continue
        values = index.attribute_sets.get(_key(set_id))
        if values is None:
            report.skip("unknown_label", where, f"attributeSetID {brief(set_id)} has no AttributeSet row")
            continue
        labels, reason, detail = _labels(values, index.attributes)
        if labels is None:
            report.skip(reason, where, detail)
            continue
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            report.skip("bad_box", where, ", ".join(f"{c}={brief(v)}" for c, v in zip(BOX_COLUMNS, box)))
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            report.skip("box_not_finite", where, f"box {brief((x1, y1, x2, y2))}")
            continue
        if x2 <= x1 or y2 <= y1:  # here, not as a negative height (below_min_height) when cut
            report.skip("box_empty", where, f"box {brief((x1, y1, x2, y2))}")
            continue
        key = (split, seq, directory, filename)
        job = jobs.get(key)
        if job is None:
            job = jobs[key] = FrameJob(source=safe_text(directory), frame=_frame_number(filename), where=str(path),
                                       load=lambda path=path: load_image_file(path), split=split)
        job.detections.append(Detection(box=(x1, y1, x2 - x1, y2 - y1), score=None,
                                        crop_id=f"parse27k-p{_int(pid)}", where=where, labels=labels))
    for key in sorted(jobs, key=lambda k: (k[1], k[2], k[3])):
        yield jobs[key]


def ingest_parse27k(index: Parse27kIndex, writer: ShardWriter, report: RunReport, crop: ReferenceCrop) -> None:
    """Write every usable pedestrian of ``index`` (from :func:`load_parse27k`) as a labeled crop."""
    write_frame_jobs(frame_jobs(index, report), writer, report, CropOptions(), crop=crop)
