"""Writing crop shards: row groups sized for streaming, one file series per split."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from patchray.shards.schema import (BOX, CROP_ID, FRAME, IMAGE, SCORE, SOURCE, SPLIT, SPLITS, DatasetMeta,
                                    arrow_schema)

DATASET_JSON = "dataset.json"
# A few MB per row group lets a reader stream a shard without holding it whole,
# while keeping per-group overhead small next to the image bytes.
DEFAULT_ROW_GROUP_BYTES = 4 << 20
DEFAULT_ROWS_PER_SHARD = 5000


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
    path: str
    split: str | None
    rows: int = 0
    bytes: int = 0


def shard_name(stem: str, split: str | None, index: int) -> str:
    """``<stem>-<split>-<index>.parquet`` so that ``<stem>-*`` or ``*-val-*`` globs select a dataset or a split."""
    return f"{stem}-{split or 'all'}-{index:05d}.parquet"


def existing_shards(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("*.parquet")) + ([out_dir / DATASET_JSON] if (out_dir / DATASET_JSON).exists() else [])


class OutputExistsError(FileExistsError):
    pass


def prepare_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Create ``out_dir``; refuse one that already holds shards unless ``overwrite``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = existing_shards(out)
    if old and not overwrite:
        raise OutputExistsError(
            f"{out} already holds {len(old)} shard file(s) (e.g. {old[0].name}); "
            "pass --overwrite to replace them, or choose another --out")
    for p in old:
        p.unlink()
    return out


class ShardWriter:
    """Accepts CropRecords, writes Parquet shards and ``dataset.json``.

    Use as a context manager or call ``close()``; ``add`` returns a skip reason
    (duplicate id, label out of range) instead of raising, so one bad crop never
    ends a long ingest.
    """

    def __init__(self, out_dir: str | os.PathLike, meta: DatasetMeta, stem: str = "crops", *,
                 rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
                 overwrite: bool = False):
        if rows_per_shard < 1 or row_group_bytes < 1:
            raise ValueError("rows_per_shard and row_group_bytes must be positive")
        self.out_dir = prepare_output_dir(out_dir, overwrite)
        self.meta, self.stem = meta, stem
        self.schema = arrow_schema(meta)
        self.rows_per_shard, self.row_group_bytes = rows_per_shard, row_group_bytes
        self.files: list[ShardFile] = []
        self._seen_ids: set[str] = set()
        self._buffers: dict[str | None, list[CropRecord]] = {}
        self._buffer_bytes: dict[str | None, int] = {}
        self._open: dict[str | None, tuple[pq.ParquetWriter, ShardFile]] = {}
        self._next_index: dict[str | None, int] = {}
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, record: CropRecord) -> str | None:
        if record.crop_id in self._seen_ids:
            return "duplicate_crop_id"
        if record.split is not None and record.split not in SPLITS:
            return "bad_split"
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

    def _writer_for(self, split: str | None) -> tuple[pq.ParquetWriter, ShardFile]:
        if split in self._open and self._open[split][1].rows >= self.rows_per_shard:
            self._close_file(split)
        if split not in self._open:
            index = self._next_index.get(split, 0)
            self._next_index[split] = index + 1
            path = self.out_dir / shard_name(self.stem, split, index)
            # Images are already compressed; compressing them again only costs CPU on every read.
            compression = {c: "snappy" for c in self.schema.names}
            compression[IMAGE] = "none"
            writer = pq.ParquetWriter(path, self.schema, compression=compression)
            self._open[split] = (writer, ShardFile(path=str(path), split=split))
        return self._open[split]

    def _flush(self, split: str | None) -> None:
        records = self._buffers.pop(split, [])
        self._buffer_bytes[split] = 0
        while records:
            writer, info = self._writer_for(split)
            take = records[: self.rows_per_shard - info.rows]
            records = records[len(take):]
            writer.write_table(self._table(take))
            info.rows += len(take)

    def _close_file(self, split: str | None) -> None:
        writer, info = self._open.pop(split)
        writer.close()
        info.bytes = os.path.getsize(info.path)
        self.files.append(info)

    @property
    def rows_written(self) -> int:
        return len(self._seen_ids)

    def close(self) -> list[ShardFile]:
        if self._closed:
            return self.files
        for split in list(self._buffers):
            self._flush(split)
        for split in list(self._open):
            self._close_file(split)
        self.files.sort(key=lambda f: f.path)
        write_dataset_json(self.out_dir, self.meta, self.files)
        self._closed = True
        return self.files


def write_dataset_json(out_dir: Path, meta: DatasetMeta, files: list[ShardFile]) -> Path:
    doc = meta.to_dict()
    doc["num_rows"] = sum(f.rows for f in files)
    doc["files"] = [{"path": os.path.basename(f.path), "split": f.split, "rows": f.rows, "bytes": f.bytes} for f in files]
    path = out_dir / DATASET_JSON
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
