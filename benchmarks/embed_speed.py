"""Embedding speed: finegrain's engine against the pipeline a practitioner writes by hand, in one process.

    python benchmarks/embed_speed.py                      # 1,000 cub100 + 2,000 plankton images, ~6 min
    python benchmarks/embed_speed.py --cub 300 --plankton 300 --rounds 1    # quick look
    python benchmarks/embed_speed.py --part cli      # only peak RSS + CLI cold start, into the existing JSON

Writes benchmarks/results/embed_speed.json and prints a table. The baseline: PIL open → RGB → bicubic resize
of the shorter side → centre crop → normalise in numpy, in the main thread, batches of 32 through eager
PyTorch with 2 threads. finegrain: `embed_samples` with a FRESH cache folder (nothing cached; the one-off
ONNX export is done first and timed separately). Runs alternate baseline/finegrain so a load spike from
other jobs on the machine hits both; the load average is recorded with the numbers.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, machine, run_cli, shared_dataset, write_result

BACKBONE = "efficientnet_lite0"


def subset(name: str, n: int) -> list:
    """A fixed, class-spread subset: every k-th row of the manifest (sorted), so every run sees the same files."""
    from finegrain.data.samples import Sample

    root = shared_dataset(name)
    with (root / "manifest.csv").open(newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["path"])
    step = max(1, len(rows) // n)
    return [Sample(root / r["path"], r["label"], r.get("split") or None) for r in rows[::step][:n]]


def baseline_embed(paths: list[str], features, pre, batch_size: int = 32) -> np.ndarray:
    """The hand-written pipeline the issue describes, kept deliberately plain."""
    import torch
    from PIL import Image

    torch.set_num_threads(2)
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    out = []
    for i in range(0, len(paths), batch_size):
        arrays = []
        for p in paths[i:i + batch_size]:
            img = Image.open(p).convert("RGB")
            w, h = img.size
            scale = pre.resize_to / min(w, h)
            img = img.resize((max(pre.size, round(w * scale)), max(pre.size, round(h * scale))), Image.BICUBIC)
            left, top = (img.width - pre.size) // 2, (img.height - pre.size) // 2
            img = img.crop((left, top, left + pre.size, top + pre.size))
            arrays.append((np.asarray(img, dtype=np.float32) / 255.0 - mean) / std)
        x = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            f = features(x).mean(dim=(2, 3)).numpy()
        out.append(f / np.linalg.norm(f, axis=1, keepdims=True))
    return np.concatenate(out)


def finegrain_embed(samples: list, cache_dir: Path, **kw) -> np.ndarray:
    from finegrain.embed import embed_samples
    from finegrain.store import EmbeddingCache

    with EmbeddingCache(cache_dir) as cache:
        emb = embed_samples(samples, BACKBONE, cache=cache, progress=False, **kw)
    if emb.errors or emb.n_cached:
        sys.exit(f"unexpected: {len(emb.errors)} errors, {emb.n_cached} cached")
    return emb.X


def model_only(run, batch: np.ndarray, seconds: float) -> float:
    """Images/s of `run(batch)` on an already-preprocessed uint8 batch: the ceiling for end to end."""
    run(batch)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run(batch)
        n += len(batch)
    return n / (time.perf_counter() - t0)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def fresh_export(work: Path) -> tuple[Path, float]:
    """Export the ONNX model into a fresh cache folder (the one-off cost a first run pays), timed."""
    from finegrain.backbones import get_backbone
    from finegrain.backbones.onnx_runtime import export_checked, model_file

    bb = get_backbone(BACKBONE)
    onnx_dir = work / "export" / "onnx"
    t0 = time.perf_counter()
    export_checked(bb, model_file(bb, onnx_dir))
    return onnx_dir, time.perf_counter() - t0


def fresh_cache(work: Path, onnx_dir: Path, tag: str) -> Path:
    """An empty embedding cache that already holds the exported model."""
    d = work / f"cache-{tag}"
    shutil.copytree(onnx_dir, d / "onnx")
    return d


def compare(name: str, samples: list, work: Path, onnx_dir: Path, rounds: int, kw: dict) -> dict:
    """Alternate baseline, model-only ceiling and finegrain on the same files; keep each one's best round."""
    from finegrain.backbones import get_backbone
    from finegrain.backbones.onnx_runtime import resolve_runtime

    bb = get_backbone(BACKBONE)
    onnx = resolve_runtime(bb, "onnx", onnx_dir)
    paths = [str(s.path) for s in samples]
    for p in paths:  # same page cache state for both sides
        Path(p).read_bytes()
    size = bb.preprocess.size
    batch = np.random.default_rng(0).integers(0, 256, (32, size, size, 3), dtype=np.uint8)
    base_s, fg_s, ceil, loads = [], [], [], []
    for r in range(rounds):
        loads.append(load_average())
        t0 = time.perf_counter()
        ref = baseline_embed(paths, bb.features, bb.preprocess)
        base_s.append(time.perf_counter() - t0)
        ceil.append(model_only(onnx.embed, batch, seconds=len(paths) / 100))
        t0 = time.perf_counter()
        got = finegrain_embed(samples, fresh_cache(work, onnx_dir, f"{name}-{r}"), **kw)
        fg_s.append(time.perf_counter() - t0)
        print(f"  {name} round {r}: baseline {len(paths) / base_s[-1]:.1f} img/s, "
              f"finegrain {len(paths) / fg_s[-1]:.1f} img/s, model only {ceil[-1]:.1f} img/s "
              f"(load {loads[-1]})", file=sys.stderr)
    cos = np.sum(ref * got, axis=1)
    base, fg = len(paths) / min(base_s), len(paths) / min(fg_s)
    return {"images": len(paths), "baseline_img_s": round(base, 1), "finegrain_img_s": round(fg, 1),
            "ratio": round(fg / base, 2), "ratio_per_round": [round(b / f, 2) for b, f in zip(base_s, fg_s)],
            "onnx_model_only_img_s": round(max(ceil), 1), "fraction_of_ceiling": round(fg / max(ceil), 2),
            "min_cosine_vs_baseline": round(float(cos.min()), 6), "load_average_1min": loads}


