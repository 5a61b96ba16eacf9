"""``jobs/make_shards.py``: synthetic pedestrians, crops from MOT / COCO detections or a crop folder, or PARSE-27k."""
from __future__ import annotations

import argparse
import sys

from patchray.shards.attributes import AttributeSet
from patchray.shards.generate import generate_synthetic
from patchray.shards.ingest import (
    CocoFormatError,
    CropOptions,
    LabelsFormatError,
    ingest_coco,
    ingest_folder,
    ingest_mot,
)
from patchray.shards.ingest.boxes import ReferenceCrop
from patchray.shards.ingest.coco import check_images_dir, load_coco
from patchray.shards.ingest.folder import check_crops_dir, load_labels
from patchray.shards.ingest.mot import check_mot_inputs
from patchray.shards.ingest.parse27k import ORIENTATIONS, ingest_parse27k, load_parse27k
from patchray.shards.report import RunReport
from patchray.shards.schema import SPLITS, DatasetMeta
from patchray.shards.writer import (
    DEFAULT_ROWS_PER_SHARD,
    OutputExistsError,
    ShardWriter,
    StagedOutput,
    check_output_dir,
    safe_text,
)


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder for the shards")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    p.add_argument("--rows-per-shard", type=int, default=DEFAULT_ROWS_PER_SHARD)


def _add_ingest_args(p: argparse.ArgumentParser, boxes: bool = True) -> None:
    _add_output_args(p)
    p.add_argument("--name", default=None, help="dataset name recorded in the metadata (default: the --out folder)")
    p.add_argument("--split", choices=SPLITS, default=None, help="split recorded for every crop")
    p.add_argument("--height", type=int, default=None, help="rescale crops to this height; default: own size")
    if boxes:
        p.add_argument("--source", default=None, help="source name recorded for every crop")
        p.add_argument("--context", type=float, default=0.0,
                       help="enlarge boxes by this fraction of their size on each side")
        p.add_argument("--pad", choices=("zero", "edge"), default="zero", help="fill where a box leaves the frame")
        p.add_argument("--min-score", type=float, default=None)
        p.add_argument("--min-height", type=float, default=0.0, help="minimum box height in source pixels")
        p.add_argument("--every", type=int, default=1, help="keep every N-th frame")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make_shards.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synthetic", help="render the embedded synthetic pedestrian dataset")
    _add_output_args(p)
    p.add_argument("--num-crops", type=int, default=20000, help="unlabeled crops (the pretraining data)")
    p.add_argument("--labeled", type=int, default=8000, help="labeled crops, split train/val/test by sequence")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--height", type=int, default=200)

    p = sub.add_parser("mot", help="crops from MOTChallenge-format boxes over frames or a video")
    frames = p.add_mutually_exclusive_group(required=True)
    frames.add_argument("--frames", help="folder of frames named by number (000001.jpg, 1-based)")
    frames.add_argument("--video", help="video file (needs PyAV: pip install 'patchray[video]')")
    p.add_argument("--boxes", required=True, help="MOT text file: frame,id,x,y,w,h,conf,...")
    _add_ingest_args(p)

    p = sub.add_parser("coco", help="person crops from a COCO-style JSON")
    p.add_argument("--images", required=True, help="folder the JSON's file_name entries are relative to")
    p.add_argument("--annotations", required=True, help="COCO JSON (annotations or detection results)")
    _add_ingest_args(p)

    p = sub.add_parser("folder", help="a folder of ready-made crops, optionally with attribute labels")
    p.add_argument("--crops", required=True, help="folder of crop images (searched recursively)")
    p.add_argument("--labels", default=None, help="CSV: crop_id (or file) column, then one column per attribute")
    p.add_argument("--attributes", default=None,
                   help="JSON list of attribute definitions (or a dataset.json) fixing class order and mirror rules")
    _add_ingest_args(p, boxes=False)

    p = sub.add_parser("parse27k", help="labeled crops of PARSE-27k (the paper's benchmark) from its own release")
    p.add_argument("--root", required=True,
                   help="the PARSE-27k folder: annotations.sqlite3 and sequences/<sequence>/<frame>")
    p.add_argument("--db", default=None, help="the annotation database (default: ROOT/annotations.sqlite3)")
    p.add_argument("--orientation", choices=ORIENTATIONS, default="both",
                   help="Orientation (4-way), Orientation8 (8-way) or both as attributes")
    p.add_argument("--width", type=int, default=64, help="width of the window around the box, before padding")
    p.add_argument("--height", type=int, default=128, help="height the box is scaled to, before padding")
    p.add_argument("--padding", type=int, default=32, help="context added on every side (crop: 128 x 192 px)")
    p.add_argument("--pad", choices=("zero", "edge"), default="zero", help="fill where a crop leaves the frame")
    _add_output_args(p)
    p.add_argument("--name", default=None, help="dataset name recorded in the metadata (default: the --out folder)")
    return parser


