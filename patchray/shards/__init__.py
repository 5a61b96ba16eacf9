"""The crop shard format: schema, reader/writer, synthetic data and ingest."""
from patchray.shards.attributes import NA, PARSE27K, Attribute, AttributeSet
from patchray.shards.reader import NoShardsError, ShardSet, open_shards, resolve_paths
from patchray.shards.schema import DatasetMeta, ShardSchemaError
from patchray.shards.writer import DATASET_JSON, CropRecord, OutputExistsError, ShardWriter

__all__ = [
    "NA", "PARSE27K", "Attribute", "AttributeSet", "NoShardsError", "ShardSet", "open_shards", "resolve_paths",
    "DatasetMeta", "ShardSchemaError", "DATASET_JSON", "CropRecord", "OutputExistsError", "ShardWriter",
]
