"""A property-based fuzz battery for ingest: random and hostile box lines (mot), JSON entries (coco), files,
names, images and label rows (folder), and images for the training decoders.

Every run must end without an exception, and account for every input it was given:
``written + skipped == input`` (``RunReport.unaccounted == 0``), with input counted by the test itself:

- mot: every line of the box file that is not blank or a ``#`` comment (after ``str.strip``);
- coco: every element of ``annotations`` except well-formed objects whose hashable ``category_id`` is not a
  person category, plus every element of ``images`` the test made unusable (not an object, no integer ``id``,
  no usable string ``file_name``, a ``frame_id`` that is not an int64, an ``id`` already used);
- folder: every non-folder entry below ``--crops`` (files, pipes, dangling links), plus every labels CSV
  record; a record attached to a crop counts as accounted (``label_rows_used``).

Deterministic (``derandomize=True``) and modest: the case counts are the ``max_examples`` below (printed at
the end of the module with ``-s``; the README's "Bad input" quotes their sum).
"""
from __future__ import annotations

import csv
import io
import json
import os
import struct
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from patchray.shards.cli import build_parser, main, run
from patchray.shards.decode import decode_crops
from patchray.shards.device_decode import decode_crops_on
from patchray.shards.images import BadImage, normalise_encoded, open_image, to_rgb
from patchray.shards.ingest.coco import _hashable

EXAMPLES = {"mot": 150, "coco": 150, "folder": 100, "labels_raw": 40, "images": 250}
CASES: Counter = Counter()
OUTCOMES: dict[str, Counter] = {}  # what the runs did, by path: "written" and every skip reason met
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
SKIP_REASONS_OF_DECODE = {"", "empty_image", "truncated_image", "unreadable_image", "image_too_large",
                          "unsupported_mode"}


# ---------------------------------------------------------------- images: valid bases, then damage

def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _gradient(width=40, height=30) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x * 6, y * 8, (x + y) * 3], -1).astype(np.uint8))


