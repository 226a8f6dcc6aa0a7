"""The server's limits in one frozen object: each is bounded, so no request can take unbounded memory or time."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..data.images import DEFAULT_MAX_PIXELS
from ..errors import ConfigError

MAX_WAIT_LIMIT_MS = 5.0  # a request never waits longer than this for others to share its backbone call


@dataclass(frozen=True)
class ServeSettings:
    """Limits and options of one `create_app` server (the CLI fills them from its options)."""

    max_upload_bytes: int = 20 * 1024 * 1024  # a whole request body
    max_images: int = 16  # images in one predict request
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # per image, checked from the header before decoding
    max_batch: int = 32  # images in one backbone call
    max_wait_ms: float = 2.0  # how long the first image of a batch waits for company
    queue_size: int = 128  # images waiting for the backbone, per model; beyond: 503 + Retry-After
    request_timeout_s: float = 30.0
    decode_workers: int = 2
    neighbours: int = 5  # nearest training images an explanation shows (0: none, and none are embedded)
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    runtime: str | None = None  # None: the process default (auto: ONNX Runtime when it checks out)
    cache_dir: Path | None = None  # ONNX exports and training embeddings (default: the embedding cache)

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_images", "max_batch", "queue_size", "decode_workers"):
            _require(name, getattr(self, name), getattr(self, name) >= 1, "an integer ≥ 1")
        _require("max_pixels", self.max_pixels, self.max_pixels is None or self.max_pixels >= 1, "an integer ≥ 1")
        _require("max_wait_ms", self.max_wait_ms, 0 <= self.max_wait_ms <= MAX_WAIT_LIMIT_MS,
                 f"a number of milliseconds in [0, {MAX_WAIT_LIMIT_MS:g}]")
        _require("request_timeout_s", self.request_timeout_s,
                 math.isfinite(self.request_timeout_s) and self.request_timeout_s > 0, "a number of seconds > 0")
        _require("neighbours", self.neighbours, 0 <= self.neighbours <= 50, "an integer in [0, 50]")
        _require("api_key", "(hidden)", self.api_key is None or bool(self.api_key.strip()), "a non-empty key")


def _require(name: str, value: object, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(f"serve setting {name} is out of range", expected=expected, found=str(value),
                          fix=f"pass a valid {name}")
