"""Thread budget benchmark: `finegrain fit` on cub100 (warm embedding cache) quiet and next to a CPU-burning
neighbour, with this checkout and with an older one (before the thread budget), in one run.

    python benchmarks/threads.py --before-src /tmp/finegrain-before/src      # writes results/threads.json

`--before-src` is the `src/` folder of a checkout before the change (e.g. `git worktree add /tmp/finegrain-before
b3c3815`); it is put first on PYTHONPATH for the "before" rows. The neighbour is one process per core spinning
in pure Python, started just before and stopped just after each busy row. Also measured in-process: one
scikit-learn LogisticRegression on 232×1280 (the case that showed the slowdown) with all BLAS threads and with one.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

from _common import machine, run_cli, shared_dataset, write_result

CACHE = Path(os.environ.get("FINEGRAIN_BENCH_CACHE", "/tmp/finegrain-bench-cache"))


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31


class Neighbour:
    """One spinning process per core, as a busy machine has."""

    def __enter__(self):
        self.stop = mp.Event()
        self.procs = [mp.Process(target=_spin, args=(self.stop,), daemon=True) for _ in range(os.cpu_count() or 1)]
        for p in self.procs:
            p.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for p in self.procs:
            p.join(5)


def fit_seconds(data: Path, env: dict, busy: bool) -> float:
    args = ["fit", str(data), "-o", str(CACHE / "work" / "threads_model"), "-q"]
    if busy:
        with Neighbour():
            return run_cli(args, env)[0]
    return run_cli(args, env)[0]


def logistic_seconds(limit: int | None) -> float:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(232, 1280)), np.arange(232) % 10
    with threadpool_limits(limits=limit, user_api="blas"):
        t0 = time.perf_counter()
        LogisticRegression(max_iter=300).fit(X, y)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-src", type=Path, default=None)
    args = ap.parse_args()
    data = shared_dataset("cub100")
    env = {"FINEGRAIN_CACHE_DIR": str(CACHE)}
    run_cli(["fit", str(data), "-o", str(CACHE / "work" / "threads_model"), "-q"], env)  # warm the cache
    versions = {"after": env}
    if args.before_src:
        versions["before"] = {**env, "PYTHONPATH": str(args.before_src)}
    result = {"machine": machine(), "load_before": os.getloadavg(), "fit_cub100_warm_s": {}}
    for name, version_env in versions.items():
        for busy in (False, True):
            t = fit_seconds(data, version_env, busy)
            result["fit_cub100_warm_s"][f"{name}_{'busy' if busy else 'quiet'}"] = round(t, 1)
            print(f"fit {name:6s} {'busy' if busy else 'quiet':5s} {t:6.1f} s")
    result["logistic_232x1280_s"] = {}
    for busy in (False, True):
        for limit in (None, 1):
            if busy:
                with Neighbour():
                    t = logistic_seconds(limit)
            else:
                t = logistic_seconds(limit)
            key = f"{'busy' if busy else 'quiet'}_{'1_thread' if limit else 'all_threads'}"
            result["logistic_232x1280_s"][key] = round(t, 2)
            print(f"LogisticRegression {key:20s} {t:6.2f} s")
    print(json.dumps(result, indent=2))
    write_result("threads", result)


if __name__ == "__main__":
    main()