def ceilings(onnx_dir: Path, seconds: float) -> dict:
    """Model-only throughput on preprocessed uint8 batches of 32: ONNX Runtime as the engine runs it, and eager
    PyTorch (2 threads) as the baseline runs it."""
    import torch

    from finegrain.backbones import get_backbone
    from finegrain.backbones.onnx_runtime import MICRO_BATCH, resolve_runtime

    bb = get_backbone(BACKBONE)
    torch.set_num_threads(2)
    size = bb.preprocess.size
    batch = np.random.default_rng(0).integers(0, 256, (32, size, size, 3), dtype=np.uint8)
    onnx = resolve_runtime(bb, "onnx", onnx_dir)
    return {"batch_size": 32, "onnx_micro_batch": MICRO_BATCH,
            "onnx_img_s": round(model_only(onnx.embed, batch, seconds), 1),
            "torch_img_s": round(model_only(bb.embed, batch, seconds), 1), "load_average_1min": load_average()}


def single_image_latency(samples: list, n: int = 30) -> dict:
    """Warm process, one file per call, nothing cached: the Python API / server path."""
    from finegrain.embed import embed_samples

    embed_samples(samples[:1], BACKBONE, cache=None, progress=False)
    times = []
    for s in samples[1:n + 1]:
        t0 = time.perf_counter()
        embed_samples([s], BACKBONE, cache=None, progress=False)
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(float(np.median(times)), 1), "p90_ms": round(float(np.percentile(times, 90)), 1),
            "calls": len(times)}


def peak_rss(samples: list, work: Path, onnx_dir: Path, tag: str) -> float:
    """Peak RSS (MiB) of `finegrain embed` on these images in a child process, fresh cache."""
    manifest = work / f"{tag}.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows([str(s.path), s.label] for s in samples)
    cache = fresh_cache(work, onnx_dir, f"rss-{tag}")
    code = ("import resource, sys; from finegrain.cli.main import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, "embed", str(manifest), "-o", str(work / f"emb-{tag}"),
                          "--cache-dir", str(cache), "-q"], capture_output=True, text=True, check=True)
    return round(int(out.stdout.strip().splitlines()[-1]) / 1024, 0)


