"""Helpers shared by the benchmark scripts: locating ../shared data, timing CLI runs, writing results."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FINEGRAIN_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        sys.exit(f"benchmark data {path} not found: set FINEGRAIN_SHARED_DATA to the folder holding '{name}'")
    return path


def run_cli(args: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run `finegrain ARGS` in a child process; return (wall seconds, stdout). Fails loudly."""
    exe = Path(sys.executable).with_name("finegrain")
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"finegrain {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def peak_rss_children_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
