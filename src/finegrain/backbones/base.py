"""The backbone contract: uint8 images in, finite L2-normalised float32 embeddings out.

Preprocessing travels with the weights: a `Preprocess` is declared by each backbone, saved in every model
artifact and folded into every cache key, so an embedding is never reused under different preprocessing.
"""
from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageError

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}


TUNED_FAMILY = "finetuned"  # `finetuned:BASE.HASH`: weights written by `finegrain finetune` into a model folder

# The biggest image the resize step may create (~200 MB as RGB): allows aspect ratios up to ~750:1 at 224 px.
MAX_RESIZED_PIXELS: int = 50_000_000


def _check_resize(width: int, height: int, new: tuple[int, int]) -> None:
    if new[0] * new[1] > MAX_RESIZED_PIXELS:
        raise ImageError("image", f"extreme shape {width}×{height}: resizing it for the model would make a "
                                  f"{new[0]}×{new[1]} image, over the limit of {MAX_RESIZED_PIXELS:,} pixels "
                                  "(crop it to a sensible aspect ratio)")


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to size/crop_pct, centre-crop size×size, then (x/255 - mean)/std in the model.
    With fit='pad' the longer side is resized to size instead and the image is centred on a size×size canvas of
    its own border colour (letterbox): nothing of it is cut, and its shape is not distorted."""

    size: int
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    fit: str = "crop"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.fit == "crop":  # left out, so every model and cache key written before 'pad' existed stays valid
            del d["fit"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        return cls(size=int(d["size"]), crop_pct=float(d["crop_pct"]), interpolation=str(d["interpolation"]),
                   mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]),
                   fit=str(d.get("fit", "crop")))

    @property
    def resize_to(self) -> int:
        return int(round(self.size / self.crop_pct))

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the shorter side is scaled to `resize_to` (never below `size`)."""
        scale = self.resize_to / min(width, height)
        return max(self.size, round(width * scale)), max(self.size, round(height * scale))

    def apply(self, img: Image.Image) -> np.ndarray:
        """PIL RGB image → (size, size, 3) uint8: normalisation is left to the model, so batches stay small.

        Raises `ImageError` when the resized image would be over `MAX_RESIZED_PIXELS`: a thin strip
        (100000×2) is small on disk and to decode, but scaling its short side up would need gigabytes."""
        if self.fit == "pad":
            return letterbox(img, self.size, self.interpolation)
        w, h = img.size
        new = self.resized_size(w, h)
        _check_resize(w, h, new)
        if new != (w, h):
            img = img.resize(new, _RESAMPLE[self.interpolation], reducing_gap=None)
        left, top = (new[0] - self.size) // 2, (new[1] - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        return np.asarray(img, dtype=np.uint8)


def letterbox(img: Image.Image, size: int, interpolation: str) -> np.ndarray:
    """(size, size, 3) uint8: `img` scaled so its longer side is `size`, centred on a canvas of the median colour
    of its border — white around a plankton photo, the wall behind a museum specimen — so the padding reads as
    more background, not as a frame."""
    w, h = img.size
    scale = size / max(w, h)
    new = (min(size, max(1, round(w * scale))), min(size, max(1, round(h * scale))))
    resized = img.resize(new, _RESAMPLE[interpolation], reducing_gap=None) if new != (w, h) else img
    arr = np.asarray(resized, dtype=np.uint8)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = np.median(border, axis=0).astype(np.uint8)
    top, left = (size - new[1]) // 2, (size - new[0]) // 2
    canvas[top:top + new[1], left:left + new[0]] = arr
    return canvas


def file_fingerprint(path: Path) -> str:
    """SHA-256 of a weights file: text embeddings are reused only under the very same weights."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:32]


class Backbone(abc.ABC):
    """Base class of every backbone. Subclasses set `id`, `embed_dim`, `preprocess` and implement `_forward`."""

    id: str
    embed_dim: int
    preprocess: Preprocess

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 → (N, D) float32, finite and L2-normalised."""
        feats = np.asarray(self._forward(batch), dtype=np.float32)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return feats / np.maximum(norms, 1e-12)

    @abc.abstractmethod
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 → (N, D) raw features."""

    @abc.abstractmethod
    def weights_fingerprint(self) -> str:
        """Changes whenever the weights change; part of the cache key."""

    @property
    def cache_key(self) -> str:
        """One string per (backbone id, weights, preprocessing): embeddings are cached under it."""
        blob = json.dumps({"id": self.id, "weights": self.weights_fingerprint(),
                           "preprocess": self.preprocess.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]
