"""Writing crop shards: row groups sized for streaming, one file series per split, published all at once."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from patchray.shards.schema import BOX, CROP_ID, FRAME, IMAGE, SCORE, SOURCE, SPLIT, SPLITS, DatasetMeta, arrow_schema

DATASET_JSON = "dataset.json"
SUMMARY_JSON = "summary.json"
# A few MB per row group lets a reader stream a shard without holding it whole,
# while keeping per-group overhead small next to the image bytes.
DEFAULT_ROW_GROUP_BYTES = 4 << 20
DEFAULT_ROWS_PER_SHARD = 5000
# Hidden scratch folders inside an output folder: new files are written under STAGING, the files they replace
# are moved under RETIRED while the new ones move in. Neither is matched by a ``*.parquet`` glob.
STAGING_PREFIX = ".patchray-staging-"
RETIRED_PREFIX = ".patchray-replaced-"
_OWNER = "owner.json"
_INT64 = (-(1 << 63), (1 << 63) - 1)


def safe_text(text: str) -> str:
    """``text`` as valid UTF-8: file names that are not (``os.fsdecode`` turns their bytes into lone
    surrogates) keep their bytes as ``\\udcXX`` escapes instead of failing in Parquet, JSON or a terminal."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class CropRecord:
    image: bytes
    crop_id: str
    source: str | None = None
    frame: int | None = None
    box: tuple[float, float, float, float] | None = None
    score: float | None = None
    split: str | None = None
    labels: dict[str, int] = field(default_factory=dict)


@dataclass
class ShardFile:
    path: str  # where the file is once published
    split: str | None
    rows: int = 0
    bytes: int = 0


def shard_name(stem: str, split: str | None, index: int) -> str:
    """``<stem>-<split>-<index>.parquet`` so that ``<stem>-*`` or ``*-val-*`` globs select a dataset or a split."""
    return f"{stem}-{split or 'all'}-{index:05d}.parquet"


def _shard_pattern(stem: str) -> re.Pattern:
    return re.compile(rf"{re.escape(stem)}-(all|{'|'.join(SPLITS)})-[0-9]{{5,}}\.parquet")


def existing_shards(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("*.parquet")) + ([out_dir / DATASET_JSON] if (out_dir / DATASET_JSON).exists() else [])


def own_files(folder: Path, stems=()) -> list[Path]:
    """The files of the dataset in ``folder``, the only ones a new dataset there replaces: those its
    ``dataset.json`` lists, shards named ``<stem>-<split>-<index>.parquet`` for ``stems``, ``dataset.json`` and
    ``summary.json``. Anything else (a user's ``notes.parquet``, a README) is left alone."""
    names = {DATASET_JSON, SUMMARY_JSON}
    try:
        doc = json.loads((folder / DATASET_JSON).read_text())
        listed = doc.get("files", []) if isinstance(doc, dict) else []
        for entry in listed if isinstance(listed, list) else []:
            name = entry.get("path") if isinstance(entry, dict) else None
            if (isinstance(name, str) and name.endswith(".parquet") and not name.startswith(".")
                    and os.path.basename(name) == name):
                names.add(name)
    except (OSError, ValueError, RecursionError):
        pass  # no (readable) dataset.json: the naming rule alone decides
    patterns = [_shard_pattern(stem) for stem in stems]
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    return sorted(folder / name for name in entries
                  if (name in names or any(p.fullmatch(name) for p in patterns))
                  and (os.path.islink(folder / name) or os.path.isfile(folder / name)))


class OutputExistsError(FileExistsError):
    pass


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse a folder that already holds shards unless ``overwrite``. Changes nothing on disk."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    old = existing_shards(out) if out.is_dir() else []
    if old and not overwrite:
        raise OutputExistsError(
            f"{out} already holds {len(old)} shard file(s) (e.g. {old[0].name}); "
            "pass --overwrite to replace them, or choose another --out")
    return out


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_scratch(root: Path, max_age_s: float = 86400.0) -> None:
    """Remove scratch folders left in ``root`` by runs that were killed (their process on this host is gone,
    or, without an owner file, they are over a day old). Those of live runs are left alone."""
    try:
        entries = os.listdir(root)
    except OSError:
        return
    for name in entries:
        if not name.startswith((STAGING_PREFIX, RETIRED_PREFIX)):
            continue
        path = root / name
        try:
            owner = json.loads((path / _OWNER).read_text())
            stale = owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid")))
        except (OSError, ValueError, TypeError, AttributeError):
            try:
                stale = time.time() - path.stat().st_mtime > max_age_s
            except OSError:
                stale = False
        if stale:
            shutil.rmtree(path, ignore_errors=True)


