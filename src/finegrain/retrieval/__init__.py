"""Similar-image search: a faiss index over cached embeddings (`index`), neighbours (`search`), near-duplicates
and likely mislabels (`duplicates`), and retrieval metrics (`metrics`, `eval_retrieval`).

Names are imported on first use, so `finegrain --help` reads `retrieval.settings` without loading faiss."""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"SimilarityIndex": "index", "build_index": "api", "update_index": "api", "search": "api",
          "duplicates": "api", "eval_retrieval": "api", "recall_at_k": "metrics", "precision_at_k": "metrics",
          "map_at_r": "metrics", "retrieval_metrics": "metrics"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_WHERE)
