"""In-process engine vs `--engine ray` on one node, on the same images: images/s, memory per model actor, time
to first result — and, from the measured per-core rate, the throughput model for N nodes × C cores.

    python benchmarks/ray_scale.py                    # 2,000 cub100 images
    python benchmarks/ray_scale.py --images 1000      # quicker
    python benchmarks/ray_scale.py --images 1000 --plankton 1000   # cub100 + ndsb_plankton

Both engines run `finegrain embed` (efficientnet_lite0 in ONNX Runtime: the network is the cost, a head adds
microseconds per image) as a child process on one manifest of the chosen images, with the ONNX export made
beforehand and shared, and an embedding cache that holds none of them. The in-process engine gets every core
(--threads/--workers = cores); the Ray job starts a local Ray on every core with one model actor per core but
one (1 thread each), the last core left to the read/decode tasks. Writes benchmarks/results/ray_scale.json and
prints a README paragraph.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, shared_dataset, write_result

IMAGES_PER_DAY = 700_000_000
SECONDS_PER_DAY = 86_400
CLUSTER_EFFICIENCY = 0.85  # assumed share of the per-core rate kept across nodes (object store, stragglers)
POLL_S = 0.2
PROBE_IMAGES = 16  # a Ray job this small is almost all start-up: its wall time is the fixed cost subtracted


def manifest_rows(dataset: str, n: int) -> list[tuple[str, str]]:
    """(absolute path, label) of n images spread over the dataset's classes (every k-th manifest row)."""
    if n <= 0:
        return []
    root = shared_dataset(dataset)
    with (root / "manifest.csv").open(newline="") as fh:
        rows = [(str(root / r["path"]), r["label"]) for r in csv.DictReader(fh)]
    step = max(1, len(rows) // n)
    return rows[::step][:n]


def write_manifest(rows: list[tuple[str, str]], path: Path) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return path


def finegrain_cmd(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("finegrain")), *args]


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def processes_titled(fragment: str) -> list[int]:
    """Ray worker processes whose title (Ray sets it to the task or actor they run) contains `fragment`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().decode(errors="replace") if proc.name.isdigit() else ""
        except OSError:
            continue
        if title.startswith("ray::") and fragment in title:
            pids.append(int(proc.name))
    return pids


def run_watched(cmd: list[str], out: Path, watch: dict[str, str]) -> dict:
    """Run cmd to the end, sampling its RSS, the RSS of Ray processes titled after each `watch` fragment, and
    when the first Parquet shard appears in `out`."""
    log = tempfile.TemporaryFile(mode="w+")  # not a pipe: nobody reads it while the job runs
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    peak = {"driver": 0.0, **{name: 0.0 for name in watch}}
    first_shard = None
    while proc.poll() is None:
        peak["driver"] = max(peak["driver"], rss_mib(proc.pid))
        for name, fragment in watch.items():
            peak[name] = max([peak[name]] + [rss_mib(p) for p in processes_titled(fragment)])
        if first_shard is None and out.is_dir() and any(out.glob("*.parquet")):
            first_shard = time.perf_counter() - t0
        time.sleep(POLL_S)
    wall = time.perf_counter() - t0
    log.seek(0)
    err = log.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall_s": wall, "first_result_s": first_shard if first_shard is not None else wall,
            "peak_rss_mib": {k: round(v, 1) for k, v in peak.items()}}


def min_cosine(local_dir: Path, ray_dir: Path) -> float:
    """The two engines' embeddings of the same files, compared image by image."""
    import pyarrow.parquet as pq

    from finegrain.embed import load_embeddings

    local = load_embeddings(local_dir)
    table = pq.read_table(ray_dir, columns=["path", "embedding"]).to_pylist()
    ray_rows = {r["path"]: r["embedding"] for r in table if r["embedding"] is not None}
    X = np.array([ray_rows[p] for p in local.paths], dtype=np.float32)
    return float(np.min(np.sum(X * local.X, axis=1)))


def throughput_model(per_core: float) -> dict:
    """Images/s of N nodes × C cores at the measured per-core rate, and the cores 700 M images a day need."""
    needed = IMAGES_PER_DAY / SECONDS_PER_DAY
    cores = needed / (per_core * CLUSTER_EFFICIENCY)
    return {"per_core_images_s": round(per_core, 2), "assumed_cluster_efficiency": CLUSTER_EFFICIENCY,
            "images_s_formula": f"N × C × {per_core:.1f} × {CLUSTER_EFFICIENCY}",
            "target_images_s_for_700M_per_day": round(needed), "cores_for_700M_per_day": int(np.ceil(cores)),
            "16_core_nodes_for_700M_per_day": int(np.ceil(cores / 16))}


