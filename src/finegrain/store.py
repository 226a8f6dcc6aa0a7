"""Content-addressed embedding cache: (backbone cache key, file SHA-256) → float32 vector, in one SQLite file.

Each batch is committed as soon as it is computed, so an interrupted run resumes where it stopped and a
second run over the same images computes nothing. SQLite gives atomic writes and safe concurrent readers.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .errors import ConfigError

_CHUNK = 500  # SQLite's default limit on bound parameters is 999


def default_cache_dir() -> Path:
    """`FINEGRAIN_CACHE_DIR`, else `$XDG_CACHE_HOME/finegrain`, else `~/.cache/finegrain`."""
    env = os.environ.get("FINEGRAIN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "finegrain"


class EmbeddingCache:
    """A persistent map from (key, sha256) to an embedding vector."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the embedding cache directory {self.directory}",
                              expected="a writable directory", found=str(exc),
                              fix="pass --cache-dir DIR or set FINEGRAIN_CACHE_DIR to a writable place") from exc
        self.path = self.directory / "embeddings.sqlite3"
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (key TEXT NOT NULL, sha TEXT NOT NULL, dim INTEGER NOT NULL,"
            " vec BLOB NOT NULL, PRIMARY KEY (key, sha)) WITHOUT ROWID")
        self._conn.commit()

    def get_many(self, key: str, shas: Iterable[str]) -> dict[str, np.ndarray]:
        unique = sorted(set(shas))
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(unique), _CHUNK):
            chunk = unique[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT sha, dim, vec FROM embeddings WHERE key = ? AND sha IN ({marks})", [key, *chunk])
            for sha, dim, vec in rows:
                arr = np.frombuffer(vec, dtype=np.float32)
                if arr.shape == (dim,):
                    found[sha] = arr
        return found

    def put_many(self, key: str, vectors: Mapping[str, np.ndarray]) -> None:
        rows = [(key, sha, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes())
                for sha, v in vectors.items()]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)

    def count(self, key: str | None = None) -> int:
        if key is None:
            return self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE key = ?", [key]).fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
