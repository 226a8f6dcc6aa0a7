"""Joining or starting Ray: the only place `ray` is imported for the batch jobs, so a missing extra is one clear
error and `finegrain --help` never pays for the import."""
from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

from ..errors import ConfigError, FinegrainError, MissingExtraError


def import_ray() -> ModuleType:
    """`ray` with Ray Data, or a MissingExtraError that says which extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data ships in the 'data' extra of ray, not in ray itself
    except ImportError as exc:
        raise MissingExtraError("ray[data]", "--engine ray", "ray") from exc
    return ray


@contextmanager
def ray_session(address: str | None, num_cpus: int | None, quiet: bool) -> Iterator[ModuleType]:
    """Ray for one job: the session already open in this process, else the cluster at `address`, else a local
    Ray on `num_cpus` cores (default: all) without a dashboard. Only a session opened here is shut down here."""
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home from an offline machine
    level = logging.WARNING if quiet else logging.INFO
    logging.getLogger("ray.data").setLevel(level)  # Ray Data logs its plan and progress at INFO
    if ray.is_initialized():
        yield ray
        return
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, logging_level=level, log_to_driver=not quiet)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=level,
                     log_to_driver=not quiet)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ... here
        raise FinegrainError(f"cannot {'join the Ray cluster at ' + address if address else 'start a local Ray'}",
                             expected="a running cluster reachable from here" if address else "Ray able to start",
                             found=first_line(exc), fix="check --ray-address (e.g. auto on a cluster node, or "
                             "HOST:6379) and that `ray status` works here" if address else "see `ray start --head`") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a HOST:PORT (or ray://HOST:PORT) nothing listens on: `ray.init` retries such an
    address for minutes before giving up. "auto" and other forms are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise FinegrainError(f"cannot join the Ray cluster at {address}", expected="a Ray head listening there",
                             found=f"{type(exc).__name__}: {exc}",
                             fix="check --ray-address (HOST:6379, or ray://HOST:10001 for Ray Client; auto on a "
                                 "cluster node) and that `ray status` works there") from None


def check_cpu_budget(ray: ModuleType, actors: int, cpus_per_actor: float) -> None:
    """Refuse a pool of model actors that would take every CPU: Ray Data's decode tasks would then never be
    scheduled and the job would wait forever instead of failing."""
    total = float(ray.cluster_resources().get("CPU", 0))
    if actors * cpus_per_actor >= total:
        raise ConfigError(f"{actors} model actor(s) × {cpus_per_actor:g} CPU leave no CPU for decoding images",
                          expected=f"fewer than {total:g} CPUs for the actors (the cluster has {total:g})",
                          found=f"--ray-actors {actors} with {cpus_per_actor:g} thread(s) each",
                          fix="lower --ray-actors or --threads, or give Ray more CPUs (--ray-cpus, more nodes)")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (Ray's carry whole remote tracebacks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def job_failed(exc: BaseException) -> FinegrainError:
    """A failed Ray job, told as one error: finished shards stay, so the fix is to rerun."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), first_line(exc))
    return FinegrainError("the Ray job failed", expected="every batch processed (bad images only make error rows)",
                          found=cause, fix="fix the cause, then rerun the same command: it resumes, keeping the "
                                           "shards already written")
