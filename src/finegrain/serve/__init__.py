"""HTTP serving: `create_app(models)` (FastAPI) and `ServeSettings`; `finegrain serve` runs it with uvicorn.

Both names import lazily, so reading the limits (`serve.settings`) never needs the `serve` extra
(fastapi, uvicorn, python-multipart); `create_app` does."""
from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ServeSettings"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app
        return create_app
    if name == "ServeSettings":
        from .settings import ServeSettings
        return ServeSettings
    raise AttributeError(f"module 'finegrain.serve' has no attribute {name!r}")