def _claiming(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a JPEG or PNG) with a header claiming another size."""
    out = bytearray(data)
    if out[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(out) and out[i] == 0xFF:
            if out[i + 1] in (0xC0, 0xC1, 0xC2):
                out[i + 5:i + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
                break
            i += 2 + struct.unpack(">H", out[i + 2:i + 4])[0]
    elif out[:4] == b"\x89PNG":
        out[16:24] = struct.pack(">II", width, height)
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    return bytes(out)


def _sideways_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: shown turned 90 degrees clockwise
    return exif.tobytes()


_BASE = _gradient()
BASES = [
    _encode(_BASE, "JPEG", quality=90),
    _encode(_BASE, "JPEG", progressive=True),
    _encode(_BASE.convert("L"), "JPEG"),
    _encode(_BASE.convert("CMYK"), "JPEG"),
    _encode(_BASE, "PNG"),
    _encode(_BASE.convert("RGBA"), "PNG"),
    _encode(_BASE.convert("P"), "PNG", transparency=0),
    _encode(_BASE.convert("LA"), "PNG"),
    _encode(_BASE.convert("1"), "PNG"),
    _encode(_BASE.convert("L").convert("I;16"), "PNG"),
    _encode(_BASE.convert("F"), "TIFF"),
    _encode(_BASE.convert("LAB"), "TIFF"),
    _encode(_BASE.convert("P"), "GIF"),
    _encode(_BASE, "BMP"),
    _encode(_BASE, "WEBP"),
    _encode(_BASE, "JPEG", exif=_sideways_exif()),  # a camera's photo stored sideways: folder ingest turns it
]
# claimed sizes: far over the limit, or small; never just under it (a 99 MP decode per case is no fuzzing)
SIZES = st.one_of(st.tuples(st.integers(0, 600), st.integers(0, 600)),
                  st.sampled_from([(65535, 65535), (12000, 10000), (100_000, 100_000), (10001, 10000),
                                   (2 ** 31 - 1, 2 ** 31 - 1), (70000, 1)]))


@st.composite
def images(draw) -> bytes:
    kind = draw(st.sampled_from(["base", "truncated", "flipped", "claiming", "random", "magic", "empty"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "magic":  # the start of a JPEG or PNG, then anything
        return draw(st.sampled_from([b"\xff\xd8", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM"])) + \
            draw(st.binary(max_size=300))
    if kind == "empty":
        return b""
    data = draw(st.sampled_from(BASES))
    if kind == "truncated":
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "flipped":
        out = bytearray(data)
        for position, value in draw(st.lists(st.tuples(st.integers(0, len(out) - 1), st.integers(0, 255)),
                                             min_size=1, max_size=6)):
            out[position] = value
        return bytes(out)
    if kind == "claiming":
        return _claiming(data, *draw(SIZES))
    return data


# ---------------------------------------------------------------- the inputs shared by every case

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    frames = root / "frames"  # 1..4 good (RGB, gray, alpha), then a folder, damaged, a bomb, a pipe, a dangling link
    frames.mkdir()
    frame = _gradient(64, 48)
    frame.save(frames / "000001.png")
    frame.convert("L").save(frames / "000002.jpg")
    frame.save(frames / "000003.jpg")
    frame.convert("RGBA").save(frames / "000004.png")
    (frames / "000005.jpg").mkdir()
    (frames / "000006.jpg").write_bytes(BASES[0][:200])
    (frames / "000007.png").write_bytes(_claiming(BASES[4], 100_000, 100_000))
    os.mkfifo(frames / "000008.jpg")
    (frames / "000009.jpg").symlink_to(root / "gone.jpg")
    images_dir = root / "images"  # the same files for coco (10 and above are missing)
    (images_dir / "sub").mkdir(parents=True)
    for name in os.listdir(frames):
        os.symlink(frames / name, images_dir / name)
    (root / "outside.png").write_bytes(BASES[4])
    yield {"root": root, "frames": frames, "images": images_dir}
    print(f"\nfuzz battery cases: {dict(CASES)}, total {sum(CASES.values())}")
    for path, outcomes in OUTCOMES.items():
        print(f"  {path}: {dict(sorted(outcomes.items()))}")


def _scratch(world, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=world["root"]))


def _check_published(out: Path, report) -> None:
    """The summary and dataset.json on disk say what the report says."""
    outcomes = OUTCOMES.setdefault(report.command, Counter())
    outcomes["written"] += report.written
    outcomes.update(report.skipped)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["crops_written"] == report.written and summary["unaccounted"] == 0
    assert json.loads((out / "dataset.json").read_text())["num_rows"] == report.written


OPTIONS = st.fixed_dictionaries({}, optional={
    "--context": st.sampled_from(["0", "0.1", "0.5", "3"]), "--height": st.sampled_from(["20", "200"]),
    "--min-score": st.sampled_from(["0.5", "-1"]), "--min-height": st.sampled_from(["0", "6"]),
    "--every": st.sampled_from(["1", "2"]), "--pad": st.sampled_from(["zero", "edge"]),
    "--split": st.sampled_from(["train", "val"])})


def _option_args(options: dict) -> list[str]:
    return [part for key, value in options.items() for part in (key, value)]


# ---------------------------------------------------------------- mot

NUMBER_TOKENS = ["1", "2", "3", "4", "0", "-1", "1.5", "2.0", "10", "-5", "64", "48", "1e30", "-1e30", "1e5",
                 "1e308", "1e400", "-1e400", "inf", "-inf", "nan", "NaN", "Infinity", "9" * 25,
                 "9223372036854775807", "9223372036854775808", "0x10", "1_000", "", " ", "abc", "\u0661", "\u00b2",
                 "\x00", "1e-320", "+3", " 7 ", "4.999999", "70000", "0.3"]
NO_NEWLINE = st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))
FIELD = st.one_of(st.sampled_from(NUMBER_TOKENS), st.floats().map(repr), st.integers(-10, 10).map(str),
                  st.text(alphabet=NO_NEWLINE, max_size=6))
HOSTILE = ["0", "-1", "-5", "-0", "1e30", "-1e30", "1e5", "70000", "1e400", "inf", "-inf", "nan", "0.3", "x", "",
           "9" * 25, "9223372036854775808", "64", "48", "100"]


@st.composite
def plausible_line(draw) -> str:
    """A good box line (frames 1..4 exist and are readable, 5..10 are not) with up to two fields made hostile."""
    fields = [draw(st.sampled_from(["1", "2", "3", "4", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"])),
              draw(st.sampled_from(["1", "2", "3", "4", "-1"])), draw(st.sampled_from(["0", "1", "10.5", "30"])),
              draw(st.sampled_from(["0", "1", "10", "20"])), draw(st.sampled_from(["8", "12", "30", "60"])),
              draw(st.sampled_from(["12", "20", "40", "47"])), draw(st.sampled_from(["0.9", "1", "0.4", ""]))]
    for position, token in draw(st.lists(st.tuples(st.integers(0, 6), st.sampled_from(HOSTILE)), max_size=2)):
        fields[position] = token
    return ",".join(fields + draw(st.sampled_from([[], ["-1", "-1", "-1"], ["1e400"]])))


PLAUSIBLE = plausible_line()
HOSTILE_LINE = st.one_of(st.lists(FIELD, max_size=11).map(",".join),
                 st.lists(FIELD, max_size=8).map(";".join), st.text(alphabet=NO_NEWLINE, max_size=40),
                 st.sampled_from(["", "   ", "# a comment", "#1,1,1,1,1,1", "\t\x0b\x0c", "\u2028", "\x85"]),
                 st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b))


def _weighted(common, rare, common_share=7):
    """``common`` in ``common_share`` of 10 draws, else ``rare`` (one_of would pick them evenly)."""
    return st.integers(0, 9).flatmap(lambda k: common if k < common_share else rare)


LINE = _weighted(PLAUSIBLE, HOSTILE_LINE)


def _box_line_count(lines) -> int:
    count = 0
    for line in lines:
        text = (line.decode("utf-8", "replace") if isinstance(line, bytes) else line).strip()
        count += bool(text) and not text.startswith("#")
    return count


@settings(FUZZ, max_examples=EXAMPLES["mot"])
@given(lines=st.lists(LINE, max_size=25), newline=st.sampled_from(["\n", "\r\n"]), options=OPTIONS)
def test_fuzz_mot(world, lines, newline, options):
    CASES["mot"] += 1
    case = _scratch(world, "mot-")
    boxes = case / "det.txt"
    boxes.write_bytes(newline.encode().join(line if isinstance(line, bytes) else line.encode() for line in lines))
    out = case / "out"
    report = run(build_parser().parse_args(["mot", "--frames", str(world["frames"]), "--boxes", str(boxes),
                                            "--out", str(out), *_option_args(options)]))
    given_lines = _box_line_count(lines)
    assert dict(report.inputs) == ({"box_lines": given_lines} if given_lines else {})
    assert report.written + sum(report.skipped.values()) == given_lines
    assert report.unaccounted == 0
    _check_published(out, report)


# ---------------------------------------------------------------- coco

def _json_values(max_leaves=6):
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                        st.sampled_from([10 ** 400, 2 ** 63, -1, 1e308, "1", "", "../x", "\ud800", "\x00"]))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=max_leaves)


JSON = _json_values()
GOOD_FILES = ["000001.png", "000002.jpg", "000003.jpg", "000004.png"] * 6 + [
              "000005.jpg", "000006.jpg", "000007.png", "000008.jpg", "000009.jpg", "missing.jpg",
              "sub", "", ".", "../outside.png", "/dev/zero", "sub/../000001.png", "sub/../../images/000001.png",
              "\udcff.jpg", "a\\b.jpg", "//etc/passwd", "../" * 30 + "dev/zero"]
NUMBERISH = st.one_of(st.integers(-10, 70), st.floats(), st.sampled_from([10 ** 400, 1e30, -1e30, 1e5, True]),
                      st.text(max_size=3), st.none())
BBOX = st.one_of(st.lists(NUMBERISH, min_size=4, max_size=4), st.lists(NUMBERISH, max_size=6),
                 st.sampled_from(["1234", {"x": 1}, None, 7]), JSON)


@st.composite
def coco_doc(draw):
    good_ids = draw(st.lists(st.integers(-5, 40), unique=True, max_size=8))
    entries, bad = [], 0
    for image_id in good_ids:
        entry = {"id": image_id, "file_name": draw(st.sampled_from(GOOD_FILES))}
        frame = draw(st.one_of(st.none(), st.integers(-(2 ** 63), 2 ** 63 - 1), st.just("absent")))
        if frame != "absent":
            entry["frame_id"] = frame
        entries.append(entry)
    for _ in range(draw(st.integers(0, 5))):
        bad += 1
        kind = draw(st.sampled_from(["not_object", "no_id", "no_file", "id_type", "file_type", "file_nul",
                                     "frame_type", "duplicate", "surrogate"]))
        if kind == "not_object":
            entries.append(draw(JSON.filter(lambda v: not isinstance(v, dict))))
        elif kind == "no_id":
            entries.append({"file_name": "000001.png"})
        elif kind == "no_file":
            entries.append({"id": 1000 + bad})
        elif kind == "id_type":
            entries.append({"id": draw(st.one_of(st.text(max_size=3), st.lists(st.integers(), max_size=2),
                                                 st.booleans(), st.floats(), st.none(),
                                                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))),
                            "file_name": "000001.png"})
        elif kind == "file_type":
            entries.append({"id": 1000 + bad, "file_name": draw(JSON.filter(lambda v: not isinstance(v, str)))})
        elif kind == "file_nul":
            entries.append({"id": 1000 + bad, "file_name": "000001.png\x00.jpg"})
        elif kind == "surrogate":
            entries.append({"id": 1000 + bad, "file_name": "\ud800.jpg"})
        elif kind == "frame_type":
            entries.append({"id": 1000 + bad, "file_name": "000001.png",
                            "frame_id": draw(st.one_of(st.text(max_size=3), st.floats(), st.booleans(),
                                                       st.just(2 ** 64), st.just(-(2 ** 63) - 1),
                                                       st.lists(st.integers(), max_size=2)))})
        elif good_ids:  # a repeated id: one of the two is refused
            entries.append({"id": draw(st.sampled_from(good_ids)), "file_name": "000002.jpg"})
        else:
            entries.append({"id": 2000 + bad})  # no file_name
    order = draw(st.permutations(range(len(entries))))
    id_pool = st.one_of(st.sampled_from(good_ids) if good_ids else st.nothing(), st.integers(-5, 50), JSON)
    annotation = st.fixed_dictionaries({}, optional={
        "id": st.one_of(st.integers(0, 30), JSON), "image_id": id_pool,
        "category_id": st.one_of(st.sampled_from([1, 1, 1, 3, 1.0, True, "1", "person", None]), JSON),
        "bbox": BBOX, "score": st.one_of(st.floats(0, 1), NUMBERISH, JSON), "iscrowd": st.one_of(st.just(0), JSON)})
    plausible = st.fixed_dictionaries(
        {"id": st.integers(0, 30), "image_id": st.sampled_from(good_ids) if good_ids else st.integers(0, 3),
         "category_id": st.just(1),
         "bbox": st.tuples(st.sampled_from([0, 1, 10.5, 30, 0, 1, 10.5, 30, -5, 63, 100, 1e30]),
                           st.sampled_from([0, 1, 10, 30, 0, 1, 10, 30, -5, 47, 1e30]),
                           st.sampled_from([8, 12, 30, 8, 12, 30, 0, -3, 0.3, 1e5, 70000, 1e30]),
                           st.sampled_from([12, 8, 40, 12, 8, 40, 1, 0, -3, 1e5, 1e30])).map(list)},
        optional={"score": st.one_of(st.floats(0, 1), st.sampled_from([float("nan"), float("inf"), 2])),
                  "iscrowd": st.sampled_from([0, 0, 0, 1])})
    annotations = draw(st.lists(_weighted(plausible, st.one_of(annotation, annotation, JSON), 6), max_size=14))
    categories = draw(st.sampled_from([None, [], [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
                                       [{"id": 1, "name": "Person"}, "junk", {"name": ["x"]}, {"id": [1]}]]))
    doc = {"images": [entries[i] for i in order], "annotations": annotations}
    if categories is not None:
        doc["categories"] = categories
    return doc, bad



def _annotation_count(annotations) -> int:
    persons = {1}
    return sum(not isinstance(a, dict) or not _hashable(a.get("category_id")) or a.get("category_id") in persons
               for a in annotations)


@settings(FUZZ, max_examples=EXAMPLES["coco"])
@given(doc_and_bad=coco_doc(), options=OPTIONS)
def test_fuzz_coco(world, doc_and_bad, options):
    CASES["coco"] += 1
    doc, bad_images = doc_and_bad
    case = _scratch(world, "coco-")
    ann = case / "ann.json"
    ann.write_text(json.dumps(doc))
    out = case / "out"
    report = run(build_parser().parse_args(["coco", "--images", str(world["images"]), "--annotations", str(ann),
                                            "--out", str(out), *_option_args(options)]))
    annotations = _annotation_count(doc["annotations"])
    assert report.inputs["annotations"] == annotations and report.inputs["bad_image_entries"] == bad_images
    assert report.written + sum(report.skipped.values()) == annotations + bad_images
    assert report.unaccounted == 0
    _check_published(out, report)


# ---------------------------------------------------------------- folder (and labels CSV)

NAMES = [b"a.jpg", b"b.png", b"\xff.jpg", b"x.JPG", b".jpg", b"..jpg", b"0002_c1s1_000451_03.jpg",
         b"0002_c1s1_99999999999999999999_03.jpg", b"sp ace.png", "\u00fc.png".encode(), b"\xe9t\xe9.webp",
         b"a.tiff", b"a.bmp", b"noext", b"n.txt", b"a.jpeg", b"deep\xff/a.jpg", b"deep\xff/x/b.png", b"a\\b.jpg",
         b"-1_c2s3_000001_01.png"]
KINDS = st.one_of(st.sampled_from(["folder", "pipe", "dangling", "text", "link_to_folder"]), images())
CELLS = st.one_of(st.sampled_from(["cap", "beanie", "1", "2", "99999", "40000", "32767", "\u00b2", "NA", "",
                                   "-1", " 3 ", "0", "9" * 50, "front", "left", "male", "N/A", "\udcff"]),
                  st.text(max_size=6).filter(lambda t: "\x00" not in t))
HEADERS = [["crop_id", "Hat"], ["file", "Hat", "Cap"], ["crop_id", "Orientation", "Gender"], ["Hat", "crop_id"]]


def _make_entry(crops: Path, name: bytes, kind) -> int:
    """Create one entry; the number of non-folder entries it adds (a folder holds one crop)."""
    path = os.path.join(os.fsencode(crops), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        return 0
    if kind == "folder":
        os.mkdir(path)
        with open(os.path.join(path, b"inner.jpg"), "wb") as f:
            f.write(BASES[0])
        return 1
    if kind == "pipe":
        os.mkfifo(path)
    elif kind == "dangling":
        os.symlink(b"/nonexistent/gone.jpg", path)
    elif kind == "link_to_folder":
        os.symlink(os.fsencode(crops), path)  # not followed: a folder, not a crop
        return 0
    elif kind == "text":
        with open(path, "wb") as f:
            f.write(b"not an image\n")
    else:
        with open(path, "wb") as f:
            f.write(kind)
    return 1


@st.composite
def labels_csv(draw, names: list[bytes]):
    header = draw(st.sampled_from(HEADERS))
    ids = [os.fsdecode(n) for n in names] + [os.fsdecode(n).rsplit(".", 1)[0] for n in names] + ["ghost"]
    rows = draw(st.lists(st.lists(CELLS, min_size=len(header) - 1, max_size=len(header) + 1), max_size=10))
    rows = [[draw(st.one_of(st.sampled_from(ids), CELLS)) if c in ("crop_id", "file") else cell
             for c, cell in zip(header, row)] + row[len(header):] for row in rows]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8", "surrogateescape"), len(rows)


@settings(FUZZ, max_examples=EXAMPLES["folder"])
@given(data=st.data(), options=OPTIONS)
def test_fuzz_folder(world, data, options):
    entries = data.draw(st.lists(st.tuples(st.sampled_from(NAMES), KINDS), max_size=8), label="entries")
    case = _scratch(world, "folder-")
    crops = case / "crops"
    crops.mkdir()
    files = sum(_make_entry(crops, name, kind) for name, kind in entries)
    args = ["folder", "--crops", str(crops), "--out", str(case / "out")]
    if "--height" in options:
        args += ["--height", options["--height"]]
    if "--split" in options:
        args += ["--split", options["--split"]]
    label_rows = 0
    if data.draw(st.booleans(), label="with labels"):
        text, label_rows = data.draw(labels_csv([n for n, _ in entries]), label="labels")
        (case / "labels.csv").write_bytes(text)
        args += ["--labels", str(case / "labels.csv")]
    CASES["folder"] += 1  # counted once every draw has succeeded: a rejected draw is no case
    report = run(build_parser().parse_args(args))
    assert report.inputs["crop_files"] == files and report.inputs["label_rows"] == label_rows
    assert report.written + sum(report.skipped.values()) + report.label_rows_used == files + label_rows
    assert report.unaccounted == 0
    _check_published(case / "out", report)


@settings(FUZZ, max_examples=EXAMPLES["labels_raw"])
@given(raw=st.one_of(st.binary(max_size=300),
                     st.lists(st.binary(max_size=40), max_size=8)
                     .map(lambda rows: b"crop_id,Hat\n" + b"\n".join(rows))))
def test_fuzz_labels_csv_bytes(world, raw, capsys):
    """Any bytes as a labels CSV: a clean refusal (exit 2, named file) or a run that accounts for every crop."""
    CASES["labels_raw"] += 1
    case = _scratch(world, "labels-")
    crops = case / "crops"
    crops.mkdir()
    (crops / "a.jpg").write_bytes(BASES[0])
    (case / "labels.csv").write_bytes(raw)
    code = main(["folder", "--crops", str(crops), "--labels", str(case / "labels.csv"), "--out", str(case / "out")])
    captured = capsys.readouterr()
    assert code in (0, 2)
    if code == 2:
        assert "labels.csv" in captured.err and "Traceback" not in captured.err
    else:
        summary = json.loads((case / "out" / "summary.json").read_text())
        assert summary["inputs"]["crop_files"] == 1 and summary["unaccounted"] == 0


# ---------------------------------------------------------------- images: ingest and training decode

@settings(FUZZ, max_examples=EXAMPLES["images"])
@given(data=images())
def test_fuzz_images(data):
    CASES["images"] += 1
    for step in (lambda: to_rgb(open_image(data)), lambda: normalise_encoded(data),
                 lambda: normalise_encoded(data, turn_upright=True)):
        try:
            step()
        except BadImage as e:
            assert e.reason in SKIP_REASONS_OF_DECODE
    pixels, reasons = decode_crops([data, BASES[0]], 20, 40)
    assert reasons[0] in SKIP_REASONS_OF_DECODE and reasons[1] == ""
    assert pixels.shape == (2, 40, 20, 3) and (reasons[0] == "" or pixels[0].max() == 0)
    # fitted to 8x10, the 40x30 bases decode at one of libjpeg's reduced scales: the same verdict on the same bytes
    small, small_reasons = decode_crops([data, BASES[0]], 8, 10)
    assert small_reasons == reasons and small.shape == (2, 10, 8, 3) and (reasons[0] == "" or small[0].max() == 0)
    on_device, device_reasons = decode_crops_on([data, BASES[0]], 20, 40, "cpu")
    assert device_reasons == reasons