def cold_start(samples: list, work: Path, onnx_dir: Path) -> dict:
    """`finegrain predict MODEL one.jpg` wall time: a model fitted on a small sample, the image not cached."""
    train = work / "train.csv"
    with train.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows([str(s.path), s.label] for s in samples[:-3])
    cache = fresh_cache(work, onnx_dir, "cli")
    env = {"FINEGRAIN_CACHE_DIR": str(cache)}
    run_cli(["fit", str(train), "-o", str(work / "model"), "-q"], env)
    walls = [run_cli(["predict", str(work / "model"), str(s.path), "-q"], env)[0] for s in samples[-3:]]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    torch_import = time.perf_counter() - t0
    return {"predict_one_image_s": round(min(walls), 2), "predict_runs_s": [round(w, 2) for w in walls],
            "python_import_torch_s": round(torch_import, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cub", type=int, default=1000, help="cub100 images (default 1000)")
    ap.add_argument("--plankton", type=int, default=2000, help="ndsb_plankton images (default 2000)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating baseline/finegrain rounds (best kept)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--part", choices=["all", "speed", "cli"], default="all",
                    help="speed: the side-by-side runs; cli: peak RSS and cold start of child `finegrain` runs, "
                         "added to an existing results file")
    ap.add_argument("--name", default="embed_speed", help="results file name (default embed_speed)")
    args = ap.parse_args()
    kw = {"batch_size": args.batch_size, "workers": args.workers}
    work = Path(tempfile.mkdtemp(prefix="fg-speed-"))
    result = {"machine": machine(), "backbone": BACKBONE, "engine": kw}
    if args.part == "cli":
        result = json.loads((RESULTS / f"{args.name}.json").read_text())
    onnx_dir, export_s = fresh_export(work)
    data = {"cub100": subset("cub100", args.cub), "ndsb_plankton": subset("ndsb_plankton", args.plankton)}
    if args.part != "cli":
        result["load_average_start"] = load_average()
        result["onnx_export_s"] = round(export_s, 1)
        result["model_only"] = ceilings(onnx_dir, seconds=8)
        for name, samples in data.items():
            result[name] = compare(name, samples, work, onnx_dir, args.rounds, kw)
        result["single_image_latency"] = single_image_latency(data["cub100"])
        result["load_average_end"] = load_average()
    if args.part != "speed":
        result["peak_rss_mib"] = {f"{name}_{len(s)}": peak_rss(s, work, onnx_dir, name) for name, s in data.items()}
        result["cli_cold_start"] = cold_start(subset("cub100", 200), work, onnx_dir)
        result["cli_load_average"] = load_average()
    path = write_result(args.name, result)
    shutil.rmtree(work, ignore_errors=True)
    print_table(result)
    print(f"\nresults: {path}")


def print_table(r: dict) -> None:
    m = r["model_only"]
    print(f"{'dataset':<14}{'images':>7}{'baseline img/s':>16}{'finegrain img/s':>17}{'ratio':>7}"
          f"{'of ceiling':>12}{'min cos':>9}")
    for name in ("cub100", "ndsb_plankton"):
        d = r[name]
        print(f"{name:<14}{d['images']:>7}{d['baseline_img_s']:>16}{d['finegrain_img_s']:>17}{d['ratio']:>7}"
              f"{d['fraction_of_ceiling']:>12.0%}{d['min_cosine_vs_baseline']:>9}")
    print("of ceiling: finegrain end to end / ONNX model-only throughput measured in the same rounds")
    print(f"model only (batch {m['batch_size']}, uint8 in): ONNX Runtime {m['onnx_img_s']} img/s, "
          f"PyTorch eager {m['torch_img_s']} img/s; one-off ONNX export {r['onnx_export_s']} s")
    lat = r["single_image_latency"]
    print(f"single image, warm: median {lat['median_ms']} ms (p90 {lat['p90_ms']} ms)")
    if "cli_cold_start" in r:
        print(f"peak RSS of `finegrain embed`: {r['peak_rss_mib']} MiB; "
              f"`finegrain predict MODEL one.jpg`: {r['cli_cold_start']['predict_one_image_s']} s")
    print(f"load average: start {r['load_average_start']}, end {r['load_average_end']}")


if __name__ == "__main__":
    main()
