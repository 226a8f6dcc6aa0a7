"""The unit every data source produces: one image file with its (optional) label, split and group."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One image on disk. `label` is None for unlabelled images; `split` is 'train', 'val', 'test' or None."""

    path: Path
    label: str | None = None
    split: str | None = None
    group: str | None = None
