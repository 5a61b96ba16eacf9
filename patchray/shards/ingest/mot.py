"""Ingest MOTChallenge-style detections: ``frame, id, x, y, w, h, conf, ...`` per line, frames 1-based.

Frames come from a folder of images named by number (``000001.jpg``) or from a
video file (decoded with PyAV, the optional ``video`` extra).
"""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from patchray.shards.images import BadImage
from patchray.shards.ingest.boxes import CropOptions
from patchray.shards.ingest.common import IMAGE_SUFFIXES, Detection, FrameJob, load_image_file, write_frame_jobs
from patchray.shards.report import RunReport
from patchray.shards.writer import ShardWriter

MIN_FIELDS = 6  # frame, id, x, y, w, h; confidence and the 3D fields are optional
_FRAME_FILE = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


class _BadField(ValueError):
    pass


def _parse_line(fields: list[str]) -> tuple[int, int, tuple, float | None]:
    """frame, track, box, score of one line's fields; ValueError with the reason if they are not that."""
    frame_value, track_value = float(fields[0]), float(fields[1])
    if not (math.isfinite(frame_value) and 1 <= frame_value < 2.0 ** 63 and frame_value == int(frame_value)):
        raise _BadField(f"frame {fields[0]!r} is not a 1-based frame number")
    if not math.isfinite(track_value):
        raise _BadField(f"id {fields[1]!r} is not a finite number")
    box = tuple(float(v) for v in fields[2:6])
    score = float(fields[6]) if len(fields) > 6 and fields[6] != "" else None
    if score is not None and not math.isfinite(score):
        score = None
    return int(frame_value), int(track_value), box, score


