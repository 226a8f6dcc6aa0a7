"""RBI (RRA + RPE, paper #1) against the logistic head on the same cached efficientnet_lite0 embeddings.

    python benchmarks/rbi.py            # cub100 + plankton, batch sizes 16/64/256, seeds 0-2 → results/rbi.json
    python benchmarks/rbi.py --quick    # cub100 only, batch 64, one seed (a smoke run, a few minutes)

Protocol: every head is fitted on the training side only; its hyper-parameters (logistic C, RBI early-stopping
epoch) are chosen on a stratified validation split of train, then it is refitted on all of train; the test side
is scored once per run. cub100 uses its own train/test split. ndsb_plankton has no split: a seeded stratified
75/25 split is made, and the training side is subsampled (stratified, class priors kept) to `--plankton-train`
of its images so the grid fits the CPU budget. Each RBI fit is scored in all three inference modes; the
transductive mode uses test batches of the training batch size, shuffled by seed, and reports how many
predictions flip across 3 shuffles. Ablation `mlp`: the same network trained with each image attending to
itself only (no batch integration): it separates the effect of batch attention from that of an MLP head with
an auxiliary loss.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread: the 2 cores are shared, oversubscription is far slower

import numpy as np  # noqa: E402  (after the thread settings, which numpy reads at import)

from _common import RESULTS, machine, shared_dataset, write_result

from finegrain.data.sources import load_data
from finegrain.embed import embed_samples
from finegrain.heads import LogisticHead
from finegrain.heads.base import stratified_holdout
from finegrain.heads.rbi import MODES, RBIHead
from finegrain.metrics import mean_per_class_accuracy
from finegrain.store import EmbeddingCache

BACKBONE = "efficientnet_lite0"
# name → (RBI parameters, batch sizes it runs at: None = every --batch-sizes value)
VARIANTS = {
    "rbi rpe=self": ({"rpe": "self"}, None),
    "rbi rpe=none": ({"rpe": "none"}, None),
    "rbi rpe=relative": ({"rpe": "relative"}, (64,)),
    "rbi pk-sampler": ({"rpe": "self", "sampler": "pk"}, (64,)),
    "mlp (no batch attention)": ({"batch_attention": False}, (64,)),
}


def embeddings_of(samples) -> tuple[np.ndarray, np.ndarray, list]:
    with EmbeddingCache() as cache:
        emb = embed_samples(samples, BACKBONE, cache=cache, progress=False)
    if emb.errors:
        print(f"skipped {len(emb.errors)} unreadable images", file=sys.stderr)
    return emb.X, np.asarray(emb.labels, dtype=object), [s.split for s in emb.samples]


def cub100() -> dict:
    ds = load_data(shared_dataset("cub100"))
    X, y, split = embeddings_of(ds.select(["train"]) + ds.select(["test"]))
    tr = np.asarray([s == "train" for s in split])
    return {"X": X[tr], "y": y[tr], "X_test": X[~tr], "y_test": y[~tr], "split": "the dataset's train/test split"}


def plankton(train_fraction: float, seed: int = 0) -> dict:
    ds = load_data(shared_dataset("ndsb_plankton") / "manifest.csv")
    X, y, _ = embeddings_of([s for s in ds.samples if s.label is not None])
    yi = np.unique(y, return_inverse=True)[1]
    train, test = stratified_holdout(yi, 0.25, seed)
    keep, _ = stratified_holdout(yi[train], 1.0 - train_fraction, seed) if train_fraction < 1 else (
        np.arange(len(train)), None)
    train = train[keep]
    return {"X": X[train], "y": y[train], "X_test": X[test], "y_test": y[test],
            "split": f"seeded (seed {seed}) stratified 75/25 train/test; training side subsampled to "
                     f"{train_fraction:.0%} per class (priors kept, at least 1 image per class)"}


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    classes = np.unique(np.concatenate([y_true, y_pred]))
    t, p = np.searchsorted(classes, y_true), np.searchsorted(classes, y_pred)
    return {"top1": float((t == p).mean()), "mpca": mean_per_class_accuracy(t, p)}


def run_logistic(data: dict, seed: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    head = LogisticHead(seed=seed).fit(data["X"], data["y"])
    row = {"head": "logistic", "variant": "logistic", "batch_size": None, "mode": None, "seed": seed, "C": head.C_,
           **scores(data["y_test"], head.predict(data["X_test"]))}
    row.update(fit_s=round(time.perf_counter() - t0, 1), fit_cpu_s=round(time.process_time() - c0, 1))
    return row


def run_rbi(data: dict, variant: str, params: dict, batch_size: int, seed: int) -> list[dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    head = RBIHead(batch_size=batch_size, seed=seed, **params).fit(data["X"], data["y"])
    fit_s, fit_cpu = round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1)
    rows = []
    for mode in MODES:
        moded = head.with_mode(mode)
        row = {"head": "rbi", "variant": variant, "batch_size": batch_size, "mode": mode, "seed": seed,
               "epochs": head.epochs_, "val_accuracy": head.val_accuracy_, "fit_s": fit_s, "fit_cpu_s": fit_cpu,
               **scores(data["y_test"], moded.predict(data["X_test"]))}
        if mode == "transductive":
            row["flip_rate"] = moded.flip_rate(data["X_test"], seeds=(0, 1, 2))
        rows.append(row)
    if params.get("batch_attention", True):
        rows[0]["attention_profile"] = head.attention_profile(data["X"], data["y"], seed=seed)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds of every (variant, batch size, mode) cell."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["variant"], r["batch_size"], r["mode"]), []).append(r)
    out = []
    for (variant, bs, mode), rs in cells.items():
        cell = {"variant": variant, "batch_size": bs, "mode": mode, "n_seeds": len(rs)}
        for key in ("top1", "mpca", "flip_rate"):
            vals = [r[key] for r in rs if key in r]
            if vals:
                cell[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
        out.append(cell)
    return out


def table(name: str, summary: list[dict]) -> str:
    base = next(c for c in summary if c["variant"] == "logistic")["top1"]["mean"]
    lines = [f"{name}: top-1 / mean per-class accuracy, mean ± std over seeds (Δ = top-1 minus logistic)",
             "| head | batch | mode | top-1 | mean per-class | Δ top-1 | flips |", "|---|---|---|---|---|---|---|"]
    for c in summary:
        t, m = c["top1"], c["mpca"]
        flips = f"{c['flip_rate']['mean']:.3f}" if "flip_rate" in c else ""
        lines.append(f"| {c['variant']} | {c['batch_size'] or ''} | {c['mode'] or ''} | {t['mean']:.4f} ± {t['std']:.4f}"
                     f" | {m['mean']:.4f} ± {m['std']:.4f} | {100 * (t['mean'] - base):+.2f} | {flips} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["cub100", "plankton"], choices=["cub100", "plankton"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 64, 256])
    ap.add_argument("--plankton-train", type=float, default=0.15, help="fraction of plankton's training side kept")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                    help="RBI variants to run (default all: " + "; ".join(VARIANTS) + ")")
    ap.add_argument("--quick", action="store_true", help="cub100, batch 64, seed 0 only")
    ap.add_argument("--name", default="rbi", help="results file name (default rbi → results/rbi.json)")
    ap.add_argument("--keep-other-datasets", action="store_true",
                    help="keep the results file's entries for datasets not run this time (run datasets one by one)")
    args = ap.parse_args()
    if args.quick:
        args.datasets, args.seeds, args.batch_sizes = ["cub100"], [0], [64]
    t0, c0 = time.perf_counter(), time.process_time()
    result = {"benchmark": "rbi", "backbone": BACKBONE, "machine": machine(), "command": " ".join(sys.argv),
              "rbi_defaults": RBIHead().get_params(), "datasets": {}}
    for name in args.datasets:
        d0, dc0 = time.perf_counter(), time.process_time()
        data = cub100() if name == "cub100" else plankton(args.plankton_train)
        rows = [run_logistic(data, seed) for seed in args.seeds]
        print(f"{name}: logistic top-1 {np.mean([r['top1'] for r in rows]):.4f} ({sum(r['fit_cpu_s'] for r in rows)}s cpu)",
              file=sys.stderr, flush=True)
        for variant in args.variants:
            params, sizes = VARIANTS[variant]
            for bs in [b for b in args.batch_sizes if sizes is None or b in sizes] or args.batch_sizes[:1]:
                for seed in args.seeds:
                    new = run_rbi(data, variant, params, bs, seed)
                    rows += new
                    print(f"{name}: {variant} batch {bs} seed {seed}: " + ", ".join(
                        f"{r['mode']} {r['top1']:.4f}" for r in new) + f" ({new[0]['fit_cpu_s']}s cpu)",
                        file=sys.stderr, flush=True)
        summary = summarise(rows)
        profiles = {f"{r['variant']} batch {r['batch_size']}": r["attention_profile"] for r in rows
                    if "attention_profile" in r and r["seed"] == args.seeds[0]}
        result["datasets"][name] = {"seeds": args.seeds, "batch_sizes": args.batch_sizes,
                                    "attention_profile_on_train": profiles,"n_train": len(data["y"]), "n_test": len(data["y_test"]),
                                    "classes": len(np.unique(data["y"])), "split": data["split"],
                                    "summary": summary, "runs": rows, "table": table(name, summary),
                                    "command": " ".join(sys.argv), "wall_s": round(time.perf_counter() - d0, 1),
                                    "cpu_s": round(time.process_time() - dc0, 1)}
        print(table(name, summary), file=sys.stderr, flush=True)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["cpu_s"] = round(time.process_time() - c0, 1)
    previous = RESULTS / f"{args.name}.json"
    if args.keep_other_datasets and previous.exists():
        result["datasets"] = {**json.loads(previous.read_text())["datasets"], **result["datasets"]}
    path = write_result(args.name, result)
    print(json.dumps({k: v for k, v in result.items() if k != "datasets"}, indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
