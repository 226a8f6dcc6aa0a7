"""Fuzz target: any bytes as an image file → `load_rgb` + preprocessing either give a uint8 array or raise
`FinegrainError` (an error record in a run); anything else — another exception, a hang, a crash — is a bug.

    .venv/bin/python fuzz/fuzz_images.py fuzz/corpus/images -max_total_time=3600   # a one-hour run
    .venv/bin/python fuzz/fuzz_images.py CRASH_FILE                                # replay one input
"""
from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from finegrain.backbones.base import Preprocess
    from finegrain.data.images import load_rgb
    from finegrain.errors import FinegrainError

PRE = Preprocess(size=32, crop_pct=0.875)
MAX_PIXELS = 4_000_000  # small, so that a fuzzed header cannot make one input take seconds
_FD, PATH = tempfile.mkstemp(prefix="fg-fuzz-", suffix=".img")
os.close(_FD)


def one_input(data: bytes) -> None:
    with open(PATH, "wb") as fh:
        fh.write(data)
    try:
        arr = PRE.apply(load_rgb(PATH, max_pixels=MAX_PIXELS))
    except FinegrainError:
        return
    if arr.shape != (32, 32, 3) or arr.dtype.name != "uint8":
        raise RuntimeError(f"preprocessing returned {arr.shape} {arr.dtype}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
