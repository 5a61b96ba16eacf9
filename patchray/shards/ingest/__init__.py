"""Ingest from real detector output: MOTChallenge boxes, COCO JSON, folders of crops; and PARSE-27k."""
from patchray.shards.ingest.boxes import CropOptions
from patchray.shards.ingest.coco import CocoFormatError, ingest_coco
from patchray.shards.ingest.folder import LabelsFormatError, ingest_folder
from patchray.shards.ingest.mot import ingest_mot, parse_mot
from patchray.shards.ingest.parse27k import ingest_parse27k, load_parse27k

__all__ = ["CropOptions", "CocoFormatError", "ingest_coco", "LabelsFormatError", "ingest_folder", "ingest_mot",
           "parse_mot", "ingest_parse27k", "load_parse27k"]
