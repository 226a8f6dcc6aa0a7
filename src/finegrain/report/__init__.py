"""The HTML report: metrics, plots, worst mistakes with Grad-CAM and neighbours, dataset health — one file."""
from __future__ import annotations

from .build import build_report

__all__ = ["build_report"]
