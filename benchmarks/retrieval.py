"""Similar-image search benchmark: retrieval quality on cub100 and speed/memory at a million vectors.

    cd benchmarks && FINEGRAIN_THREADS=1 OMP_NUM_THREADS=1 python retrieval.py --part quality   # → results/retrieval.json
    cd benchmarks && FINEGRAIN_THREADS=1 OMP_NUM_THREADS=1 python retrieval.py --part scale     # → results/retrieval_scale.json
    cd benchmarks && FINEGRAIN_THREADS=1 OMP_NUM_THREADS=1 python retrieval.py --part views     # → results/retrieval_views.json
    cd benchmarks && FINEGRAIN_THREADS=1 OMP_NUM_THREADS=1 python retrieval.py --part pq --n 200000  # → results/retrieval_pq.json

Quality: cub100 test images are the queries, the train split the gallery (the index is fitted on train only);
Recall@1/5/10, precision@10 and mAP@R for stock efficientnet_lite0, lite0+lite1+lite2 joined, and the fine-tuned
cub100 model (benchmarks/finetune.py's `cub100_lite0_224_s0`), under each embedding transform; then, for lite0,
exact vs approximate vs compressed codes side by side with bytes per image and milliseconds per query.
Embeddings come from the benchmark cache (FINEGRAIN_BENCH_CACHE, default /tmp/finegrain-bench-cache).

Scale: 1,000,000 vectors = the 5,902 real cub100 lite0 embeddings (square root, whitened on train, 256
principal components: what `finegrain index --transform whiten --dim 256` stores) plus seeded Gaussian jitter;
1,000 queries are fresh jitters. Each index kind is built in its own process (peak RSS is that process's), with
one thread; query latency is one query at a time at k=10; Recall@10 is against exact search on the same vectors.
The re-ranked PQ kind (`ivfpq_rerank`: `index --codes pq --rerank 10`) is saved, then loaded and queried in a
fresh process, so its memory is what a user's `search`/`serve` holds: PQ codes in RAM, float16 vectors mapped.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, machine, shared_dataset, write_result

BENCH_CACHE = Path(os.environ.get("FINEGRAIN_BENCH_CACHE", "/tmp/finegrain-bench-cache"))
LITE012 = "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2"
TUNED = BENCH_CACHE / "work" / "cub100_lite0_224_s0"
N_SCALE, N_QUERIES, SCALE_DIM, JITTER = 1_000_000, 1000, 256, 0.5
LOAD_NOTE = "a fine-tuning benchmark (2 threads) shared the 2 cores throughout: timings are upper bounds"
SCALE_KINDS = ("hnsw", "ivf", "ivfpq", "exact", "binary", "hnsw_float16", "ivfpq_rerank")
RERANK = 10  # `index --rerank`: faiss's RERANK × k best re-scored from the float16 vectors


def cub_embeddings(backbone: str):
    from finegrain.data.sources import load_data
    from finegrain.embed import embed_samples
    from finegrain.store import EmbeddingCache

    ds = load_data(shared_dataset("cub100"))
    with EmbeddingCache(BENCH_CACHE) as cache:
        train = embed_samples(ds.select(["train"]), backbone, cache=cache, progress=False)
        test = embed_samples(ds.select(["test"]), backbone, cache=cache, progress=False)
    return train, test


def score(index, test) -> dict:
    from finegrain.retrieval.api import neighbour_labels
    from finegrain.retrieval.metrics import retrieval_metrics

    gallery = [r.label for r in index.rows]
    k = max(10, int(np.unique(gallery, return_counts=True)[1].max()))
    t0 = time.perf_counter()
    labels, _ = neighbour_labels(index, test, k)
    ms = 1000 * (time.perf_counter() - t0) / len(test.samples)
    m = retrieval_metrics(labels, test.labels, gallery, (1, 5, 10))
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp) / "idx")
    return {"recall@1": round(m["recall@1"], 4), "recall@5": round(m["recall@5"], 4),
            "recall@10": round(m["recall@10"], 4), "precision@10": round(m["precision@10"], 4),
            "map@r": round(m["map@r"], 4), "code_bytes": index.meta["code_bytes"],
            "bytes_per_image": index.meta["bytes_per_image"], "ms_per_query": round(ms, 3),
            "factory": index.meta["factory"], "transform": index.meta["transform"], "dim": index.meta["dim"]}


def quality() -> dict:
    from finegrain.retrieval.index import SimilarityIndex

    sources = {"efficientnet_lite0": "efficientnet_lite0", "lite0+lite1+lite2": LITE012,
               "finetuned lite0 (cub100_lite0_224_s0)": str(TUNED)}
    rows = []
    for name, backbone in sources.items():
        train, test = cub_embeddings(backbone)
        for transform in ("l2", "sqrt", "whiten"):
            r = score(SimilarityIndex.build(train, transform=transform, approximate=False), test)
            rows.append({"embeddings": name, "codes": "float32", "search": "exact", **r})
            print(name, transform, r, flush=True)
    train, test = cub_embeddings("efficientnet_lite0")
    codec_rows = []
    for transform, dim in (("whiten", None), ("whiten", 256), ("sqrt", None)):
        for codes, approx in (("float32", False), ("float32", True), ("float16", False), ("float16", True),
                              ("pq", False), ("pq", True), ("binary", False)):
            r = score(SimilarityIndex.build(train, transform=transform, dim=dim, codes=codes, approximate=approx), test)
            codec_rows.append({"embeddings": "efficientnet_lite0", "codes": codes,
                               "search": "approximate" if approx else "exact", **r})
            print(transform, dim, codes, approx, r, flush=True)
    return {"protocol": "cub100: 2,999 test queries against the 2,903-image train gallery; transforms fitted on "
                        "train only; a query never retrieves its own file",
            "goal": "Recall@1 >= 0.88 with stock lite0 embeddings (kNN head top-1 0.857)",
            "transforms": rows, "codes": codec_rows}


def views() -> dict:
    """Stock lite0, test-time views. First what `finegrain index --tta T` + `eval-retrieval` give (the library path:
    views embedded through the cache, averaged, whitened on the train gallery); then the one-off exploration that
    chose those views, with views the library does not offer (4 corner crops, a 288-pixel input run in PyTorch)."""
    from finegrain.retrieval.api import build_index, eval_retrieval
    from finegrain.retrieval.settings import TTA

    cub = shared_dataset("cub100")
    rows = []
    for tta in TTA:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            build_index(cub, Path(tmp) / "idx", splits=["train"], transform="whiten", tta=tta, cache_dir=BENCH_CACHE)
            report = eval_retrieval(Path(tmp) / "idx", cub, split="test", cache_dir=BENCH_CACHE)
        rows.append({"tta": tta, "network_passes_per_image": 1 + len(TTA[tta]),
                     **{k: round(v, 4) for k, v in report["metrics"].items()},
                     "seconds_this_row": round(time.perf_counter() - t0, 1)})  # + views not cached by earlier rows
        print(rows[-1], flush=True)
    return {"protocol": "cub100: 2,999 test queries against the 2,903-image train gallery, stock efficientnet_lite0, "
                        "sqrt + within-class whitening fitted on train, exact search",
            "goal": "Recall@1 >= 0.88", "index_tta": rows, "exploration": explored_views()}


EXPLORE_VIEWS = ("std", "flip", "whole", "whole_flip", "corner0", "corner1", "corner2", "corner3", "big", "big_flip")
EXPLORE_COMBOS = {"std": ["std"], "std+flip": ["std", "flip"], "whole": ["whole"], "whole+whole_flip": ["whole", "whole_flip"],
                  "std+whole": ["std", "whole"], "std+flip+whole+whole_flip": ["std", "flip", "whole", "whole_flip"],
                  "std+4 corners (5 crops)": ["std", "corner0", "corner1", "corner2", "corner3"],
                  "5 crops+flip": ["std", "flip", "corner0", "corner1", "corner2", "corner3"],
                  "big (288 px)": ["big"], "big+big_flip": ["big", "big_flip"], "std+big": ["std", "big"],
                  "std+flip+big+big_flip": ["std", "flip", "big", "big_flip"],
                  "std+flip+whole+whole_flip+big+big_flip": ["std", "flip", "whole", "whole_flip", "big", "big_flip"],
                  "all 10 views": list(EXPLORE_VIEWS)}


def explored_views() -> dict:
    """Recall@1 (sqrt, and whitened) of averaged views: the plain 224 crop (`std`, of the image resized to 256),
    its mirror, the whole image resized to 224 (`whole`), the 4 corner 224 crops of the 256 resize, and the
    plain crop of a 288-pixel input (`big`, resize 329; PyTorch, as the ONNX export has a fixed 224 input). The
    embeddings are kept in BENCH_CACHE/views-explore (computed once, ~20 min on one thread)."""
    from finegrain.retrieval.transform import fit_transform, l2_rows

    V, y, is_train = explore_embeddings(BENCH_CACHE / "views-explore")
    out = {}
    for name, combo in EXPLORE_COMBOS.items():
        X = l2_rows(sum(V[v] for v in combo))
        for kind in ("sqrt", "whiten"):
            tf = fit_transform(kind, X[is_train], list(y[is_train]))
            nearest = np.argmax(tf.apply(X[~is_train]) @ tf.apply(X[is_train]).T, axis=1)
            out.setdefault(name, {})[f"recall@1_{kind}"] = round(float((y[is_train][nearest] == y[~is_train]).mean()), 4)
        print(name, out[name], flush=True)
    return out


def explore_embeddings(folder: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """({view: (N, 1280)}, labels, is_train) for cub100 train+test, computed once into FOLDER."""
    from PIL import Image

    from finegrain.backbones import Preprocess, get_backbone
    from finegrain.backbones.onnx_runtime import resolve_runtime
    from finegrain.data.boxes import load_sample_rgb
    from finegrain.data.sources import load_data

    if all((folder / f"{v}.npy").exists() for v in EXPLORE_VIEWS) and (folder / "labels.npy").exists():
        return ({v: np.load(folder / f"{v}.npy") for v in EXPLORE_VIEWS}, np.load(folder / "labels.npy"),
                np.load(folder / "is_train.npy"))
    ds = load_data(shared_dataset("cub100"))
    samples = ds.select(["train"]) + ds.select(["test"])
    bb = get_backbone("efficientnet_lite0")
    onnx = resolve_runtime(bb, "onnx", BENCH_CACHE / "onnx")
    p = bb.preprocess
    whole = Preprocess(size=p.size, crop_pct=1.0, interpolation=p.interpolation, mean=p.mean, std=p.std)
    big = Preprocess(size=288, crop_pct=p.crop_pct, interpolation=p.interpolation, mean=p.mean, std=p.std)

    def corners(img):
        w, h = p.resized_size(*img.size)
        r, s = img.resize((w, h), Image.BICUBIC, reducing_gap=None), p.size
        return [np.asarray(r.crop(b), dtype=np.uint8) for b in ((0, 0, s, s), (w - s, 0, w, s), (0, h - s, s, h),
                                                                (w - s, h - s, w, h))]

    parts: dict[str, list] = {v: [] for v in EXPLORE_VIEWS}
    for start in range(0, len(samples), 32):
        crops: dict[str, list] = {v: [] for v in EXPLORE_VIEWS}
        for s in samples[start:start + 32]:
            img = load_sample_rgb(s)
            for name, pre in (("std", p), ("whole", whole), ("big", big)):
                a = pre.apply(img)
                crops[name].append(a)
                crops[f"{name}_flip" if name != "std" else "flip"].append(a[:, ::-1])
            for i, c in enumerate(corners(img)):
                crops[f"corner{i}"].append(c)
        for v, batch in crops.items():
            arr = np.ascontiguousarray(np.stack(batch))
            parts[v].append(bb.embed(arr) if v.startswith("big") else onnx.embed(arr))
    folder.mkdir(parents=True, exist_ok=True)
    for v in EXPLORE_VIEWS:
        np.save(folder / f"{v}.npy", np.vstack(parts[v]))
    np.save(folder / "labels.npy", np.array([s.label for s in samples]))
    np.save(folder / "is_train.npy", np.array([s.split == "train" for s in samples]))
    return explore_embeddings(folder)


def scale_vectors() -> tuple[np.ndarray, np.ndarray]:
    """(1M gallery, 1k queries), unit float32 rows in the whitened 256-d space of real lite0 embeddings."""
    from finegrain.retrieval.transform import fit_transform, l2_rows

    train, test = cub_embeddings("efficientnet_lite0")
    tf = fit_transform("whiten", train.X, train.labels, SCALE_DIM)
    base = np.vstack([tf.apply(train.X), tf.apply(test.X)])
    rng = np.random.default_rng(0)
    X = np.empty((N_SCALE, SCALE_DIM), dtype=np.float32)
    X[:len(base)] = base
    step = 100_000
    for start in range(len(base), N_SCALE, step):
        n = min(step, N_SCALE - start)
        noise = rng.normal(0, JITTER / np.sqrt(SCALE_DIM), (n, SCALE_DIM)).astype(np.float32)
        X[start:start + n] = l2_rows(base[rng.integers(0, len(base), n)] + noise)
    Q = l2_rows(base[rng.integers(0, len(base), N_QUERIES)]
                + rng.normal(0, JITTER / np.sqrt(SCALE_DIM), (N_QUERIES, SCALE_DIM)).astype(np.float32))
    return X, Q


def exact_top10(X: np.ndarray, Q: np.ndarray) -> np.ndarray:
    best_s = np.full((len(Q), 10), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(Q), 10), dtype=np.int64)
    for start in range(0, len(X), 100_000):
        S = Q @ X[start:start + 100_000].T
        idx = np.argpartition(-S, 10, axis=1)[:, :10]
        s = np.take_along_axis(S, idx, axis=1)
        cat_s, cat_i = np.hstack([best_s, s]), np.hstack([best_i, idx + start])
        order = np.argsort(-cat_s, axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(cat_s, order, axis=1), np.take_along_axis(cat_i, order, axis=1)
    return best_i


def timed_queries(index, V: np.ndarray, truth: np.ndarray) -> dict:
    """One query at a time at k=10: p50/p99 latency and Recall@10 against exact search."""
    lat, found = [], []
    for q in V:
        t = time.perf_counter()
        _, I = index._raw_search(q[None], 10)
        lat.append(time.perf_counter() - t)
        found.append(I[0])
    return {"query_p50_ms": round(1000 * float(np.percentile(lat, 50)), 3),
            "query_p99_ms": round(1000 * float(np.percentile(lat, 99)), 3),
            "recall@10_vs_exact": round(float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])), 4)}


def scale_one(kind: str, out: Path) -> None:
    """Build one index kind over the 1M vectors in this process and write its row as JSON to OUT."""
    from finegrain.data.samples import Sample
    from finegrain.embed import Embeddings
    from finegrain.retrieval.index import SimilarityIndex

    t0 = time.perf_counter()
    X, Q = scale_vectors()
    gen_s = time.perf_counter() - t0
    truth = exact_top10(X, Q)
    codes = {"exact": "float32", "hnsw": "float32", "hnsw_float16": "float16", "ivf": "float32", "ivfpq": "pq",
             "binary": "binary", "ivfpq_rerank": "pq"}[kind]
    emb = Embeddings(X, [Sample(Path(f"v{i}")) for i in range(len(X))], [str(i) for i in range(len(X))],
                     backbone_id="synthetic", cache_key="synthetic", preprocess={})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    index = SimilarityIndex.build(emb, codes=codes, approximate=kind != "exact" and kind != "binary",
                                  transform="l2", factory={"hnsw": "HNSW32,Flat", "hnsw_float16": "HNSW32,SQfp16"}.get(kind),
                                  rerank=RERANK if kind == "ivfpq_rerank" else None)
    build_s = time.perf_counter() - t0
    del emb
    V = index.transform.apply(Q)
    if index.vectors is not None:
        return out.write_text(json.dumps(rerank_row(index, V, truth, build_s, gen_s, rss_before)))
    knob = "ef_search" if "HNSW" in index.meta["factory"] else "nprobe" if "IVF" in index.meta["factory"] else None
    sweep = []
    for value in {"ef_search": (64, 128, 256, 512), "nprobe": (16, 64, 256)}.get(knob, (None,)):
        if knob:
            index.meta[knob] = value
        sweep.append({knob or "setting": value, **timed_queries(index, V, truth)})
        print(kind, sweep[-1], flush=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        t = time.perf_counter()
        index.save(Path(tmp) / "idx")
        save_s = time.perf_counter() - t
        sizes = {p.name: p.stat().st_size for p in (Path(tmp) / "idx").iterdir()}
    row = {"kind": kind, "factory": index.meta["factory"], "codes": codes, "n": len(index.rows), "dim": SCALE_DIM,
           "build_s": round(build_s, 1), "save_s": round(save_s, 1), "vectors_generation_s": round(gen_s, 1),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "rss_before_build_mib": round(rss_before),
           "code_bytes": index.meta["code_bytes"], "index_file_bytes_per_image": round(sizes["index.faiss"] / len(index.rows), 1),
           "rows_csv_bytes_per_image": round(sizes["rows.csv"] / len(index.rows), 1),
           "queries": sweep}
    out.write_text(json.dumps(row))
    print(row, flush=True)


def rss_mib() -> dict[str, float]:
    """This process's resident memory now: anonymous (heap: what the index holds) and file-backed (mapped files'
    pages in RAM: the float16 vectors read so far, which the kernel may drop at any time)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: round(int(status[key].split()[0]) / 1024, 1) for key in ("RssAnon", "RssFile")}


