"""Test-time views: an image embedded as the backbone's preprocessing crops it and as a few other views of it,
the unit embeddings averaged. Similar-image search uses them (`finegrain index --tta ...`). On cub100 (stock
lite0, whitened, Recall@1): the plain crop 0.866; + its mirror image 0.877; + the whole image 0.880; + the mirror,
the whole image and the whole image mirrored 0.889 (benchmarks/retrieval.py --part views).

Views: `flip` the plain crop mirrored; `whole` the whole image (the shorter side resized to the network's input,
no margin cut: the plain crop keeps the central 87.5 %); `whole-flip` that, mirrored; and the other turns and
mirrors of the plain crop a classifier's `--tta` uses (`finegrain.tta.TURNS`: vflip, rot90, rot180, ...).

A view's embedding is cached under the sample's content key plus the view (`SHA:view=flip`), next to the plain
embedding (`SHA`), so the two never mix and each is computed once.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
from PIL import Image

from .backbones import Preprocess
from .errors import ConfigError
from .tta import TURNS, turned_crops

VIEWS = ("flip", "whole", "whole-flip", *(v for v in TURNS if v != "flip"))  # turns: a classifier's --tta


def view_key(key: str, view: str | None) -> str:
    """The cache name of a sample's view: its content key alone for the plain crop, else `KEY:view=VIEW`."""
    return key if view is None else f"{key}:view={view}"


def view_crops(preprocess: Preprocess, img: Image.Image, views: Sequence[str | None]) -> list[np.ndarray]:
    """The (size, size, 3) uint8 crop the network sees for each of `views` of a decoded image (None: the plain
    crop). Each framing (the plain crop, the whole image) is resized once and turned or mirrored as each view
    asks, so a mirror shows exactly the pixels of its unmirrored crop, left and right swapped."""
    for view in views:
        if view is not None and view not in VIEWS:
            raise ConfigError(f"unknown view '{view}'", expected=", ".join(VIEWS), found=view,
                              fix="use one of the listed views")
    framed: dict[bool, np.ndarray] = {}
    crops = []
    for view in views:
        whole = view is not None and view.startswith("whole")
        if whole not in framed:
            framed[whole] = replace(preprocess, crop_pct=1.0).apply(img) if whole else preprocess.apply(img)
        turn = view.removeprefix("whole-") if view is not None else None  # whole-flip: the whole image, mirrored
        crops.append(turned_crops(framed[whole][None], turn)[0] if turn in TURNS else framed[whole])
    return crops


def view_crop(preprocess: Preprocess, img: Image.Image, view: str | None) -> np.ndarray:
    """`view_crops` of one view."""
    return view_crops(preprocess, img, (view,))[0]


def average_views(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Unit rows of the mean of each image's view embeddings (parts: one (N, D) array per view, same rows)."""
    total = np.sum(np.stack(parts), axis=0)
    return (total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)).astype(np.float32)


__all__ = ["VIEWS", "view_key", "view_crop", "view_crops", "average_views"]
