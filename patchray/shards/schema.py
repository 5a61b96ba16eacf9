"""The crop shard format: one Parquet row per person crop.

Columns (see README "Shard format"):
  image     binary           encoded JPEG or PNG of the crop, any size      required
  crop_id   string           unique within a dataset                        required
  source    string           video / sequence / image the crop came from
  frame     int64, nullable  frame number in ``source``
  box       float32[4], null x, y, w, h of the crop in the source image
  score     float32, null    detector confidence
  split     string, null     train / val / test
  attr_<n>  integer          one per attribute: 0 = N/A, 1..K = classes

Attribute class names travel inside every file (Parquet key-value metadata
under ``patchray.dataset``) and in ``dataset.json`` beside the shards.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from patchray.shards.attributes import COLUMN_PREFIX, AttributeSet

FORMAT_VERSION = 1
METADATA_KEY = b"patchray.dataset"
SPLITS = ("train", "val", "test")

IMAGE, CROP_ID, SOURCE, FRAME, BOX, SCORE, SPLIT = "image", "crop_id", "source", "frame", "box", "score", "split"

BOX_TYPE = pa.list_(pa.float32(), 4)

# Column -> (type written, predicate accepted on read, description for errors).
_CORE_COLUMNS = {
    IMAGE: (pa.binary(), lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), "binary"),
    CROP_ID: (pa.string(), lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string"),
    SOURCE: (pa.string(), lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string"),
    FRAME: (pa.int64(), pa.types.is_integer, "integer"),
    BOX: (BOX_TYPE, lambda t: (pa.types.is_fixed_size_list(t) and t.list_size == 4
                               and pa.types.is_floating(t.value_type)), "fixed_size_list<float>[4]"),
    SCORE: (pa.float32(), pa.types.is_floating, "float"),
    SPLIT: (pa.string(), lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string"),
}
REQUIRED_COLUMNS = (IMAGE, CROP_ID)


class ShardSchemaError(ValueError):
    """A shard does not follow the crop format. The message names the file and column."""

    def __init__(self, path: str, column: str | None, problem: str):
        self.path, self.column, self.problem = path, column, problem
        where = f"{path}: column {column!r}" if column else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class DatasetMeta:
    """What a shard says about the dataset it belongs to."""
    name: str
    attributes: AttributeSet

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "name": self.name, "attributes": self.attributes.to_list()}

    def to_metadata(self) -> dict[bytes, bytes]:
        return {METADATA_KEY: json.dumps(self.to_dict()).encode()}

    @classmethod
    def from_dict(cls, d: dict, where: str = "dataset metadata") -> DatasetMeta:
        if not isinstance(d, dict):
            raise ShardSchemaError(where, None, f"dataset metadata must be a JSON object, got {type(d).__name__}")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ShardSchemaError(where, None,
                                   f"format_version {version!r} is not supported (expected {FORMAT_VERSION})")
        try:
            attributes = AttributeSet.from_list(d.get("attributes", []))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ShardSchemaError(where, None, f"attribute metadata is invalid: {e}") from None
        return cls(name=str(d.get("name", "")), attributes=attributes)


def arrow_schema(meta: DatasetMeta) -> pa.Schema:
    fields = [pa.field(name, typ, nullable=name not in REQUIRED_COLUMNS) for name, (typ, _, _) in _CORE_COLUMNS.items()]
    fields += [pa.field(a.column, pa.int16(), nullable=False) for a in meta.attributes]
    return pa.schema(fields, metadata=meta.to_metadata())


def validate_schema(schema: pa.Schema, path: str) -> DatasetMeta:
    """Check one file's schema against the format; returns its dataset metadata.

    Raises ShardSchemaError naming ``path`` and the offending column.
    """
    names = schema.names
    for column in REQUIRED_COLUMNS:
        if column not in names:
            raise ShardSchemaError(path, column, f"required column is missing (columns present: {names})")
    for column, (_, accepts, description) in _CORE_COLUMNS.items():
        if column in names:
            typ = schema.field(column).type
            if not accepts(typ):
                raise ShardSchemaError(path, column, f"has type {typ}, expected {description}")

    raw = (schema.metadata or {}).get(METADATA_KEY)
    attr_columns = [n for n in names if n.startswith(COLUMN_PREFIX)]
    if raw is None:
        if attr_columns:
            raise ShardSchemaError(path, attr_columns[0],
                                   "attribute column without attribute metadata "
                                   f"(key {METADATA_KEY.decode()!r} is missing)")
        return DatasetMeta(name="", attributes=AttributeSet())
    try:
        doc = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise ShardSchemaError(path, None, f"metadata {METADATA_KEY.decode()!r} is not JSON: {e}") from None
    meta = DatasetMeta.from_dict(doc, where=path)

    declared = set(meta.attributes.columns)
    for column in attr_columns:
        if column not in declared:
            raise ShardSchemaError(path, column,
                                   f"attribute column is not declared in the metadata (declared: {sorted(declared)})")
        typ = schema.field(column).type
        if not pa.types.is_integer(typ):
            raise ShardSchemaError(path, column, f"has type {typ}, expected an integer (0 = N/A, 1..K)")
    for column in meta.attributes.columns:
        if column not in names:
            raise ShardSchemaError(path, column, "declared in the attribute metadata but missing from the file")
    return meta
