"""Say on stderr when a long phase starts and how long it took, so no phase is a silent minute.

The CLI shows these lines unless `-q` (they are INFO log records of the 'finegrain' logger, which `-q` turns
off); a Python caller sees them once it enables logging, e.g. `logging.basicConfig(level=logging.INFO)`.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("finegrain")


@contextmanager
def phase(what: str) -> Iterator[None]:
    """'finegrain: WHAT …' on entry, 'finegrain: WHAT: done in S s' on exit."""
    log.info("%s …", what)
    t0 = time.perf_counter()
    yield
    log.info("%s: done in %.1f s", what, time.perf_counter() - t0)
