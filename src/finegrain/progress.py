"""Say on stderr when a long phase starts and how long it took, so no phase is a silent minute.

The CLI shows these lines unless `-q` (they are INFO log records of the 'finegrain' logger, which `-q` turns
off). A Python call decides with its `progress` argument: True shows them on stderr (through the logger when
logging is set up for INFO, else printed directly), False silences them for that call, None (the library
default) leaves them to the logging configuration, e.g. `logging.basicConfig(level=logging.INFO)`.
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

log = logging.getLogger("finegrain")
_SHOWN: ContextVar[bool | None] = ContextVar("finegrain_progress", default=None)


@contextmanager
def progress_scope(progress: bool | None) -> Iterator[None]:
    """Phase lines inside follow `progress` (True: shown, False: silent, None: as the logging configuration says)."""
    token = _SHOWN.set(progress)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def note(message: str) -> None:
    """One progress line (INFO), shown or silenced as the current `progress_scope` says."""
    shown = _SHOWN.get()
    if shown is False:
        return
    if shown and not log.isEnabledFor(logging.INFO):
        print(f"finegrain: {message}", file=sys.stderr)
    else:
        log.info("%s", message)


@contextmanager
def phase(what: str) -> Iterator[None]:
    """'finegrain: WHAT …' on entry, 'finegrain: WHAT: done in S s' on exit."""
    note(f"{what} …")
    t0 = time.perf_counter()
    yield
    note(f"{what}: done in {time.perf_counter() - t0:.1f} s")
