"""Turning detector boxes into crops: checks, context margin, padding, rescaling. Pure numpy/PIL."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from patchray.shards.images import MAX_JPEG_SIDE

PAD_MODES = ("zero", "edge")
# The pixel budget of one crop, after the context margin and again after rescaling to --height: 50 MP (a
# 7000 x 7000 crop, 150 MB of RGB) is far above any person, and far below what a hostile or broken box file
# (a 1e30 or 1e5 x 1e5 px box) would make ingest allocate. Larger boxes are skipped as ``box_too_large``. It is
# below ``images.MAX_IMAGE_PIXELS``, so every crop written can be decoded again in training.
MAX_CROP_PIXELS = 50_000_000
MAX_CROP_SIDE = MAX_JPEG_SIDE  # crops are stored as JPEG


@dataclass(frozen=True)
class CropOptions:
    """How every ingest path cuts crops. Defaults keep the detector's box as it is."""
    context: float = 0.0          # fraction of the box's width/height added on each side
    pad: str = "zero"             # fill where the enlarged box leaves the frame
    height: int | None = None     # rescale crops to this height (aspect kept); None keeps their own size
    min_score: float | None = None
    min_height: float = 0.0       # in source pixels, before the context margin
    every: int = 1                # keep every N-th frame (video sources)

    def __post_init__(self):
        if self.context < 0 or not math.isfinite(self.context):
            raise ValueError(f"context must be a finite number >= 0, got {self.context}")
        if self.pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {PAD_MODES}, got {self.pad!r}")
        if self.height is not None and self.height < 1:
            raise ValueError(f"height must be >= 1, got {self.height}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")


Box = tuple[float, float, float, float]


def check_box(box: Box, frame_width: int, frame_height: int) -> str | None:
    """A skip reason for a box that cannot give a crop, else None.

    Boxes that only partly leave the frame (negative x, say) are fine: detectors
    emit them for people at the border, and the crop is padded there.
    """
    if not all(math.isfinite(v) for v in box):
        return "box_not_finite"
    x, y, w, h = box
    if w <= 0 or h <= 0 or round(w) < 1 or round(h) < 1:
        return "box_empty"
    if x >= frame_width or y >= frame_height or x + w <= 0 or y + h <= 0:
        return "box_outside_frame"
    return None


def rescaled_size(width: float, height: float, target_height: int | None) -> tuple[float, float]:
    """Size of a ``width x height`` crop once rescaled to ``target_height`` (aspect kept; None: unchanged)."""
    if target_height is None or height <= 0:
        return width, height
    return max(1.0, width * target_height / height), float(target_height)


def size_reason(width: float, height: float, target_height: int | None = None) -> str | None:
    """"box_too_large" if a crop of this size (as cut, or once rescaled) is over the crop budget, else None."""
    for w, h in ((width, height), rescaled_size(width, height, target_height)):
        # +1: cutting rounds each side; float arithmetic: the sizes may be anything a box file says
        if not (w + 1) * (h + 1) <= MAX_CROP_PIXELS or not max(w, h) <= MAX_CROP_SIDE:
            return "box_too_large"
    return None


def crop_size_reason(box: Box, options: CropOptions) -> str | None:
    """"box_too_large" if the crop of ``box`` (with the context margin, then rescaled) would exceed the budget."""
    _, _, w, h = enlarge(box, options.context)
    return size_reason(w, h, options.height)


def filter_reason(box: Box, score: float | None, options: CropOptions) -> str | None:
    """A reason the user's filters drop this box (counted apart from bad input)."""
    if options.min_score is not None and score is not None and score < options.min_score:
        return "below_min_score"
    if box[3] < options.min_height:
        return "below_min_height"
    return None


def enlarge(box: Box, context: float) -> Box:
    x, y, w, h = box
    return (x - context * w, y - context * h, w * (1 + 2 * context), h * (1 + 2 * context))