def _scratch_dir(root: Path, prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    (path / _OWNER).write_text(json.dumps(_owner()))
    return path


class StagedOutput:
    """An output folder whose new files appear all at once, and only at the end.

    New files are written under a hidden staging folder inside ``out_dir``; nothing already there is touched
    until :meth:`publish`, which moves the old dataset's own files (:func:`own_files`) aside, moves the new
    ones in, ``summary.json`` last, and only then deletes the old ones. An exception or Ctrl-C during the
    moves puts the old files back. A run that fails, is interrupted or killed before ``publish`` leaves the
    previous dataset as it was; a killed run's staging folder is removed by the next run into that folder.

    ``folders``: the folders (relative to ``out_dir``) that will receive shards; each is refused if it already
    holds shards and ``overwrite`` is false.
    """

    def __init__(self, out_dir: str | os.PathLike, overwrite: bool = False, folders=(".",)):
        self.root = Path(out_dir)
        for folder in folders:
            check_output_dir(self.root / folder, overwrite)
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale_scratch(self.root)
        self.staging = _scratch_dir(self.root, STAGING_PREFIX)
        self._stems: dict[str, set[str]] = {}
        self.state = "open"

    def _relative(self, target: str | os.PathLike) -> str:
        rel = os.path.normpath(os.path.relpath(os.path.abspath(target), os.path.abspath(self.root)))
        if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
            raise ValueError(f"{target} is not inside the output folder {self.root}")
        return rel

    def folder(self, target: str | os.PathLike, stem: str | None = None) -> Path:
        """Where to write the files meant for ``target`` (``out_dir`` or a folder below it). With ``stem``,
        ``target``'s old shards of that stem are replaced at publication."""
        if self.state != "open":
            raise RuntimeError(f"output {self.root} is already {self.state}")
        rel = self._relative(target)
        staged = self.staging / rel
        staged.mkdir(parents=True, exist_ok=True)
        if stem is not None:
            self._stems.setdefault(rel, set()).add(stem)
        return staged

    def _staged_files(self) -> list[tuple[str, str]]:
        """(relative folder, name) of every staged file, in publication order: shards, then dataset.json,
        then every summary.json, the root's last."""
        found = []
        for dirpath, _, filenames in os.walk(self.staging):
            rel = os.path.normpath(os.path.relpath(dirpath, self.staging))
            found += [(rel, name) for name in filenames if not (rel == "." and name == _OWNER)]

        def order(item):
            rel, name = item
            rank = 2 if name == SUMMARY_JSON else 1 if name == DATASET_JSON else 0
            return rank, rank == 2 and rel == ".", rel, name

        return sorted(found, key=order)

    def publish(self) -> None:
        if self.state != "open":
            raise RuntimeError(f"output {self.root} is already {self.state}")
        new = self._staged_files()
        old: set[Path] = set()
        for rel in {rel for rel, _ in new} | set(self._stems):
            target = self.root / rel
            if rel in self._stems:
                old.update(own_files(target, self._stems[rel]))
            old.update(target / name for r, name in new
                       if r == rel and (os.path.islink(target / name) or os.path.isfile(target / name)))
        # The old summary goes first: a folder without one is never taken for a finished dataset.
        old_order = sorted(old, key=lambda p: (p.name != SUMMARY_JSON, str(p)))
        retired = _scratch_dir(self.root, RETIRED_PREFIX)
        moves: list[tuple[Path, Path]] = []
        try:
            for path in old_order:
                aside = retired / self._relative(path.parent) / path.name
                aside.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, aside)
                moves.append((path, aside))
            for rel, name in new:
                (self.root / rel).mkdir(parents=True, exist_ok=True)
                os.replace(self.staging / rel / name, self.root / rel / name)
                moves.append((self.staging / rel / name, self.root / rel / name))
        except BaseException:
            try:
                for src, dst in reversed(moves):
                    os.replace(dst, src)
            except BaseException:
                self.state = "failed"  # keep the retired files: they may be the only copy left
                raise
            shutil.rmtree(retired, ignore_errors=True)
            self.discard()
            raise
        self.state = "published"
        shutil.rmtree(retired, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)

    def discard(self) -> None:
        """Drop everything staged; the folder keeps what it held before."""
        if self.state == "open":
            self.state = "discarded"
        shutil.rmtree(self.staging, ignore_errors=True)