def paragraph(r: dict) -> str:
    local, ray_, model = r["local"], r["ray"], r["model"]
    return (
        f"On {r['images']} images ({r['datasets']}), efficientnet_lite0 in ONNX Runtime, this {r['machine']['cpus']}-core "
        f"machine (shared with other jobs: load {r['load_before']:.1f} → {r['load_after']:.1f}), the in-process engine embedded "
        f"{local['images_s']:.1f} images/s (first result when all were done, {local['first_result_s']:.0f} s; peak "
        f"{local['peak_rss_mib']['driver']:.0f} MiB) and `--engine ray` on one node {ray_['images_s']:.1f} images/s end to end, "
        f"{ray_['steady_images_s']:.1f} images/s once running (its wall time minus that of a {PROBE_IMAGES}-image job, "
        f"{ray_['fixed_cost_s']:.1f} s of Ray start-up, model loading and shutdown; first shard after "
        f"{ray_['first_result_s']:.1f} s; model actor peak {ray_['peak_rss_mib']['actor']:.0f} MiB, decode worker "
        f"{ray_['peak_rss_mib']['decode']:.0f} MiB); embeddings agree to cosine ≥ {r['min_cosine']:.6f}. "
        f"Throughput model: images/s ≈ N nodes × C cores × {model['per_core_images_s']:.1f} (the steady per-core rate here, "
        f"decoding included) × {model['assumed_cluster_efficiency']} (assumed efficiency across nodes). 700 M images in a "
        f"day is {model['target_images_s_for_700M_per_day']:,} images/s: about {model['cores_for_700M_per_day']:,} such "
        f"cores, i.e. {model['16_core_nodes_for_700M_per_day']} nodes of 16 cores, reading from an object store that "
        f"serves that rate (~{model['target_images_s_for_700M_per_day'] * 60 / 1000:.0f} MB/s at 60 kB per photo)."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000, help="cub100 images (default 2000)")
    ap.add_argument("--plankton", type=int, default=0, help="ndsb_plankton images added to them (default 0)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--actor-threads", type=int, default=1, help="threads per model actor (default 1)")
    ap.add_argument("--ray-cpus", type=int, default=None, help="CPUs Ray may schedule (default: the cores)")
    ap.add_argument("--name", default="ray_scale", help="results file name (default ray_scale)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    if args.images + args.plankton < 20 * PROBE_IMAGES:
        print(f"note: with under {20 * PROBE_IMAGES} images the steady rate is mostly timing noise", file=sys.stderr)
    rows = manifest_rows("cub100", args.images) + manifest_rows("ndsb_plankton", args.plankton)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="finegrain-ray-bench-") as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        manifest = write_manifest(rows, tmp / "images.csv")
        warm = write_manifest(manifest_rows("cub100", 5900)[-4:], tmp / "warm.csv")  # not among the measured ones
        subprocess.run(finegrain_cmd("embed", str(warm), "-o", str(tmp / "warm"), "--cache-dir", str(cache), "-q"),
                       check=True)  # the ONNX export, once, shared by both engines
        common = ["--cache-dir", str(cache), "--batch-size", str(args.batch_size), "-q"]
        local = run_watched(finegrain_cmd("embed", str(manifest), "-o", str(tmp / "local"), "--threads", str(cores),
                                          "--workers", str(cores), *common), tmp / "local", {})
        ray_args = ["--engine", "ray", "--ray-cpus", str(args.ray_cpus or cores), "--ray-actors", str(max(1, cores - 1)),
                    "--threads", str(args.actor_threads), "--shard-rows", str(max(8, len(rows) // 16)), *common]
        watch = {"actor": "MapBatches(Embedder)", "decode": "MapBatches(read_and_hash)"}
        probe = run_watched(finegrain_cmd("embed", str(write_manifest(rows[:PROBE_IMAGES], tmp / "probe.csv")),
                                          "-o", str(tmp / "ray-probe"), *ray_args), tmp / "ray-probe", watch)
        ray_ = run_watched(finegrain_cmd("embed", str(manifest), "-o", str(tmp / "ray"), *ray_args), tmp / "ray", watch)
        n = len(rows)
        local["images_s"], ray_["images_s"] = n / local["wall_s"], n / ray_["wall_s"]
        ray_["fixed_cost_s"] = probe["wall_s"]  # start-up, model load, shutdown: what a 16-image job costs
        ray_["steady_images_s"] = (n - PROBE_IMAGES) / max(1e-9, ray_["wall_s"] - probe["wall_s"])
        cosine = min_cosine(tmp / "local", tmp / "ray")
    result = {"images": n, "actor_threads": args.actor_threads, "ray_cpus": args.ray_cpus or cores, "datasets": "cub100" + (" + ndsb_plankton" if args.plankton else ""),
              "backbone": "efficientnet_lite0", "machine": machine(), "load_before": load_before,
              "load_after": os.getloadavg()[0], "local": local, "ray": ray_, "min_cosine": cosine,
              "model": throughput_model(ray_["steady_images_s"] / cores)}
    result["paragraph"] = paragraph(result)
    path = write_result(args.name, result)
    print(result["paragraph"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