def parse_mot(path: str | os.PathLike, source: str, report: RunReport) -> dict[int, list[Detection]]:
    """Detections by frame. A malformed line is counted with its file and line number and skipped.

    Every line that is not blank or a ``#`` comment is one input (``report.inputs["box_lines"]``).

    Crop ids: ``<source>-f<frame>-id<track>`` for a box with a track id (0 or more), so that one id twice in a
    frame is a ``duplicate_crop_id``; ``<source>-f<frame>-det<n>`` for a box without one (a negative id: the
    ``-1`` of MOTChallenge's det/det.txt and of most detectors' output), n = its place (1-based) among the
    frame's boxes in the file, so that every detection of a frame is kept.
    """
    by_frame: dict[int, list[Detection]] = defaultdict(list)
    name = os.fspath(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = f"{name}:{lineno}"
            report.given("box_lines")
            fields = [p.strip() for p in text.replace(";", ",").split(",")]
            if len(fields) < MIN_FIELDS:
                report.skip("malformed_line", where,
                            f"expected at least {MIN_FIELDS} comma-separated fields, got {len(fields)}")
                continue
            try:
                frame, track, box, score = _parse_line(fields)
            except _BadField as e:
                report.skip("malformed_line", where, str(e))
                continue
            except ValueError as e:
                report.skip("malformed_line", where, f"not a number: {e}")
                continue
            boxes_of_frame = by_frame[frame]
            crop_id = (f"{source}-f{frame:06d}-id{track}" if track >= 0 else
                       f"{source}-f{frame:06d}-det{len(boxes_of_frame) + 1}")
            boxes_of_frame.append(Detection(box=box, score=score, crop_id=crop_id, where=where))
    return dict(by_frame)


def index_frames(frames_dir: str | os.PathLike) -> dict[int, Path]:
    """Frame number -> image file, for files named by their number (any zero padding)."""
    index = {}
    for p in sorted(Path(frames_dir).iterdir()):  # sorted: of two files for one frame, the same one each run
        if p.suffix.lower() in IMAGE_SUFFIXES and _FRAME_FILE.fullmatch(p.stem):
            index.setdefault(int(p.stem), p)
    return index


def _skip_every(by_frame: dict[int, list[Detection]], options: CropOptions, report: RunReport) -> list[int]:
    frames = []
    for frame in sorted(by_frame):
        if (frame - 1) % options.every:
            for det in by_frame[frame]:
                report.skip("not_every_nth_frame", det.where)
        else:
            frames.append(frame)
    return frames


def frame_jobs_from_folder(by_frame, frames_dir, source, options, report) -> Iterator[FrameJob]:
    index = index_frames(frames_dir)
    for frame in _skip_every(by_frame, options, report):
        path = index.get(frame)
        if path is None:
            def load(frame=frame):
                raise FileNotFoundError(f"no image for frame {frame} in {frames_dir}")
        else:
            def load(path=path):
                return load_image_file(path)
        yield FrameJob(source=source, frame=frame, where=str(path or frames_dir), load=load,
                       detections=by_frame[frame])


def frame_jobs_from_video(by_frame, video, source, options, report) -> Iterator[FrameJob]:
    try:
        import av
    except ImportError:
        raise SystemExit("--video needs PyAV: pip install 'patchray[video]' (or pip install av)") from None
    wanted = set(_skip_every(by_frame, options, report))
    last = max(wanted, default=0)
    failure, number = None, 0
    try:
        container = av.open(os.fspath(video))
    except Exception as e:  # PyAV raises its own error types (and OSError, ValueError) on a bad file
        container, failure = None, f"{video}: {type(e).__name__}: {e}"
    if container is not None:
        with container:
            frames = container.decode(video=0)
            while wanted and number < last:
                try:
                    decoded = next(frames)
                    number += 1
                    pixels = decoded.to_ndarray(format="rgb24") if number in wanted else None
                except StopIteration:
                    break
                except Exception as e:  # a damaged stream: the boxes of the frames not reached are counted
                    failure = f"{video}: decoding stopped after frame {number}: {type(e).__name__}: {e}"
                    break
                if pixels is not None:
                    wanted.discard(number)
                    yield FrameJob(source=source, frame=number, where=f"{video}#frame{number}",
                                   load=lambda pixels=pixels: (np.ascontiguousarray(pixels), None),
                                   detections=by_frame[number])
    for number in sorted(wanted):  # boxes for frames past the end of the video, or past a decoding error
        def load(number=number):
            if failure is not None:
                raise BadImage("unreadable_file", failure)
            raise FileNotFoundError(f"{video} has fewer than {number} frames")
        yield FrameJob(source=source, frame=number, where=f"{video}#frame{number}", load=load,
                       detections=by_frame[number])


def check_mot_inputs(boxes, frames=None, video=None) -> None:
    """Stop before any output is touched if an input is missing or unreadable (FileNotFoundError, ValueError)."""
    if (frames is None) == (video is None):
        raise ValueError("give exactly one of --frames DIR or --video FILE")
    if not Path(boxes).is_file():
        raise FileNotFoundError(f"--boxes {boxes}: no such file" if not Path(boxes).exists() else
                                f"--boxes {boxes}: not a file")
    with open(boxes, "rb") as f:  # readable (a permission error stops here, not after the output is prepared)
        f.read(1)
    if frames is not None:
        if not Path(frames).is_dir():
            raise FileNotFoundError(f"--frames {frames}: not a folder")
        os.listdir(frames)
    if video is not None:
        if not Path(video).is_file():
            raise FileNotFoundError(f"--video {video}: no such file")
        try:
            import av
        except ImportError:
            raise SystemExit("--video needs PyAV: pip install 'patchray[video]' (or pip install av)") from None
        try:
            with av.open(os.fspath(video)) as container:
                has_video = bool(container.streams.video)
        except Exception as e:
            raise ValueError(f"--video {video}: not a readable video ({type(e).__name__}: {e})") from None
        if not has_video:
            raise ValueError(f"--video {video}: has no video stream")


def ingest_mot(boxes: str | os.PathLike, writer: ShardWriter, report: RunReport, options: CropOptions, *,
               frames: str | os.PathLike | None = None, video: str | os.PathLike | None = None,
               source: str | None = None, split: str | None = None) -> None:
    check_mot_inputs(boxes, frames, video)
    source = source or Path(frames or video).resolve().name.rsplit(".", 1)[0]
    if frames is not None and Path(frames).name == "img1":  # MOTChallenge layout: SEQ/img1/000001.jpg
        source = Path(frames).resolve().parent.name if source == "img1" else source
    by_frame = parse_mot(boxes, source, report)
    jobs = (frame_jobs_from_folder(by_frame, frames, source, options, report) if frames is not None
            else frame_jobs_from_video(by_frame, video, source, options, report))
    write_frame_jobs(jobs, writer, report, options, split)