class ShardWriter:
    """Accepts CropRecords, writes Parquet shards and ``dataset.json``.

    Use as a context manager or call ``close()``; ``add`` returns a skip reason
    (duplicate id, label out of range) instead of raising, so one bad crop never
    ends a long ingest.

    Files are written under a hidden staging folder and appear in ``out_dir`` only when the writer closes
    without an error (see :class:`StagedOutput`): until then, and for good if the run fails, ``out_dir`` keeps
    the dataset it held. Pass ``output`` to stage into a :class:`StagedOutput` the caller publishes itself
    (several writers and a summary at once); ``close`` then leaves publication to the caller.
    """

    def __init__(self, out_dir: str | os.PathLike, meta: DatasetMeta, stem: str = "crops", *,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
                 overwrite: bool = False, output: StagedOutput | None = None):
        if rows_per_shard < 1 or row_group_bytes < 1:
            raise ValueError("rows_per_shard and row_group_bytes must be positive")
        self.out_dir = Path(out_dir)
        self._publishes = output is None
        self.output = output if output is not None else StagedOutput(self.out_dir, overwrite)
        self._staged_dir = self.output.folder(self.out_dir, stem)
        self.meta, self.stem = meta, stem
        self.schema = arrow_schema(meta)
        self.rows_per_shard, self.row_group_bytes = rows_per_shard, row_group_bytes
        self.files: list[ShardFile] = []
        self._seen_ids: set[str] = set()
        self._buffers: dict[str | None, list[CropRecord]] = {}
        self._buffer_bytes: dict[str | None, int] = {}
        self._open: dict[str | None, tuple[pq.ParquetWriter, ShardFile, Path]] = {}
        self._next_index: dict[str | None, int] = {}
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add(self, record: CropRecord) -> str | None:
        crop_id, source = safe_text(record.crop_id), record.source
        source = safe_text(source) if source is not None else None
        if crop_id is not record.crop_id or source is not record.source:
            record = replace(record, crop_id=crop_id, source=source)
        if record.crop_id in self._seen_ids:
            return "duplicate_crop_id"
        if record.split is not None and record.split not in SPLITS:
            return "bad_split"
        frame = record.frame
        if frame is not None and (not isinstance(frame, int) or isinstance(frame, bool)
                                  or not _INT64[0] <= frame <= _INT64[1]):
            return "bad_frame"
        for attribute in self.meta.attributes:
            value = record.labels.get(attribute.name, 0)
            if not 0 <= int(value) <= attribute.num_classes:
                return "bad_label"
        unknown = set(record.labels) - set(self.meta.attributes.names)
        if unknown:
            return "bad_label"
        self._seen_ids.add(record.crop_id)
        key = record.split
        self._buffers.setdefault(key, []).append(record)
        self._buffer_bytes[key] = self._buffer_bytes.get(key, 0) + len(record.image)
        if self._buffer_bytes[key] >= self.row_group_bytes:
            self._flush(key)
        return None

    def _table(self, records: list[CropRecord]) -> pa.Table:
        columns = {
            IMAGE: [r.image for r in records],
            CROP_ID: [r.crop_id for r in records],
            SOURCE: [r.source for r in records],
            FRAME: [r.frame for r in records],
            BOX: [list(map(float, r.box)) if r.box is not None else None for r in records],
            SCORE: [r.score for r in records],
            SPLIT: [r.split for r in records],
        }
        for attribute in self.meta.attributes:
            columns[attribute.column] = [int(r.labels.get(attribute.name, 0)) for r in records]
        return pa.Table.from_pydict(columns, schema=self.schema)

    def _writer_for(self, split: str | None) -> tuple[pq.ParquetWriter, ShardFile, Path]:
        if split in self._open and self._open[split][1].rows >= self.rows_per_shard:
            self._close_file(split)
        if split not in self._open:
            index = self._next_index.get(split, 0)
            self._next_index[split] = index + 1
            name = shard_name(self.stem, split, index)
            staged = self._staged_dir / name
            # Images are already compressed; compressing them again only costs CPU on every read.
            compression = {c: "snappy" for c in self.schema.names}
            compression[IMAGE] = "none"
            writer = pq.ParquetWriter(staged, self.schema, compression=compression)
            self._open[split] = (writer, ShardFile(path=str(self.out_dir / name), split=split), staged)
        return self._open[split]

    def _flush(self, split: str | None) -> None:
        records = self._buffers.pop(split, [])
        self._buffer_bytes[split] = 0
        while records:
            writer, info, _ = self._writer_for(split)
            take = records[: self.rows_per_shard - info.rows]
            records = records[len(take):]
            writer.write_table(self._table(take))
            info.rows += len(take)

    def _close_file(self, split: str | None) -> None:
        writer, info, staged = self._open.pop(split)
        writer.close()
        info.bytes = os.path.getsize(staged)
        self.files.append(info)

    def close(self) -> list[ShardFile]:
        """Finish every file and ``dataset.json``; publish them unless the caller's ``output`` will."""
        if self._closed:
            return self.files
        try:
            for split in list(self._buffers):
                self._flush(split)
            for split in list(self._open):
                self._close_file(split)
            self.files.sort(key=lambda f: f.path)
            write_dataset_json(self._staged_dir, self.meta, self.files)
            if self._publishes:
                self.output.publish()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.files

    def abort(self) -> None:
        """Stop without publishing: ``out_dir`` keeps what it held before this writer."""
        for writer, _, _ in self._open.values():
            try:
                writer.close()
            except Exception:
                pass
        self._open.clear()
        self._buffers.clear()
        self._closed = True
        if self._publishes:
            self.output.discard()


def write_dataset_json(out_dir: Path, meta: DatasetMeta, files: list[ShardFile]) -> Path:
    doc = meta.to_dict()
    doc["num_rows"] = sum(f.rows for f in files)
    doc["files"] = [{"path": os.path.basename(f.path), "split": f.split, "rows": f.rows, "bytes": f.bytes}
                    for f in files]
    path = out_dir / DATASET_JSON
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
