"""`predict --engine ray --ray-address` on a real two-node Ray cluster on loopback (two `ray start` on this
machine, 1 CPU each), with the model actor killed mid-run: the job completes (Ray restarts the actor and
retries its batches) or, failing that, a rerun resumes; either way every input gets exactly one right row."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scale_support import build_scale_data

ray = pytest.importorskip("ray")

from finegrain.scale.shards import read_shards  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))
LOOPBACK = "127.0.0.1"
# A cluster of our own on loopback: no usage stats, and no auth token to share between the two `ray start`s.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def ray_cli(*args: str, check: bool = True) -> None:
    subprocess.run([RAY, *args], env={**os.environ, **RAY_ENV}, check=check, timeout=90,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def cluster_address() -> str:
    """A head node and a second node, 1 CPU each, both on 127.0.0.1; stopped whatever happens."""
    port = free_port()
    try:
        ray_cli("start", "--head", f"--port={port}", f"--node-ip-address={LOOPBACK}", "--num-cpus=1",
                "--include-dashboard=false")
        ray_cli("start", f"--address={LOOPBACK}:{port}", f"--node-ip-address={LOOPBACK}", "--num-cpus=1")
        yield f"{LOOPBACK}:{port}"
    finally:
        ray_cli("stop", "--force", check=False)


def actor_pid() -> int | None:
    """The process of our model actor (Ray titles it after the map step), if it is running."""
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().decode(errors="replace") if proc.name.isdigit() else ""
        except OSError:  # the process ended while we looked
            continue
        if title.startswith("ray::") and "MapBatches(Predictor)" in title:
            return int(proc.name)
    return None


def kill_actor_mid_run(out: Path, job: subprocess.Popen, deadline_s: float = 90) -> bool:
    """SIGKILL the model actor once the first shard is written (so the job is under way), while it runs."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and job.poll() is None:
        pid = actor_pid()
        if pid is not None and any(out.glob("*.parquet")):
            os.kill(pid, signal.SIGKILL)
            return True
        time.sleep(0.05)
    return False


def test_killed_actor_on_a_two_node_cluster_loses_no_row(cluster_address, tmp_path, tmp_path_factory):
    from finegrain.pipeline import Classifier

    scale = build_scale_data(tmp_path_factory)
    inputs = tmp_path / "inputs"
    for i in range(6):  # 6 × 16 inputs, 4 per shard: plenty of work left after the first shard
        shutil.copytree(scale["test"], inputs / f"copy{i}")
    out = tmp_path / "preds"
    cmd = [sys.executable, "-m", "finegrain", "predict", str(scale["model"]), str(inputs), "--engine", "ray",
           "--ray-address", cluster_address, "--output", str(out), "--batch-size", "2", "--shard-rows", "4", "-q"]
    env = {**os.environ, **RAY_ENV}
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = kill_actor_mid_run(out, job)
    _, err = job.communicate(timeout=180)
    assert killed, f"the job ended before its actor could be killed: {err[-2000:]}"
    if job.returncode != 0:  # Ray could not recover in place: the rerun must finish the job
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = read_shards(str(out)).to_pylist()
    local = Classifier.load(scale["model"]).predict([inputs], top_k=5)
    assert sorted(r["path"] for r in rows) == sorted(p.path for p in local)  # each input once, none lost
    got = {r["path"]: r for r in rows}
    assert all(got[p.path]["label"] == p.label and got[p.path]["error"] == p.error for p in local)


def test_finetune_joins_the_cluster_one_worker_per_node(cluster_address, tmp_path):
    """`finetune --engine ray --ray-address`: 2 Ray Train workers of 1 CPU, so one on each node, training with
    DDP across the nodes (gloo over loopback); both nodes are this machine, so they share the cache folder."""
    import json

    from conftest import make_split_folder

    data = make_split_folder(tmp_path / "birds")
    cmd = [sys.executable, "-m", "finegrain", "finetune", str(data), "-o", str(tmp_path / "tuned"), "--epochs", "2",
           "--backbone", "tiny", "--train-blocks", "1", "--views", "2", "--precision", "fp32", "-q",
           "--engine", "ray", "--ray-workers", "2", "--ray-address", cluster_address]
    done = subprocess.run(cmd, env={**os.environ, **RAY_ENV}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    member = json.loads((tmp_path / "tuned" / "config.json").read_text())["finetune"]["members"][0]
    assert member["engine"] == {"ray_workers": 2, "ray_address": cluster_address}
    assert len(member["history"]) == 2 and member["backbone"].startswith("finetuned:tiny.")
