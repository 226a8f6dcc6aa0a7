"""Writing outputs atomically, so an interrupted run never leaves a half-written model or result."""
from __future__ import annotations

import ctypes
import errno
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("finegrain")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj: Any) -> str:
    return json.dumps(_jsonable(obj), indent=2, ensure_ascii=False)


def current_umask() -> int:
    """The process umask (only readable by setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write through a temporary file renamed into place, with the mode a plain `open` would give (mkstemp
    makes it 0600, which would hide results from the group a user shares them with)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~current_umask())
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, to_json(obj) + "\n")


def backup_path(target: Path) -> Path:
    """Where the previous folder waits while a new one is moved into place."""
    return target.with_name(f".{target.name}.old")


def replace_dir_atomic(staging: Path, target: Path) -> None:
    """Move a fully written staging folder into place, replacing any previous one.

    On Linux the two folders are swapped in one step (renameat2 RENAME_EXCHANGE), so TARGET always names a
    complete folder. Elsewhere the old folder is first renamed to `.TARGET.old`; a kill before the new one
    is in place leaves it there, and `existing_or_backup` (used when loading) finds it."""
    if target.exists() and _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(backup_path(target), ignore_errors=True)
        return
    backup = backup_path(target)
    if target.exists():
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(target, backup)
    os.replace(staging, target)
    shutil.rmtree(backup, ignore_errors=True)


def existing_or_backup(target: Path) -> Path:
    """TARGET, or its `.TARGET.old` backup when a replacement was killed between its two renames."""
    backup = backup_path(target)
    if not target.exists() and backup.is_dir():
        log.warning(
            "%s is missing but its backup %s is complete (an earlier save was interrupted): using the backup",
            target, backup)
        return backup
    return target


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux renameat2; False where the C library or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not supported here: fall back to two renames
        return False
    raise OSError(err, os.strerror(err), str(b))


def staging_dir(target: Path) -> Path:
    """A fresh hidden folder beside TARGET, with the mode `mkdir` would give (mkdtemp makes it 0700). Its name
    carries this process's id, so the staging folders that killed processes left behind are removed here."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.pid{os.getpid()}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~current_umask())
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(target: Path) -> None:
    """Delete `.TARGET.pidN.*.tmp` folders whose process N is gone (a kill -9 mid-save leaves one behind)."""
    for leftover in target.parent.glob(f".{target.name}.pid*.tmp"):
        pid = leftover.name[len(target.name) + 5:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