def rerank_row(index, V: np.ndarray, truth: np.ndarray, build_s: float, gen_s: float, rss_before: float) -> dict:
    """Save the re-ranked PQ index, then load and query it in a fresh process (`--loaded`): memory as a user's
    `search`/`serve` holds it, not the build's 1M float32 vectors."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        t = time.perf_counter()
        index.save(Path(tmp) / "idx")
        save_s = time.perf_counter() - t
        sizes = {p.name: p.stat().st_size for p in (Path(tmp) / "idx").iterdir()}
        n = len(index.rows)
        del index
        np.save(Path(tmp) / "queries.npy", V)
        np.save(Path(tmp) / "truth.npy", truth)
        child = subprocess.run([sys.executable, __file__, "--loaded", str(Path(tmp) / "idx")], check=True,
                               capture_output=True, text=True)
    loaded = json.loads(child.stdout.strip().splitlines()[-1])
    return {"kind": "ivfpq_rerank", "factory": loaded.pop("factory"), "codes": "pq", "rerank": RERANK, "n": n,
            "dim": SCALE_DIM, "build_s": round(build_s, 1), "save_s": round(save_s, 1),
            "vectors_generation_s": round(gen_s, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_before_build_mib": round(rss_before), "code_bytes": loaded.pop("code_bytes"),
            "index_file_bytes_per_image": round(sizes["index.faiss"] / n, 1),
            "vectors_file_bytes_per_image": round(sizes["vectors.npy"] / n, 1),
            "rows_csv_bytes_per_image": round(sizes["rows.csv"] / n, 1), **loaded}


def evict_from_page_cache(path: Path) -> None:
    """Drop this one file's pages from the OS cache (written back first), so the first queries read it from disk as
    after a reboot, without touching other processes' cached files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def loaded_queries(folder: Path) -> None:
    """Child process: load a saved index (its float16 file first evicted from the page cache) and time the queries
    saved beside it, the same setting twice (cold file, then warm) and then others; prints one JSON line."""
    import importlib

    from finegrain.retrieval.index import SimilarityIndex, _faiss, _read_rows

    _faiss(), importlib.import_module("safetensors.numpy")  # libraries loaded before measuring: not the index
    evict_from_page_cache(folder / "vectors.npy")
    before = rss_mib()
    t = time.perf_counter()
    index = SimilarityIndex.load(folder)
    load_s = time.perf_counter() - t
    after_load = rss_mib()
    V, truth = np.load(folder.parent / "queries.npy"), np.load(folder.parent / "truth.npy")
    sweep = []
    for run, (nprobe, rerank) in enumerate(((16, RERANK), (16, RERANK), (64, RERANK), (16, 5), (16, 20))):
        index.meta.update(nprobe=nprobe, rerank=rerank)
        sweep.append({"nprobe": nprobe, "rerank": rerank, "vectors_file": "cold" if run == 0 else "warm",
                      **timed_queries(index, V, truth),
                      "mapped_vectors_resident_mib_so_far": round(rss_mib()["RssFile"] - before["RssFile"], 1)})
        print(sweep[-1], file=sys.stderr, flush=True)
    n = len(index.rows)
    held = rss_mib()["RssAnon"]
    rows_again = _read_rows(folder / "rows.csv")  # a second copy of the row table: what that part of the load costs
    row_table_mib = rss_mib()["RssAnon"] - held
    del rows_again
    print(json.dumps({"factory": index.meta["factory"], "code_bytes": index.meta["code_bytes"],
                      "load_s": round(load_s, 2), "row_table_anon_mib": round(row_table_mib, 1),
                      "loaded_anon_mib": round(after_load["RssAnon"] - before["RssAnon"], 1),
                      "loaded_anon_bytes_per_image": round((after_load["RssAnon"] - before["RssAnon"]) * 2**20 / n, 1),
                      "queries": sweep}))


