"""The part every detector-output ingest shares: load a frame once, cut its boxes, write, count."""
from __future__ import annotations

import os
import reprlib
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patchray.shards.images import BadImage, encode_image, open_image, to_rgb
from patchray.shards.ingest.boxes import (
    Box,
    CropOptions,
    ReferenceCrop,
    check_box,
    crop_size_reason,
    filter_reason,
    make_crop,
)
from patchray.shards.report import RunReport
from patchray.shards.writer import CropRecord, ShardWriter

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Detection:
    box: Box
    score: float | None
    crop_id: str
    where: str  # "file:line" or "file#annotation", for messages
    labels: dict[str, int] = field(default_factory=dict)  # attribute name -> stored value, for labeled data


@dataclass
class FrameJob:
    source: str
    frame: int | None
    where: str
    load: Callable[[], tuple[np.ndarray, str | None]]  # pixels, and the mode converted from (or None)
    detections: list[Detection] = field(default_factory=list)
    split: str | None = None  # the split of this frame's crops, where it is the frame's (PARSE-27k's sequences)


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 60


def brief(value) -> str:
    """A short repr of an untrusted value for messages: bounded in length and nesting depth."""
    return _BRIEF.repr(value)


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file. Raises FileNotFoundError if there is nothing at ``path``, and BadImage
    ``unreadable_file`` for anything else that cannot be read: a folder, a pipe or device (checked on the
    opened file, without blocking or reading), a dangling symbolic link, a permission error, a bad name."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if os.path.islink(path):
            raise BadImage("unreadable_file", "dangling symbolic link") from None
        raise
    except (OSError, ValueError) as e:  # ValueError: a NUL byte or an unencodable character in the name
        raise BadImage("unreadable_file", str(e)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, socket or device)"
            raise BadImage("unreadable_file", kind)
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            return f.read()
    except OSError as e:
        raise BadImage("unreadable_file", str(e)) from None
    finally:
        if fd >= 0:
            os.close(fd)


def load_image_file(path: Path) -> tuple[np.ndarray, str | None]:
    """RGB pixels of an image file; raises BadImage or FileNotFoundError."""
    image = open_image(read_image_file(path))
    rgb, converted = to_rgb(image)
    return np.asarray(rgb), (image.mode if converted else None)


def write_frame_jobs(jobs: Iterable[FrameJob], writer: ShardWriter, report: RunReport, options: CropOptions,
                     split: str | None = None, progress_every: int = 500, crop: ReferenceCrop | None = None) -> None:
    """Cut and write every detection; each lost box is counted under a reason. ``crop``: cut by that fixed
    rule instead of ``options``' context margin and height; a job's own ``split`` overrides ``split``."""
    frames_done = 0
    for job in jobs:
        frames_done += 1
        if progress_every and frames_done % progress_every == 0:
            print(f"  {frames_done} frames, {report.written} crops written, "
                  f"{sum(report.skipped.values())} skipped", flush=True)
        # Filters first: a frame whose boxes are all filtered out need not be decoded.
        kept = []
        for det in job.detections:
            reason = filter_reason(det.box, det.score, options)
            if reason:
                report.skip(reason, det.where)
            else:
                kept.append(det)
        if not kept:
            continue
        try:
            pixels, converted_from = job.load()
        except FileNotFoundError as e:
            for det in kept:
                report.skip("missing_frame", det.where, str(e))
            continue
        except BadImage as e:
            for det in kept:
                report.skip(e.reason, det.where, f"{job.where}: {e.detail}")
            continue
        if converted_from:
            report.convert(f"{converted_from}->RGB")
        height, width = pixels.shape[:2]
        for det in kept:
            reason = check_box(det.box, width, height) or (crop.size_reason(det.box) if crop is not None
                                                           else crop_size_reason(det.box, options))
            if reason:
                report.skip(reason, det.where, f"box {tuple(float(f'{v:.6g}') for v in det.box)} in {width}x{height}")
                continue
            image = crop.cut(pixels, det.box) if crop is not None else make_crop(pixels, det.box, options)
            record = CropRecord(image=encode_image(image), crop_id=det.crop_id, source=job.source, frame=job.frame,
                                box=det.box, score=det.score, split=job.split or split, labels=det.labels)
            reason = writer.add(record)
            if reason:
                report.skip(reason, det.where, det.crop_id)
            else:
                report.written += 1
