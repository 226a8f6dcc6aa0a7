"""Seeded augmented views of an image: what the frozen trunk sees, once per view, before training starts.

View 0 is always the backbone's own evaluation preprocessing (the centre crop, or the letterboxed image of an
`@pad` backbone), so validation and the stored activations of view 0 match what `predict` computes. Views
1..K-1 are random-resized crops (letterboxed, not stretched, for `@pad`) with a horizontal flip and a mild
colour jitter (species differ by colour, so hue is never touched). Each view's randomness
comes from (seed, image content, view index): the same image gets the same views in every run.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from ..backbones.base import _RESAMPLE, Preprocess, letterbox
from ..errors import ConfigError


@dataclass(frozen=True)
class ViewRecipe:
    """How the K stored views of a training image are drawn (part of the activation store's key)."""

    n_views: int = 8
    scale_min: float = 0.35
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_views < 1:
            raise ConfigError("--views must be at least 1", expected="a whole number ≥ 1 (1 = centre crop only)",
                              found=str(self.n_views), fix="use e.g. --views 8")
        if not 0.05 <= self.scale_min <= 1.0:
            raise ConfigError("--crop-scale must lie in [0.05, 1]", expected="the smallest crop area fraction",
                              found=str(self.scale_min), fix="use e.g. --crop-scale 0.35")
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigError("--jitter must lie in [0, 1)", expected="a colour jitter strength",
                              found=str(self.jitter), fix="use e.g. --jitter 0.2, or 0 to turn it off")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def view_rng(seed: int, sha: str, view: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{sha}:{view}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _crop_box(w: int, h: int, rng: np.random.Generator, scale_min: float,
              ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """A random box covering scale_min..1 of the area with an aspect ratio in `ratio` (whole image if none fits)."""
    area = w * h
    log_r = np.log(ratio)
    for _ in range(10):
        target = area * rng.uniform(scale_min, 1.0)
        aspect = float(np.exp(rng.uniform(*log_r)))
        cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return left, top, left + cw, top + ch
    return 0, 0, w, h


def _jitter(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(float(rng.uniform(1 - strength, 1 + strength)))
    return img


def random_view(img: Image.Image, pre: Preprocess, recipe: ViewRecipe, rng: np.random.Generator) -> np.ndarray:
    """One augmented (size, size, 3) uint8 view of an RGB image."""
    box = _crop_box(*img.size, rng, recipe.scale_min, recipe.ratio)
    if pre.fit == "pad":  # framed as prediction frames the whole image: letterboxed, never stretched
        view = Image.fromarray(letterbox(img.crop(box), pre.size, pre.interpolation))
    else:
        view = img.crop(box).resize((pre.size, pre.size), _RESAMPLE[pre.interpolation], reducing_gap=None)
    if recipe.flip and rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if recipe.jitter > 0:
        view = _jitter(view, rng, recipe.jitter)
    return np.asarray(view, dtype=np.uint8)


def image_views(img: Image.Image, sha: str, pre: Preprocess, recipe: ViewRecipe, n_views: int) -> np.ndarray:
    """(n_views, size, size, 3) uint8: the centre crop, then seeded random views."""
    views = [pre.apply(img)]
    views += [random_view(img, pre, recipe, view_rng(recipe.seed, sha, v)) for v in range(1, n_views)]
    return np.stack(views)
