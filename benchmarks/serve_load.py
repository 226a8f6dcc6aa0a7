"""Load on `finegrain serve`: requests/s and latency at concurrency 1, 8 and 32 over loopback, with the
`finegrain embed` throughput on the same photos measured in the same run.

    FINEGRAIN_CACHE_DIR=/tmp/finegrain-bench-cache finegrain fit ../shared/data/cub100 -o /tmp/serve-model -q
    python benchmarks/serve_load.py --model /tmp/serve-model                 # 30 s per level
    python benchmarks/serve_load.py --model /tmp/serve-model --duration 10   # quick look

Starts `finegrain serve MODEL` on 127.0.0.1 and a free port, waits for /readyz, then for each concurrency
level runs that many client threads (one keep-alive connection each) posting cub100 test photos as raw JPEG
bodies to /v1/models/NAME/predict for --duration seconds (and at most --max-requests requests), and stops the
server. Bounded in time and count; loopback only. Writes benchmarks/results/serve_load.json.
"""
from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from _common import machine, shared_dataset, write_result

HOST = "127.0.0.1"
READY_TIMEOUT_S = 180


def test_photos(n: int) -> list[Path]:
    """A fixed, class-spread subset of the cub100 test split (every k-th test row, sorted)."""
    root = shared_dataset("cub100")
    with (root / "manifest.csv").open(newline="") as fh:
        rows = sorted((r for r in csv.DictReader(fh) if r.get("split") == "test"), key=lambda r: r["path"])
    step = max(1, len(rows) // n)
    return [root / r["path"] for r in rows[::step][:n]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: Path, port: int, extra: list[str]) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("finegrain")
    proc = subprocess.Popen([str(exe), "serve", str(model), "--host", HOST, "--port", str(port), "-q", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server stopped: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not become ready in time")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def client_loop(port: int, path: str, bodies: list[bytes], offset: int, stop_at: float, budget: list[int],
                lock: threading.Lock, latencies: list[float], errors: list[int]) -> None:
    """One keep-alive connection posting photos until the time is up or the shared request budget is spent."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    i = offset
    try:
        while time.monotonic() < stop_at:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            body = bodies[i % len(bodies)]
            i += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
            latencies.append(time.perf_counter() - t0)
            if not ok:
                errors.append(1)
    finally:
        conn.close()


def run_level(port: int, path: str, bodies: list[bytes], concurrency: int, duration: float,
              max_requests: int) -> dict:
    latencies: list[float] = []
    errors: list[int] = []
    budget, lock = [max_requests], threading.Lock()
    start = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(port, path, bodies, k * 7, start + duration, budget, lock,
                                                          latencies, errors)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    lat = np.asarray(latencies) * 1000
    return {"concurrency": concurrency, "seconds": round(wall, 2), "requests": len(latencies), "errors": len(errors),
            "requests_per_s": round(len(latencies) / wall, 1),
            **{f"p{q}_ms": round(float(np.percentile(lat, q)), 1) if len(lat) else None for q in (50, 95, 99)}}


def embed_throughput(photos: list[Path], backbone: str) -> dict:
    """The `finegrain embed` engine on the same photos (decode + preprocess + ONNX backbone, computed, not cached),
    timed in this process after a warm-up: the throughput the server's batching should approach."""
    from finegrain.data.samples import Sample
    from finegrain.embed import embed_samples
    from finegrain.store import EmbeddingCache

    samples = [Sample(p, p.parent.name) for p in photos]
    with tempfile.TemporaryDirectory() as tmp:
        embed_samples(samples[:8], backbone, cache=None, progress=False)  # load + ONNX export, untimed
        with EmbeddingCache(Path(tmp) / "cache") as cache:
            t0 = time.perf_counter()
            emb = embed_samples(samples, backbone, cache=cache, progress=False)
            wall = time.perf_counter() - t0
    return {"images": len(emb.samples), "seconds": round(wall, 2), "images_per_s": round(len(emb.samples) / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("/tmp/serve-model"), help="model folder from `finegrain fit`")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per concurrency level (default 30)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--images", type=int, default=300, help="cub100 test photos cycled through (default 300)")
    ap.add_argument("--max-requests", type=int, default=50_000, help="cap per level (default 50,000)")
    ap.add_argument("--note", default="", help="recorded with the results, e.g. 'under contention'")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `finegrain serve` option (repeatable)")
    args = ap.parse_args()
    if not (args.model / "config.json").is_file():
        sys.exit(f"{args.model} is not a model folder: fit one first (see this script's docstring)")
    if not 0 < args.duration <= 120 or max(args.concurrency) > 64:
        sys.exit("keep --duration in (0, 120] s and --concurrency at most 64")
    photos = test_photos(args.images)
    bodies = [p.read_bytes() for p in photos]
    name = args.model.resolve().name
    port = free_port()
    load_before = os.getloadavg()
    proc = start_server(args.model, port, args.serve_arg)
    try:
        rss_before = rss_mib(proc.pid)
        path = f"/v1/models/{name}/predict?top_k=5"
        levels = []
        for c in args.concurrency:
            levels.append(run_level(port, path, bodies, c, args.duration, args.max_requests))
            print(json.dumps(levels[-1]), flush=True)
        rss_after = rss_mib(proc.pid)
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as r:
            batch_lines = [ln for ln in r.read().decode().splitlines() if ln.startswith("finegrain_batch_size_")]
    finally:
        stop_server(proc)
    embed = embed_throughput(photos, json.loads((args.model / "config.json").read_text())["backbone"])
    print(json.dumps({"finegrain_embed": embed}), flush=True)
    sums = {ln.split("{")[0]: float(ln.split()[-1]) for ln in batch_lines if "_sum" in ln or "_count" in ln}
    mean_batch = sums.get("finegrain_batch_size_sum", 0) / max(1.0, sums.get("finegrain_batch_size_count", 0))
    result = {"model": str(args.model), "images": len(photos), "duration_per_level_s": args.duration,
              "levels": levels, "mean_backbone_batch": round(mean_batch, 2),
              "server_rss_mib": {"ready": round(rss_before, 1), "after_load": round(rss_after, 1)},
              "finegrain_embed": embed, "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "note": args.note, "machine": machine()}
    print(f"wrote {write_result('serve_load', result)}")


if __name__ == "__main__":
    main()