def _crop_options(args) -> CropOptions:
    return CropOptions(context=getattr(args, "context", 0.0), pad=getattr(args, "pad", "zero"), height=args.height,
                       min_score=getattr(args, "min_score", None), min_height=getattr(args, "min_height", 0.0),
                       every=getattr(args, "every", 1))


def _check_inputs(args, report: RunReport):
    """Read and check every input before the output folder is touched: a missing folder, a file that does not
    parse, stops here (exit code 2) and the dataset already in --out stays as it is. Returns what was loaded."""
    if args.command == "mot":
        check_mot_inputs(args.boxes, args.frames, args.video)
        return None
    if args.command == "coco":
        check_images_dir(args.images)
        return load_coco(args.annotations)
    if args.command == "parse27k":
        crop = ReferenceCrop(args.width, args.height, args.padding, args.pad)
        return load_parse27k(args.root, args.db, args.orientation), crop
    check_crops_dir(args.crops)
    return load_labels(args.labels, args.attributes, report) if args.labels else None


def run(args) -> RunReport:
    """One ``make_shards.py`` command. The new shards are staged inside --out and published only when the
    run completes (see ``StagedOutput``); a failed, interrupted or killed run leaves --out as it was."""
    if args.command == "synthetic":
        return generate_synthetic(args.out, args.num_crops, args.labeled, args.seed, width=args.width,
                                  height=args.height, workers=args.workers, overwrite=args.overwrite,
                                  rows_per_shard=args.rows_per_shard)
    options = _crop_options(args) if args.command != "parse27k" else CropOptions()
    out = check_output_dir(args.out, args.overwrite)
    name = args.name or out.resolve().name
    report = RunReport(command=args.command, out_dir=str(out))
    loaded = _check_inputs(args, report)
    output = StagedOutput(out, args.overwrite)
    try:
        def new_writer(attributes: AttributeSet) -> ShardWriter:
            return ShardWriter(out, DatasetMeta(safe_text(name), attributes), "crops",
                               rows_per_shard=args.rows_per_shard, output=output)

        if args.command == "folder":
            writer = ingest_folder(args.crops, new_writer, report, options, labels=loaded,
                                   attributes_file=args.attributes, split=args.split)
        elif args.command == "parse27k":
            index, crop = loaded
            writer = new_writer(index.attributes)
            ingest_parse27k(index, writer, report, crop)
        else:
            writer = new_writer(AttributeSet())
            if args.command == "mot":
                ingest_mot(args.boxes, writer, report, options, frames=args.frames, video=args.video,
                           source=args.source, split=args.split)
            else:
                ingest_coco(args.annotations, args.images, writer, report, options, source=args.source,
                            split=args.split, doc=loaded)
        report.files += writer.close()
        report.save(output.folder(out))  # summary.json: staged with the shards, published last
        output.publish()
    except BaseException:
        output.discard()
        raise
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (OutputExistsError, CocoFormatError, LabelsFormatError, ValueError, OSError) as e:
        # OSError: an input that is missing (FileNotFoundError), a folder, unreadable...
        print(f"error: {safe_text(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {safe_text(str(args.out))} keeps the dataset it held", file=sys.stderr)
        return 130
    print(report.format())
    return 0
