import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import jpeg_bytes

from patchray.shards import PARSE27K, AttributeSet, CropRecord, DatasetMeta, ShardSchemaError, ShardWriter, open_shards
from patchray.shards.schema import METADATA_KEY, arrow_schema, validate_schema


def _write(path, table):
    pq.write_table(table, path)
    return str(path)


GOOD_META = DatasetMeta("d", PARSE27K)


def _good_table(meta=GOOD_META, n=2):
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


@pytest.mark.parametrize("raw, problem", [
    (b"[1, 2]", "must be a JSON object, got list"),
    (b'"text"', "must be a JSON object, got str"),
    (json.dumps({"format_version": 1, "attributes": ["Gender"]}).encode(), "attribute metadata is invalid"),
    (json.dumps({"format_version": 1, "attributes": [{"name": "G", "classes": 5}]}).encode(),
     "attribute metadata is invalid"),
    (b"\xff\xfe not utf-8", "not JSON"),
])
def test_malformed_metadata_stops_with_the_file_named(tmp_path, raw, problem):
    table = _good_table(DatasetMeta("d", AttributeSet()))
    path = _write(tmp_path / "meta.parquet", table.replace_schema_metadata({METADATA_KEY: raw}))
    with pytest.raises(ShardSchemaError, match=problem) as err:
        open_shards(path)
    assert "meta.parquet" in str(err.value)


@pytest.mark.parametrize("statistics", [True, False])
def test_label_values_outside_the_attribute_classes_are_refused_naming_file_column_and_row(tmp_path, statistics):
    meta = DatasetMeta("d", PARSE27K)
    table = _good_table(meta, n=6)
    gender = table.schema.get_field_index("attr_Gender")  # classes: male, female -> values 0..2
    path = str(tmp_path / "labels.parquet")
    pq.write_table(table.set_column(gender, table.schema.field(gender), pa.array([0, 1, 2, 2, 3, 1], pa.int16())),
                   path, write_statistics=statistics, row_group_size=4)
    with pytest.raises(ShardSchemaError, match=r"labels.parquet: column 'attr_Gender': row 4: value 3 is not 0"):
        open_shards(path)
    pq.write_table(table.set_column(gender, table.schema.field(gender), pa.array([0, 1, 2, -1, 1, 1], pa.int16())),
                   path, write_statistics=statistics, row_group_size=4)
    with pytest.raises(ShardSchemaError, match=r"row 3: value -1"):
        open_shards(path)
    pq.write_table(table, path, write_statistics=statistics)  # every value in range: accepted
    assert open_shards(path).num_rows == 6


def test_fingerprint_follows_content_not_size_or_place(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    table = _good_table(n=3)
    pq.write_table(table, tmp_path / "a" / "s.parquet")
    pq.write_table(table, tmp_path / "b" / "s.parquet")
    same_place = open_shards(str(tmp_path / "a"))
    assert same_place.fingerprint == open_shards(str(tmp_path / "b")).fingerprint  # a copy is the same data
    ids = table.schema.get_field_index("crop_id")
    rewritten = table.set_column(ids, table.schema.field(ids), pa.array(["d0", "d1", "d2"]))  # same sizes, other rows
    pq.write_table(rewritten, tmp_path / "b" / "s.parquet")
    assert (tmp_path / "a" / "s.parquet").stat().st_size == (tmp_path / "b" / "s.parquet").stat().st_size
    assert open_shards(str(tmp_path / "b")).fingerprint != same_place.fingerprint
