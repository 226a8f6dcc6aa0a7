"""What the cache folder holds, and pruning what no run has used lately (`finegrain cache`).

The cache folder (`--cache-dir`, else `finegrain.store.default_cache_dir()`) grows with use: embeddings per
backbone (one SQLite file), the trunk-activation stores of `finetune` (0.4–2.4 GB each on cub100), fine-tuning
checkpoints and finished runs, and ONNX exports. Each part records when a run last used it: a row per backbone
in the SQLite file, the modification time of a store's or a run's folder and of an export (`mark_used`). So
`--prune DAYS` removes only what no run needed for that long. A model folder needs nothing from the cache:
whatever is pruned is computed again when a run needs it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger("finegrain")

ABOUT = "about.json"  # what a store or a run folder was made from, for listing only
DAY = 86400.0


@dataclass(frozen=True)
class CacheEntry:
    """One thing in the cache that can be removed on its own."""

    kind: str  # embeddings | activations | finetune-run | onnx
    name: str  # the backbone it belongs to, or its key when that is not recorded
    path: str  # the file or folder (for embeddings: the SQLite file, key after '#')
    size: int  # bytes
    last_used: float  # seconds since the epoch
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def mark_used(path: Path) -> None:
    """Record that a run used this file or folder now (its modification time), so pruning keeps it. A read-only
    cache is used as it is."""
    try:
        os.utime(path)
    except OSError:
        pass


def write_about(folder: Path, about: dict) -> None:
    """Name a store or run folder for listings, once (never part of any key)."""
    target = folder / ABOUT
    if not target.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(about, sort_keys=True), encoding="utf-8")
        except OSError:
            pass


def _about_name(folder: Path) -> str:
    try:
        return str(json.loads((folder / ABOUT).read_text(encoding="utf-8"))["backbone"])
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name


def folder_size(folder: Path) -> int:
    """Bytes of the files under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _embedding_entries(directory: Path) -> list[CacheEntry]:
    from .store import EmbeddingCache

    db = directory / "embeddings.sqlite3"
    if not db.is_file():
        return []
    with EmbeddingCache(directory) as cache:
        return [CacheEntry("embeddings", name or key, f"{db}#{key}", size, last_used, f"{count:,} vectors")
                for key, name, count, size, last_used in cache.usage()]


def _folder_entries(directory: Path, kind: str, sub: str) -> list[CacheEntry]:
    out = []
    for folder in sorted((directory / sub).glob("*")):
        if not folder.is_dir():
            continue
        detail = ""
        if kind == "finetune-run":
            detail = "finished" if (folder / "finished.json").is_file() else "in progress or interrupted"
        out.append(CacheEntry(kind, _about_name(folder), str(folder), folder_size(folder), folder.stat().st_mtime,
                              detail))
    return out


def _onnx_entries(directory: Path) -> list[CacheEntry]:
    out = []
    for model in sorted((directory / "onnx").glob("*.onnx")):
        record = model.with_suffix(".json")
        try:
            name = json.loads(record.read_text(encoding="utf-8"))["backbone"]
        except (OSError, ValueError, KeyError, TypeError):
            name = model.stem
        size = model.stat().st_size + (record.stat().st_size if record.is_file() else 0)
        out.append(CacheEntry("onnx", str(name), str(model), size, model.stat().st_mtime))
    return out


def cache_entries(directory: Path) -> list[CacheEntry]:
    """Everything the cache folder holds, by kind."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"no cache folder at {directory}", expected="a folder finegrain has written its cache to",
                          found="nothing there", fix="pass the folder given to --cache-dir (or FINEGRAIN_CACHE_DIR)")
    return (_embedding_entries(directory) + _folder_entries(directory, "activations", "activations")
            + _folder_entries(directory, "finetune-run", "finetune-runs") + _onnx_entries(directory))


def prune_cache(directory: Path, unused_days: float, dry_run: bool = False) -> list[CacheEntry]:
    """Remove the entries no run has used for `unused_days` days (0: everything); returns them. Embeddings are
    deleted backbone by backbone and the SQLite file is compacted after (when the disk has room for a copy;
    otherwise the freed pages are reused by later runs, and a warning says so)."""
    if unused_days < 0:
        raise ConfigError("--prune needs a number of days", expected="0 or more", found=str(unused_days),
                          fix="e.g. --prune 30 removes what no run used in the last 30 days; 0 removes everything")
    cutoff = time.time() - unused_days * DAY
    old = [e for e in cache_entries(directory) if e.last_used <= cutoff]
    if dry_run:
        return old
    keys = [e.path.rsplit("#", 1)[1] for e in old if e.kind == "embeddings"]
    if keys:
        from .store import EmbeddingCache

        with EmbeddingCache(directory) as cache:
            problem = cache.delete_keys(keys)
        if problem:
            log.warning("the embeddings file was not compacted (%s); later runs reuse its freed space", problem)
    for e in old:
        path = Path(e.path)
        if e.kind in ("activations", "finetune-run"):
            shutil.rmtree(path, ignore_errors=True)
        elif e.kind == "onnx":
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
    return old


def format_size(n: float) -> str:
    """Bytes in decimal units: 950 B, 12.3 MB, 2.4 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_entries(entries: list[CacheEntry]) -> str:
    """A table: kind, backbone, size, last used, detail; then the total."""
    rows = [(e.kind, e.name, format_size(e.size), time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)),
             e.detail) for e in sorted(entries, key=lambda e: (e.kind, -e.size))]
    header = ("kind", "backbone", "size", "last used", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths)) + ("  " + r[4] if r[4] else "")
             for r in [header, *rows]]
    lines.append(f"total: {format_size(sum(e.size for e in entries))} in {len(entries)} entries")
    return "\n".join(line.rstrip() for line in lines)


__all__ = ["CacheEntry", "cache_entries", "folder_size", "format_entries", "format_size", "mark_used",
           "prune_cache", "write_about"]