def cut_crop(frame: np.ndarray, box: Box, pad: str = "zero") -> np.ndarray:
    """Pixels of ``box`` from an [H, W, 3] frame; outside the frame: zeros or the nearest edge pixel."""
    fh, fw = frame.shape[:2]
    x0, y0 = int(round(box[0])), int(round(box[1]))
    x1, y1 = x0 + max(1, int(round(box[2]))), y0 + max(1, int(round(box[3])))
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, fw), min(y1, fh)
    inside = frame[iy0:iy1, ix0:ix1]
    widths = ((iy0 - y0, y1 - iy1), (ix0 - x0, x1 - ix1), (0, 0))
    if not any(a or b for a, b in widths[:2]):
        return inside.copy()
    if pad == "edge":
        return np.pad(inside, widths, mode="edge")
    return np.pad(inside, widths, mode="constant", constant_values=0)


def make_crop(frame: np.ndarray, box: Box, options: CropOptions) -> Image.Image:
    crop = Image.fromarray(cut_crop(frame, enlarge(box, options.context), options.pad))
    if options.height is not None and crop.height != options.height:
        width = max(1, int(round(crop.width * options.height / crop.height)))
        crop = crop.resize((width, options.height), Image.Resampling.BILINEAR)
    return crop


@dataclass(frozen=True)
class ReferenceCrop:
    """The crop rule of PARSE-27k's own tools (``preprocess_dataset.py``, psudowe/parse27k_tools and
    psudowe/patchit): the box is scaled so that its height becomes ``height``; a ``width``-wide window is taken
    around the box's centre (the box's own width does not matter: the aspect is kept, never stretched); then
    ``padding`` px of context are added on every side. Every crop is ``width + 2 * padding`` x ``height + 2 *
    padding`` px (64x128 + 32: 128 x 192) with the box's top at row ``padding`` and its bottom at row
    ``padding + height``; where the window leaves the frame it is filled per ``pad`` (zeros by default).

    The authors rescale the whole frame, then round the scaled box to whole pixels; here the window is cut in
    frame coordinates and resampled once (bilinear, antialiased when shrinking), so a crop can differ from
    theirs by the rounding, under one output pixel."""
    width: int = 64
    height: int = 128
    padding: int = 32
    pad: str = "zero"

    def __post_init__(self):
        if self.width < 1 or self.height < 1 or self.padding < 0:
            raise ValueError(f"crop width and height must be >= 1 and padding >= 0, got width {self.width}, "
                             f"height {self.height}, padding {self.padding}")
        if self.pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {PAD_MODES}, got {self.pad!r}")
        if size_reason(*self.size):
            raise ValueError(f"a {self.size[0]}x{self.size[1]} crop is over the crop budget")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every crop, padding included."""
        return self.width + 2 * self.padding, self.height + 2 * self.padding

    def window(self, box: Box) -> Box:
        """x, y, w, h, in frame pixels, of what the crop of ``box`` (x, y, w, h) shows."""
        x, y, w, h = box
        per_pixel = h / self.height  # frame pixels per crop pixel
        out_w, out_h = self.size
        return (x + w / 2 - out_w * per_pixel / 2, y - self.padding * per_pixel, out_w * per_pixel,
                out_h * per_pixel)

    def size_reason(self, box: Box) -> str | None:
        """"box_too_large" if the frame region behind the crop is over the crop budget (a 1e30 box)."""
        _, _, w, h = self.window(box)
        return size_reason(w, h)

    def cut(self, frame: np.ndarray, box: Box) -> Image.Image:
        """The crop of ``box`` from an [H, W, 3] frame (call ``check_box`` and ``size_reason`` first)."""
        wx, wy, ww, wh = self.window(box)
        # whole pixels around the window, one more on each side for the filter; outside the frame: padded
        x0, y0 = math.floor(wx) - 1, math.floor(wy) - 1
        x1, y1 = math.ceil(wx + ww) + 1, math.ceil(wy + wh) + 1
        region = Image.fromarray(cut_crop(frame, (x0, y0, x1 - x0, y1 - y0), self.pad))
        return region.resize(self.size, Image.Resampling.BILINEAR,
                             box=(wx - x0, wy - y0, wx - x0 + ww, wy - y0 + wh))
