import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from patchray.shards import PARSE27K, AttributeSet, CropRecord, DatasetMeta, ShardSchemaError, ShardWriter, open_shards
from patchray.shards.schema import METADATA_KEY, arrow_schema, validate_schema

from helpers import jpeg_bytes


def _write(path, table):
    pq.write_table(table, path)
    return str(path)


def _good_table(meta=DatasetMeta("d", PARSE27K), n=2):
    schema = arrow_schema(meta)
    cols = {f.name: [None] * n for f in schema}
    cols["image"] = [jpeg_bytes()] * n
    cols["crop_id"] = [f"c{i}" for i in range(n)]
    for a in meta.attributes:
        cols[a.column] = [1] * n
    return pa.Table.from_pydict(cols, schema=schema)


def test_good_schema_validates_and_carries_attributes(tmp_path):
    path = _write(tmp_path / "a.parquet", _good_table())
    shards = open_shards(str(tmp_path / "*.parquet"), require_attributes=True)
    assert shards.num_rows == 2
    assert shards.attributes == PARSE27K
    assert shards.files == (path,)


def test_missing_image_column_names_file_and_column(tmp_path):
    table = _good_table().drop_columns(["image"])
    path = _write(tmp_path / "noimg.parquet", table)
    with pytest.raises(ShardSchemaError) as err:
        open_shards(path)
    assert err.value.column == "image" and "noimg.parquet" in str(err.value) and "missing" in str(err.value)


def test_wrong_type_is_refused(tmp_path):
    table = _good_table()
    i = table.schema.get_field_index("image")
    table = table.set_column(i, "image", pa.array(["not-bytes", "x"]))
    path = _write(tmp_path / "wrongtype.parquet", table)
    with pytest.raises(ShardSchemaError, match=r"wrongtype.parquet: column 'image': has type string"):
        open_shards(path)


def test_wrong_box_and_label_types_are_refused():
    meta = DatasetMeta("d", PARSE27K)
    schema = arrow_schema(meta)
    bad_box = schema.set(schema.get_field_index("box"), pa.field("box", pa.list_(pa.float32())))
    with pytest.raises(ShardSchemaError, match="'box'"):
        validate_schema(bad_box, "f.parquet")
    i = schema.get_field_index("attr_Gender")
    bad_label = schema.set(i, pa.field("attr_Gender", pa.string()))
    with pytest.raises(ShardSchemaError, match="'attr_Gender': has type string"):
        validate_schema(bad_label, "f.parquet")


def test_metadata_that_does_not_match_columns_is_refused():
    meta = DatasetMeta("d", PARSE27K)
    schema = arrow_schema(meta)
    # A declared attribute whose column is gone.
    dropped = schema.remove(schema.get_field_index("attr_HasTrolley"))
    with pytest.raises(ShardSchemaError, match="'attr_HasTrolley': declared in the attribute metadata but missing"):
        validate_schema(dropped, "f.parquet")
    # A column the metadata does not declare.
    extra = schema.append(pa.field("attr_Hat", pa.int16()))
    with pytest.raises(ShardSchemaError, match="'attr_Hat': attribute column is not declared"):
        validate_schema(extra, "f.parquet")
    # Attribute columns with no metadata at all.
    bare = schema.with_metadata({})
    with pytest.raises(ShardSchemaError, match="without attribute metadata"):
        validate_schema(bare, "f.parquet")
    # Metadata that is not JSON.
    broken = schema.with_metadata({METADATA_KEY: b"{nope"})
    with pytest.raises(ShardSchemaError, match="not JSON"):
        validate_schema(broken, "f.parquet")
    # Wrong format version.
    doc = meta.to_dict() | {"format_version": 99}
    with pytest.raises(ShardSchemaError, match="format_version 99"):
        validate_schema(schema.with_metadata({METADATA_KEY: json.dumps(doc).encode()}), "f.parquet")


def test_files_with_different_attributes_are_refused_together(tmp_path):
    _write(tmp_path / "a.parquet", _good_table())
    other = AttributeSet(tuple(a for a in PARSE27K if a.name != "Gender"))
    _write(tmp_path / "b.parquet", _good_table(DatasetMeta("d", other)))
    with pytest.raises(ShardSchemaError, match=r"b.parquet: .*differ"):
        open_shards(str(tmp_path))


def test_unlabeled_shards_refused_where_labels_are_needed(tmp_path):
    with ShardWriter(tmp_path, DatasetMeta("u", AttributeSet())) as w:
        w.add(CropRecord(image=jpeg_bytes(), crop_id="a"))
    with pytest.raises(ShardSchemaError, match="no attribute columns"):
        open_shards(str(tmp_path), require_attributes=True)
    assert open_shards(str(tmp_path)).num_rows == 1


def test_not_parquet_is_a_clear_error(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"hello")
    with pytest.raises(ShardSchemaError, match="junk.parquet: not a readable Parquet file"):
        open_shards(str(tmp_path))
