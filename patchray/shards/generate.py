"""Writing the synthetic pedestrian dataset to shards, rendered in parallel processes.

Layout under ``out``::

    unlabeled/unlabeled-train-00000.parquet ...   the "detector boxes" for pretraining
    labeled/labeled-{train,val,test}-00000.parquet the attribute task (PARSE-27k's ten)
    summary.json                                   what was written (the last file to appear)

Like PARSE-27k, labeled crops are split by sequence: train {1,4,5}, val {2,7,8},
test {3,6}; here the sequences are assigned round-robin so that train gets half
the labels and val and test a quarter each. Every crop is a pure function of
(seed, index), so the output does not depend on the number of processes.

Like every shard-producing run, the new files are staged inside ``out`` and published at the end
(``writer.StagedOutput``): a run that fails or is interrupted leaves ``out`` with the dataset it held, and
``--overwrite`` replaces only that dataset's own files.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from patchray.shards.attributes import PARSE27K, AttributeSet
from patchray.shards.images import encode_image
from patchray.shards.report import RunReport
from patchray.shards.schema import DatasetMeta
from patchray.shards.writer import CropRecord, ShardWriter, StagedOutput

SEQUENCE_CYCLE = (1, 4, 5, 1, 4, 5, 2, 7, 8, 3, 6, 3)
SPLIT_OF_SEQUENCE = {1: "train", 4: "train", 5: "train", 2: "val", 7: "val", 8: "val", 3: "test", 6: "test"}
UNLABELED_SEQUENCES = (1, 4, 5)
# Labeled crops draw from another index range than unlabeled ones, so the two sets never share a crop.
LABELED_INDEX_OFFSET = 1_000_000_000
FRAME_STEP = 15  # PARSE-27k annotates every 15th frame
CHUNK = 250
JPEG_QUALITY = 92


def _render_chunk(args: tuple[int, int, int, int, int]) -> list[tuple[int, bytes, dict]]:
    from patchray.shards.synthetic import render_crop  # imported in the worker process

    seed, start, count, width, height = args
    out = []
    for index in range(start, start + count):
        image, labels = render_crop(seed, index, width, height)
        out.append((index, encode_image(image, "JPEG", JPEG_QUALITY), labels))
    return out


def _chunks(seed, first, count, width, height):
    return [(seed, s, min(CHUNK, first + count - s), width, height) for s in range(first, first + count, CHUNK)]


def _render_all(pool, seed, first, count, width, height, label, progress):
    done, t0, step = 0, time.time(), max(count // 10, 1)
    next_report = step
    for chunk in pool.map(_render_chunk, _chunks(seed, first, count, width, height)):
        yield from chunk
        done += len(chunk)
        if progress and (done >= next_report or done == count):
            rate = done / max(time.time() - t0, 1e-9)
            print(f"  {label}: {done}/{count} crops ({rate:.0f}/s)", flush=True)
            next_report += step


def generate_synthetic(out: str | os.PathLike, num_crops: int = 20000, labeled: int = 8000, seed: int = 0, *,
                       width: int = 100, height: int = 200, workers: int | None = None, overwrite: bool = False,
                       rows_per_shard: int = 5000, progress: bool = True) -> RunReport:
    if num_crops < 0 or labeled < 0:
        raise ValueError("--num-crops and --labeled must be >= 0")
    out = Path(out)
    output = StagedOutput(out, overwrite, folders=("unlabeled", "labeled"))
    report = RunReport(command=f"synthetic (seed {seed})", out_dir=str(out))
    report.given("rendered_crops", num_crops + labeled)
    workers = workers or min(os.cpu_count() or 1, 8)
    try:
        # spawn, not fork: the caller may already hold torch or Ray threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            writer = ShardWriter(out / "unlabeled", DatasetMeta("synthetic-unlabeled", AttributeSet()),
                                 "unlabeled", rows_per_shard=rows_per_shard, output=output)
            for index, data, _ in _render_all(pool, seed, 0, num_crops, width, height, "unlabeled", progress):
                sequence = UNLABELED_SEQUENCES[index % len(UNLABELED_SEQUENCES)]
                frame = 1 + FRAME_STEP * (index // len(UNLABELED_SEQUENCES))
                _add(writer, report, CropRecord(image=data, crop_id=f"u{index:07d}", source=f"synthetic-seq{sequence}",
                                                frame=frame, split="train"))
            report.files += writer.close()
            writer = ShardWriter(out / "labeled", DatasetMeta("synthetic-parse27k", PARSE27K), "labeled",
                                 rows_per_shard=rows_per_shard, output=output)
            for index, data, labels in _render_all(pool, seed, LABELED_INDEX_OFFSET, labeled, width, height,
                                                   "labeled", progress):
                i = index - LABELED_INDEX_OFFSET
                sequence = SEQUENCE_CYCLE[i % len(SEQUENCE_CYCLE)]
                frame = 1 + FRAME_STEP * (i // len(SEQUENCE_CYCLE))
                _add(writer, report, CropRecord(image=data, crop_id=f"l{i:07d}", source=f"synthetic-seq{sequence}",
                                                frame=frame, split=SPLIT_OF_SEQUENCE[sequence], labels=labels))
            report.files += writer.close()
        report.save(output.folder(out))  # summary.json, published last: its presence means "complete"
        output.publish()
    except BaseException:
        output.discard()
        raise
    return report


def _add(writer: ShardWriter, report: RunReport, record: CropRecord) -> None:
    reason = writer.add(record)
    if reason:  # cannot happen for generated data; counted all the same rather than lost
        report.skip(reason, record.crop_id)
    else:
        report.written += 1
