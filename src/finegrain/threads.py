"""One thread budget for every numeric library, so a busy machine does not slow finegrain tenfold.

PyTorch and ONNX Runtime get the budget (`--threads N`, `FINEGRAIN_THREADS`, else one per core). The heads'
solvers (scikit-learn's L-BFGS, SciPy and NumPy linear algebra on N×1280 matrices) get one BLAS thread: on
matrices that small, extra OpenBLAS threads only spin, and next to a CPU-burning neighbour they made a
logistic fit on 232×1280 take 7.2 s instead of 0.12 s (`benchmarks/threads.py` measures `fit` and `align`).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from .errors import ConfigError

ENV = "FINEGRAIN_THREADS"
_budget: int | None = None


def _from_env() -> int | None:
    for name in (ENV, "FINEGRAIN_TORCH_THREADS"):  # the second: the older, torch-only name
        value = os.environ.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"{name}={value!r} is not a thread count", expected="a whole number ≥ 1",
                                  found=value, fix=f"unset {name} or set it to e.g. 2")
            return int(value)
    return None


def thread_budget() -> int:
    """Threads for the network runtimes: set_thread_budget(), else FINEGRAIN_THREADS, else the number of cores."""
    return _budget or _from_env() or (os.cpu_count() or 1)


def set_thread_budget(n: int | None) -> None:
    """`--threads N` (None: back to the environment/default)."""
    global _budget
    if n is not None and n < 1:
        raise ConfigError(f"--threads {n} is not a thread count", expected="a whole number ≥ 1", found=str(n),
                          fix="use e.g. --threads 2")
    _budget = n


@contextmanager
def solver_threads(n: int = 1) -> Iterator[None]:
    """BLAS threads for the heads' small-matrix solvers (1 by default); PyTorch's own pool is left alone."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield
