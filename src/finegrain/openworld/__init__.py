"""Open world: calibrated confidence, an explicit "unknown" answer (OOD detection), and category discovery."""
from __future__ import annotations