def scale(kinds: list[str], meta: dict, load_note: str | None) -> Path:
    """Each kind in a child process; the result file is rewritten after each (rows of kinds not run this time
    are kept), so a stopped run keeps its rows and one kind can be re-measured alone. `load_note` (what else ran
    on the machine) is stored in the rows measured now."""
    previous = RESULTS / "retrieval_scale.json"
    rows: list[dict] = json.loads(previous.read_text())["rows"] if previous.exists() else []
    for kind in kinds:
        out = RESULTS / f".retrieval_scale_{kind}.json"
        subprocess.run([sys.executable, __file__, "--scale-one", kind, "--out", str(out)], check=True)
        row = json.loads(out.read_text())
        if load_note:
            row["concurrent_load"] = load_note
        rows = [r for r in rows if r["kind"] != kind] + [row]
        out.unlink()
        path = write_result("retrieval_scale", {**meta, **scale_summary(rows)})
    return path


PQ_FACTORIES = ("IVF1024,PQ64", "OPQ64,IVF1024,PQ64", "IVF1024,RQ64x8", "IVF4096,PQ64")
SHORTLIST = 100


def pq_codes(n: int, factories: list[str]) -> dict:
    """64-byte codes on the first N of the scale vectors: plain IVF-PQ, OPQ (a learned rotation before PQ), a
    residual quantiser, finer coarse lists (smaller residuals for PQ to encode), and IVF-PQ whose 100-long
    shortlist is re-scored with float16 vectors kept on disk (memory-mapped: 64 bytes per image in RAM, 512 more
    on disk). Recall@10 against exact search. Rows of factories not run this time are kept from the last result."""
    import faiss

    from finegrain.retrieval.index import IVF_NPROBE, _new_index

    X, Q = scale_vectors()
    X = np.ascontiguousarray(X[:n])
    truth = exact_top10(X, Q)
    previous = RESULTS / "retrieval_pq.json"
    rows = [r for r in (json.loads(previous.read_text())["rows"] if previous.exists() else [])
            if r["index"].split(" + ")[0] not in factories]
    for factory in factories:
        t0 = time.perf_counter()
        index = _new_index(faiss, factory, SCALE_DIM, X)
        index.add(X)
        build_s = time.perf_counter() - t0
        ivf = faiss.extract_index_ivf(index)
        for nprobe in (IVF_NPROBE, 64):
            ivf.nprobe = nprobe
            rows.append({"index": factory, "nprobe": nprobe, "build_s": round(build_s, 1),
                         "code_bytes": int(ivf.code_size), **pq_queries(index, Q, truth)})
            print(rows[-1], flush=True)
            if factory == PQ_FACTORIES[0]:
                rows.append({"index": f"{factory} + re-score {SHORTLIST} with float16 on disk", "nprobe": nprobe,
                             "build_s": round(build_s, 1), "code_bytes": int(ivf.code_size),
                             "disk_bytes": 2 * SCALE_DIM, **pq_queries(index, Q, truth, X)})
                print(rows[-1], flush=True)
    return {"protocol": f"the first {n:,} of the scale part's vectors ({SCALE_DIM}-d whitened cub100 lite0 "
                        f"embeddings + seeded jitter); {N_QUERIES} queries one at a time at k=10; Recall@10 = "
                        "overlap with exact search; one thread",
            "goal": "<= 64 bytes per image with Recall@10 >= 0.95 of exact", "rows": rows}


