"""The unit every data source produces: one image file with its (optional) label, split, group and crop box."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .boxes import Box


@dataclass(frozen=True)
class Sample:
    """One image on disk. `label` is None for unlabelled images; `split` is 'train', 'val', 'test' or None;
    `box`, when set, is the part of the image the sample stands for (see `data.boxes`)."""

    path: Path
    label: str | None = None
    split: str | None = None
    group: str | None = None
    box: "Box | None" = None
