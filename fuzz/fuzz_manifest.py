"""Fuzz target: any bytes as a CSV manifest → `load_manifest` either returns samples or raises
`FinegrainError` with a message; anything else (UnicodeDecodeError, csv.Error, ...) is a bug.

    .venv/bin/python fuzz/fuzz_manifest.py fuzz/corpus/manifests -max_total_time=3600
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from finegrain.data.sources import load_manifest
    from finegrain.errors import FinegrainError

_DIR = tempfile.mkdtemp(prefix="fg-fuzz-")
PATH = Path(_DIR) / "manifest.csv"


def one_input(data: bytes) -> None:
    PATH.write_bytes(data)
    try:
        ds = load_manifest(PATH)
    except FinegrainError:
        return
    if not ds.samples:
        raise RuntimeError("a manifest with no samples was accepted")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
