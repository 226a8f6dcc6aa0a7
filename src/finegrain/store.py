"""Content-addressed embedding cache: (backbone cache key, file SHA-256) → float32 vector, in one SQLite file.

Each batch is committed as soon as it is computed, so an interrupted run resumes where it stopped and a
second run over the same images computes nothing. SQLite gives atomic writes and safe concurrent readers.
When a run last used each backbone's rows is recorded too, so `finegrain cache --prune DAYS` can drop the rows
of backbones (and deleted fine-tuned models) no run needs any more.
"""
from __future__ import annotations

import os
import sqlite3
import time
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
        try:
            with self._conn:
                self._conn.execute("CREATE TABLE IF NOT EXISTS key_use (key TEXT PRIMARY KEY,"
                                   " last_used REAL NOT NULL, backbone TEXT)")
        except sqlite3.OperationalError:
            pass  # a cache that cannot be written is still read; its uses are not recorded
        self._noted: dict[str, str | None] = {}

    def _note_use(self, key: str, backbone: str | None = None) -> None:
        """Record (once per open cache) that a run used `key`'s rows now, and which backbone they belong to when
        known; a read-only cache is used as it is."""
        if key in self._noted and backbone in (None, self._noted[key]):
            return
        self._noted[key] = backbone or self._noted.get(key)
        try:
            with self._conn:
                self._conn.execute("INSERT INTO key_use VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                                   "last_used = excluded.last_used, backbone = coalesce(excluded.backbone, backbone)",
                                   [key, time.time(), backbone])
        except sqlite3.OperationalError:
            pass

    def name_key(self, key: str, backbone: str) -> None:
        """Say which backbone `key` belongs to (for `finegrain cache` listings)."""
        self._note_use(key, backbone)

    def get_many(self, key: str, shas: Iterable[str]) -> dict[str, np.ndarray]:
        self._note_use(key)
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
        self._note_use(key)
        rows = [(key, sha, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes())
                for sha, v in vectors.items()]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)

    def count(self, key: str | None = None) -> int:
        if key is None:
            return self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE key = ?", [key]).fetchone()[0]

    def usage(self) -> list[tuple[str, str | None, int, int, float]]:
        """(key, backbone, rows, bytes of vectors, last used) per key. Keys used before uses were recorded count
        as used now, so the first prune after an upgrade keeps them."""
        self._index_keys()
        counts = self._conn.execute("SELECT key, COUNT(*) FROM embeddings GROUP BY key").fetchall()
        rows = [(key, count, 4 * count * self._conn.execute("SELECT dim FROM embeddings WHERE key = ? LIMIT 1",
                                                            [key]).fetchone()[0]) for key, count in counts]
        used = {key: (when, name) for key, when, name in
                self._conn.execute("SELECT key, last_used, backbone FROM key_use").fetchall()}
        for key, _, _ in rows:
            if key not in used:
                self._note_use(key)
                used[key] = (time.time(), None)
        return [(key, used[key][1], count, size, used[key][0]) for key, count, size in rows]

    def _index_keys(self) -> None:
        """A narrow index of the keys alone, so counting a key's rows reads ~100 bytes a row instead of every
        row's vector pages (a multi-GB cache listed in seconds, not minutes). Built by the first listing (one
        scan, as long as a listing used to take), then kept up to date by SQLite on every write; a cache that
        cannot be written is counted by the scan instead."""
        try:
            with self._conn:
                self._conn.execute("CREATE INDEX IF NOT EXISTS embeddings_by_key ON embeddings (key)")
        except sqlite3.OperationalError:
            pass

    def delete_keys(self, keys: Iterable[str]) -> str | None:
        """Drop every row of these keys, then compact the file so the disk space is given back; returns why it
        could not be compacted (compacting needs free space as large as the file), else None."""
        with self._conn:
            for key in keys:
                self._conn.execute("DELETE FROM embeddings WHERE key = ?", [key])
                self._conn.execute("DELETE FROM key_use WHERE key = ?", [key])
        try:
            self._conn.execute("VACUUM")
        except sqlite3.OperationalError as exc:
            return str(exc)
        return None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
