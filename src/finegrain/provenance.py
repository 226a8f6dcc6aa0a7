"""Provenance recorded in every output: what made it, from which weights and preprocessing, for which classes."""
from __future__ import annotations

import hashlib
import platform
import shlex
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, Sequence

from ._version import __version__

_PACKAGES = ("torch", "numpy", "scikit-learn", "pillow", "safetensors", "onnxruntime")
_COMMAND: list[str] | None = None


def set_command_line(argv: Sequence[str]) -> None:
    """The CLI records how it was invoked; API calls record 'python API'."""
    global _COMMAND
    _COMMAND = list(argv)


def command_line() -> str:
    return "finegrain " + shlex.join(_COMMAND) if _COMMAND is not None else "python API"


def class_list_hash(classes: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(classes).encode("utf-8")).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance(backbone_id: str, preprocess: dict, classes: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {
        "finegrain_version": __version__,
        "backbone": backbone_id,
        "preprocess": preprocess,
        "class_list_hash": class_list_hash(classes),
        "n_classes": len(classes),
        "command_line": command_line(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": sys.platform,
        "packages": package_versions(),
        **extra,
    }
