"""Crop boxes: the part of an image a sample stands for (a manifest's x,y,w,h columns or CUB's
bounding_boxes.txt), in pixels of the upright image, cropped before the backbone's preprocessing.

A box that cannot be used (not a number, zero or negative size, outside the image) makes its sample an error
record, like an unreadable file: one bad row never ends a run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image

from ..errors import ConfigError, ImageError
from .images import DEFAULT_MAX_PIXELS, load_rgb

if TYPE_CHECKING:
    from .samples import Sample

BOX_COLUMNS = ("x", "y", "w", "h")
NO_BOX_FIX = "leave x,y,w,h all empty to use the whole image"


@dataclass(frozen=True)
class Box:
    """x, y (top-left corner), w, h in pixels. `problem` says why the box is unusable (None when it is fine);
    `source` names the row it came from, for messages."""

    x: float
    y: float
    w: float
    h: float
    problem: str | None = None
    source: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        """The box as part of a cache key: the same box always gives the same text."""
        return ",".join(self.cells())

    def cells(self) -> list[str]:
        """x, y, w, h as text that reads back to the same numbers (ints and floats alike: 8 and 8.0 give '8')."""
        return [f"{float(v):.10g}" for v in (self.x, self.y, self.w, self.h)]

    def describe(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"crop box x={self.x:g} y={self.y:g} w={self.w:g} h={self.h:g}{where}"

    def pixel_edges(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), rounded to whole pixels."""
        return round(self.x), round(self.y), round(self.x + self.w), round(self.y + self.h)

    def crop(self, img: Image.Image) -> Image.Image:
        """The boxed region; raises ValueError (with the full message) when the box is unusable for this image."""
        if self.problem:
            raise ValueError(self.problem)
        left, top, right, bottom = self.pixel_edges()
        width, height = img.size
        if left < 0 or top < 0 or right > width or bottom > height:
            raise ValueError(f"{self.describe()} reaches outside the {width}×{height} image; expected 0 ≤ x, "
                             f"x+w ≤ {width}, 0 ≤ y, y+h ≤ {height}; found x..x+w = {left}..{right}, y..y+h = "
                             f"{top}..{bottom}; fix: correct the box (pixels of the upright image) or {NO_BOX_FIX}")
        if right <= left or bottom <= top:
            raise ValueError(f"{self.describe()} is under one pixel wide or high; expected w, h ≥ 1 pixel; found "
                             f"{right - left}×{bottom - top} pixels once rounded; fix: correct the box or "
                             f"{NO_BOX_FIX}")
        return img.crop((left, top, right, bottom))


def parse_box(cells: Sequence[str], source: str) -> Box | None:
    """A box from four text cells (x, y, w, h); all empty means no box. Never raises: a bad box comes back with
    its `problem` set, so the sample is reported as an error row while the run goes on."""
    if all(not c.strip() for c in cells):
        return None
    shown = ", ".join(f"{n}={c.strip()!r}" for n, c in zip(BOX_COLUMNS, cells))
    if len(cells) != 4:
        return Box(0, 0, 0, 0, f"crop box ({source}) has {len(cells)} value(s); expected four numbers x y w h; "
                               f"found {' '.join(cells)!r}; fix: write x y w h", source)
    values = []
    for name, cell in zip(BOX_COLUMNS, cells):
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            return Box(0, 0, 0, 0, f"crop box ({source}) has a {name} that is not a number; expected four numbers "
                                   f"x,y,w,h in pixels; found {shown}; fix: correct it or {NO_BOX_FIX}", source)
        values.append(value)
    x, y, w, h = values
    if w <= 0 or h <= 0:
        return Box(x, y, w, h, f"crop box ({source}) has zero or negative size; expected w > 0 and h > 0 pixels; "
                               f"found w={w:g} h={h:g}; fix: correct it or {NO_BOX_FIX}", source)
    return Box(x, y, w, h, source=source)


def sample_key(sha: str, sample: "Sample") -> str:
    """The embedding cache's name for a sample: its file's SHA-256, plus its box when it has one (so a whole
    image keeps the key it always had, and each box of one file gets its own entry)."""
    return sha if sample.box is None else f"{sha}:box={sample.box.key}"


def load_sample_rgb(item: "Sample | str | Path", *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The pixels a sample stands for: its decoded image, cropped to its box when it has one (a plain path is
    the whole image). An unusable box raises `ImageError`, like an unreadable file."""
    path = item if isinstance(item, (str, Path)) else item.path
    img = load_rgb(path, max_pixels=max_pixels)
    box = None if isinstance(item, (str, Path)) else item.box
    if box is None:
        return img
    try:
        return box.crop(img)
    except ValueError as exc:
        raise ImageError(str(path), str(exc)) from None


def require_no_box(sample: "Sample", where: str) -> None:
    """Refuse a boxed sample where crops are not implemented yet, rather than embed the whole image silently."""
    if sample.box is not None:
        raise ConfigError(f"{sample.path} has a crop box ({sample.box.source or sample.box.key}), which {where} "
                          "does not apply yet", expected="samples without x,y,w,h boxes",
                          found=f"box x,y,w,h = {sample.box.key}",
                          fix="run without --engine ray (the in-process engine crops), or drop the box columns")
