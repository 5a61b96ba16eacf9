"""Finding and validating shards before a job starts, locally or on any pyarrow filesystem."""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from patchray.shards.images import median_size
from patchray.shards.schema import IMAGE, DatasetMeta, ShardSchemaError, validate_schema


class NoShardsError(FileNotFoundError):
    pass


def _is_uri(spec: str) -> bool:
    return "://" in spec and not spec.startswith("file://")


def resolve_paths(specs: str | list[str]) -> tuple[list[str], pafs.FileSystem | None]:
    """Expand globs, folders and URIs into a sorted list of Parquet files.

    Local specs give plain paths (filesystem None); ``s3://``/``gs://`` specs go
    through pyarrow's filesystems, which is also what Ray Data reads them with.
    """
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise NoShardsError("no shard paths given")
    files: list[str] = []
    remote_fs: pafs.FileSystem | None = None
    for spec in specs:
        spec = str(spec)
        if _is_uri(spec):
            fs, path = pafs.FileSystem.from_uri(spec)
            if remote_fs is not None and type(fs) is not type(remote_fs):
                raise ValueError(f"{spec}: all shard URIs must use one filesystem")
            remote_fs = fs
            files += _expand_remote(fs, path, spec)
            continue
        if spec.startswith("file://"):
            spec = spec[len("file://"):]
        if os.path.isdir(spec):
            found = sorted(glob.glob(os.path.join(spec, "*.parquet")))
        else:
            found = sorted(glob.glob(spec))
        if not found:
            raise NoShardsError(f"{spec}: no Parquet shards match")
        files += found
    if remote_fs is not None and any(not _is_uri(str(s)) for s in specs):
        raise ValueError("shard specs mix local paths and URIs; one dataset reads through one filesystem")
    return sorted(dict.fromkeys(files)), remote_fs


def _expand_remote(fs: pafs.FileSystem, path: str, spec: str) -> list[str]:
    if any(ch in path for ch in "*?["):
        base = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        found = sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path))
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path))
            found = sorted(i.path for i in infos if i.path.endswith(".parquet"))
        elif info.type == pafs.FileType.File:
            found = [path]
        else:
            found = []
    if not found:
        raise NoShardsError(f"{spec}: no Parquet shards match")
    return found


@dataclass(frozen=True)
class ShardSet:
    files: tuple[str, ...]
    filesystem: pafs.FileSystem | None
    meta: DatasetMeta
    num_rows: int
    # (file, row group index, rows) of every row group: the units data tasks read.
    row_groups: tuple[tuple[str, int, int], ...] = ()
    # A hash of every file's name and Parquet footer (row groups, sizes, offsets, column statistics): a
    # rewritten or replaced shard changes it, even at the same size. See ``footer_fingerprint``.
    fingerprint: str = ""

    @property
    def attributes(self):
        return self.meta.attributes


def footer_fingerprint(named_footers: list[tuple[str, dict]]) -> str:
    """Hash of (file name, footer as a dict) pairs. Names, not paths: the same shards copied elsewhere (a
    bucket, another node's mount) are the same data."""
    text = json.dumps(sorted((os.path.basename(name), footer) for name, footer in named_footers),
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_label_ranges(path: str, metadata, meta: DatasetMeta, filesystem=None) -> None:
    """Every ``attr_*`` value is 0 (N/A) or one of the attribute's 1..K classes; raise naming file, column and
    row otherwise. The footer's statistics decide without reading data; a row group without them (or one
    out of range) is read, that one column only, to find the row."""
    columns = metadata.schema.to_arrow_schema().names
    for attribute in meta.attributes:
        index = columns.index(attribute.column)
        high = attribute.num_classes
        offset = 0
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            stats = group.column(index).statistics
            trusted = stats is not None and stats.has_min_max and stats.null_count == 0
            if not (trusted and 0 <= stats.min and stats.max <= high):
                values = pq.ParquetFile(path, filesystem=filesystem).read_row_group(
                    g, columns=[attribute.column]).column(0)
                array = values.to_numpy(zero_copy_only=False)
                bad = np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False)) if values.null_count else []
                if len(bad):
                    raise ShardSchemaError(path, attribute.column, f"row {offset + int(bad[0])}: missing value "
                                                                   "(N/A is stored as 0)")
                bad = np.flatnonzero((array < 0) | (array > high))
                if len(bad):
                    row = int(bad[0])
                    raise ShardSchemaError(path, attribute.column, (
                        f"row {offset + row}: value {int(array[row])} is not 0 (N/A) or a class 1..{high} of "
                        f"{list(attribute.classes)} ({len(bad)} such row(s) in row group {g})"))
            offset += group.num_rows


def open_shards(specs: str | list[str], require_attributes: bool = False) -> ShardSet:
    """Resolve and validate every file's schema; raise before any job starts.

    All files must agree on their attributes (a labeled dataset cannot silently
    mix in files with other label sets).
    """
    files, fs = resolve_paths(specs)
    meta: DatasetMeta | None = None
    first = None
    rows = 0
    row_groups = []
    footers = []
    for path in files:
        try:
            metadata = pq.read_metadata(path, filesystem=fs)
        except (OSError, ValueError) as e:
            raise ShardSchemaError(path, None, f"not a readable Parquet file: {e}") from None
        file_meta = validate_schema(metadata.schema.to_arrow_schema(), path)
        check_label_ranges(path, metadata, file_meta, fs)
        footers.append((path, metadata.to_dict()))
        rows += metadata.num_rows
        row_groups += [(path, g, metadata.row_group(g).num_rows) for g in range(metadata.num_row_groups)]
        if meta is None:
            meta, first = file_meta, path
        elif file_meta.attributes != meta.attributes:
            raise ShardSchemaError(path, None, f"attributes {file_meta.attributes.names} differ from "
                                               f"{meta.attributes.names} in {first}")
    assert meta is not None
    if require_attributes and not len(meta.attributes):
        raise ShardSchemaError(files[0], None, "has no attribute columns (attr_*); a labeled dataset is needed here")
    return ShardSet(files=tuple(files), filesystem=fs, meta=meta, num_rows=rows, row_groups=tuple(row_groups),
                    fingerprint=footer_fingerprint(footers))


def read_table(path: str, columns: list[str] | None = None, filesystem: pafs.FileSystem | None = None):
    return pq.read_table(path, columns=columns, filesystem=filesystem)


def stored_size(shards: ShardSet, sample: int = 256) -> tuple[int, int] | None:
    """Median stored (width, height) of the first ``sample`` crops of the first shard, from their image headers
    (nothing is decoded): a detector's crops are stored at their own size, the synthetic default's at the
    training size."""
    parquet = pq.ParquetFile(shards.files[0], filesystem=shards.filesystem)
    for batch in parquet.iter_batches(batch_size=sample, columns=[IMAGE]):
        return median_size(batch.column(IMAGE).to_pylist())
    return None
