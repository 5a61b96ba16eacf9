"""The drawing surface people are painted on, and the stroke shapes their parts are made of."""
from __future__ import annotations

from PIL import Image, ImageDraw

from patchray.shards.synthetic.clothing import paint_texture
from patchray.shards.synthetic.colors import Color
from patchray.shards.synthetic.scene import Paint


def limb(draw, pts, width, fill):
    """Thick polyline with round ends and joints."""
    w = max(1, int(round(width)))
    draw.line(pts, fill=fill, width=w, joint="curve")
    r = w / 2.0
    for x, y in (pts[0], pts[-1]):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def ellipse(draw, x, y, rx, ry, fill):
    """Filled ellipse by centre and radii."""
    draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=fill)


def lerp(a, b, t):
    """The point a fraction t of the way from a to b."""
    return tuple(u + (v - u) * t for u, v in zip(a, b))


class Canvas:
    """A crop being drawn, which can fill shapes with patterned paint as well as with colours."""

    def __init__(self, image: Image.Image):
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self._textures: dict[Paint, Image.Image] = {}

    def paint(self, paint: Paint | Color, shape) -> None:
        """Fill ``shape(draw, fill)`` with a colour or a patterned paint."""
        if isinstance(paint, tuple):
            shape(self.draw, paint)
            return
        if paint.pattern == "solid":
            shape(self.draw, paint.color)
            return
        tex = self._textures.get(paint)
        if tex is None:
            tex = self._textures[paint] = paint_texture(paint, *self.image.size)
        mask = Image.new("L", self.image.size, 0)
        shape(ImageDraw.Draw(mask), 255)
        box = mask.getbbox()  # pasting only the touched rectangle is several times faster
        if box is not None:
            self.image.paste(tex.crop(box), box, mask.crop(box))
