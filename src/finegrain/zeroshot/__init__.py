"""Zero-shot classification from class names and descriptions (see `build`, `head`, `ensemble`).

Importing this package is light (no torch, no text model).
"""
from __future__ import annotations

from .. import heads as _heads  # noqa: F401  (heads first: it registers ZeroShotHead from .head)