def pq_queries(index, Q: np.ndarray, truth: np.ndarray, exact: np.ndarray | None = None) -> dict:
    """Latency and Recall@10 one query at a time; with `exact`, the top SHORTLIST are re-scored with those
    vectors stored as float16 in a memory-mapped file (read per query, as from disk)."""
    store = None
    if exact is not None:
        tmp = tempfile.NamedTemporaryFile(suffix=".f16", delete=False)
        tmp.close()
        store = np.lib.format.open_memmap(tmp.name, mode="w+", dtype=np.float16, shape=exact.shape)
        store[:] = exact
        store.flush()
        store = np.load(tmp.name, mmap_mode="r")
    lat, found = [], []
    for q in Q:
        t = time.perf_counter()
        _, I = index.search(q[None], SHORTLIST if store is not None else 10)
        ids = I[0][I[0] >= 0]
        if store is not None:
            ids = np.sort(ids)  # ascending offsets: one forward pass over the file
            ids = ids[np.argsort(-(store[ids].astype(np.float32) @ q))[:10]]
        lat.append(time.perf_counter() - t)
        found.append(ids[:10])
    if store is not None:
        os.unlink(store.filename)
    return {"query_p50_ms": round(1000 * float(np.percentile(lat, 50)), 3),
            "query_p99_ms": round(1000 * float(np.percentile(lat, 99)), 3),
            "recall@10_vs_exact": round(float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])), 4)}


