"""Choices and defaults of the retrieval commands, importable without numpy or faiss (keeps `--help` instant)."""
from __future__ import annotations

CODES = ("float32", "float16", "pq", "binary")
TRANSFORMS = ("auto", "l2", "sqrt", "whiten")
APPROXIMATE_ABOVE = 100_000  # exact search up to this many images (≈ 5 ms per query at 1280 floats, 1 thread)
DEFAULT_DUPLICATE_THRESHOLD = 0.05  # 1 − cosine in the index's space