def scale_summary(rows: list[dict]) -> dict:
    return {"protocol": f"{N_SCALE:,} unit vectors: 5,902 real cub100 lite0 embeddings (sqrt + within-class "
                        f"whitening fitted on train, {SCALE_DIM} principal components) and seeded jitter (Gaussian, norm "
                        f"≈ {JITTER}, renormalised); {N_QUERIES} fresh jittered queries one at a time at k=10; "
                        "Recall@10 = overlap with exact search; one thread (FINEGRAIN_THREADS=1); each kind in its own "
                        "process (peak RSS includes the 1 GB of generated vectors and the exact ground truth)",
            "goal": "p50 <= 5 ms per query with Recall@10 >= 0.95 of exact; <= 64 bytes per image with PQ codes",
            "concurrent_load": "other engineers' training and Ray jobs were running on the same 2 cores: timings are "
                               "upper bounds",
            "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["quality", "scale", "views", "pq"], default="quality")
    ap.add_argument("--n", type=int, default=N_SCALE, help="pq: vectors indexed (the first N of the scale part's)")
    ap.add_argument("--factories", default=";".join(PQ_FACTORIES), help="pq: faiss factory strings separated by ;")
    ap.add_argument("--kinds", default=",".join(SCALE_KINDS), help=f"scale: comma-separated subset of {SCALE_KINDS}")
    ap.add_argument("--scale-one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--load-note", default=None, help="scale: what else ran on the machine (kept in these rows)")
    ap.add_argument("--loaded", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loaded:
        return loaded_queries(args.loaded)
    if args.scale_one:
        return scale_one(args.scale_one, args.out)
    from finegrain.threads import thread_budget
    meta = {"machine": machine(), "threads": thread_budget()}
    if args.part == "quality":
        path = write_result("retrieval", {**meta, **quality()})
    elif args.part == "views":
        path = write_result("retrieval_views", {**meta, **views(), "concurrent_load": LOAD_NOTE})
    elif args.part == "pq":
        path = write_result("retrieval_pq", {**meta, **pq_codes(args.n, args.factories.split(";")),
                                             "concurrent_load": LOAD_NOTE})
    else:
        path = scale(args.kinds.split(","), meta, args.load_note)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
