"""Fine-tuning benchmark: `finegrain finetune` against the frozen logistic head, row by row.

    python benchmarks/finetune.py --row cub100_320_whole_tta --seed 0   # one row → results/finetune/ROW_sSEED.json
    python benchmarks/finetune.py --merge                            # all rows → results/finetune.json + a table
    python benchmarks/finetune.py --ensemble cub100_lite0_224 --seeds 0 1 2   # reference: those seeds' models averaged

Each row is one child `finegrain` process (wall time and peak RSS are that row's alone), trained on the
train split (cub100), or on the seeded 50/50 split of at most 100 images per class (plankton, the open-world
protocol), and scored on the test images. Rows share one cache folder ($FINEGRAIN_BENCH_CACHE, default
/tmp/finegrain-bench-cache), so the stock embeddings and the trunk activations of a view recipe are computed
by the first row that needs them: a row's `cold` flag says whether its trunk activations were computed in it.
Rows are split so that a session can run them one at a time; say in the README what ran beside them.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, machine, peak_rss_children_mib, run_cli, shared_dataset

CACHE = Path(os.environ.get("FINEGRAIN_BENCH_CACHE", "/tmp/finegrain-bench-cache"))
LITE012 = "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2"
LITE012_320_WHOLE = "+".join(f"{member}@320-whole" for member in LITE012.split("+"))
# Every `finetune` row is measured from the stock 224-px centre crop without test-time views (the defaults until
# 2026-12-02; now `--backbone efficientnet_lite0@320-whole --tta flip`, row cub100_320_whole_tta): a row's own
# arguments come after these and override them, so each row keeps the recipe its results were measured with.
FINETUNE_BASE = ["--backbone", "efficientnet_lite0", "--tta", "none"]
# ...except these, which run `finetune` exactly as a user types it, whatever the defaults are today. Time a cold
# start with FINEGRAIN_BENCH_CACHE set to an empty folder (every embedding, export and activation computed).
AS_TYPED = {"cub100_defaults"}
ROWS = {  # name: (dataset, command, extra arguments)
    "cub100_defaults": ("cub100", "finetune", []),
    "cub100_frozen": ("cub100", "fit", []),
    "cub100_lite0_224": ("cub100", "finetune", []),
    "cub100_blocks1": ("cub100", "finetune", ["--train-blocks", "1"]),
    "cub100_blocks3": ("cub100", "finetune", ["--train-blocks", "3"]),
    "cub100_views1": ("cub100", "finetune", ["--views", "1"]),
    "cub100_views4": ("cub100", "finetune", ["--views", "4"]),
    "cub100_no_jitter": ("cub100", "finetune", ["--jitter", "0"]),
    "cub100_no_crops": ("cub100", "finetune", ["--crop-scale", "1.0"]),  # views differ by flip and jitter only
    "cub100_no_ema": ("cub100", "finetune", ["--ema-decay", "0"]),
    "cub100_fp32": ("cub100", "finetune", ["--precision", "fp32"]),
    "cub100_mixup": ("cub100", "finetune", ["--mixup", "0.4"]),
    "cub100_epochs8": ("cub100", "finetune", ["--epochs", "8"]),
    "cub100_epochs25": ("cub100", "finetune", ["--epochs", "25"]),
    "cub100_blocks8": ("cub100", "finetune", ["--train-blocks", "8"]),
    "cub100_blocks_all": ("cub100", "finetune", ["--train-blocks", "all"]),  # full fine-tuning: ~50 min here
    "cub100_backbone_lr1e-3": ("cub100", "finetune", ["--backbone-lr", "1e-3"]),
    "cub100_cutmix": ("cub100", "finetune", ["--cutmix", "1.0"]),
    "cub100_salmix": ("cub100", "finetune", ["--salmix", "1.0"]),
    # RBI inside fine-tuning (#17): the headline row and its ablations (RPE, similarity RPEs, batch sampler)
    "cub100_rbi": ("cub100", "finetune", ["--rbi"]),
    "cub100_rbi_rpe_none": ("cub100", "finetune", ["--rbi", "--rbi-rpe", "none"]),
    "cub100_rbi_psnr": ("cub100", "finetune", ["--rbi", "--rbi-rpe", "psnr"]),
    "cub100_rbi_cosine": ("cub100", "finetune", ["--rbi", "--rbi-rpe", "cosine"]),
    "cub100_rbi_random_batches": ("cub100", "finetune", ["--rbi", "--rbi-sampler", "random"]),
    "plankton_cutmix": ("plankton", "finetune", ["--cutmix", "1.0"]),
    "plankton_mixup": ("plankton", "finetune", ["--mixup", "0.4"]),
    "cub100_ray2": ("cub100", "finetune", ["--engine", "ray", "--ray-workers", "2"]),  # Ray Train, 2 DDP workers
    "cub100_frozen_whole": ("cub100", "fit", ["--backbone", "efficientnet_lite0@whole"]),  # input size and crop
    "cub100_frozen_288_whole": ("cub100", "fit", ["--backbone", "efficientnet_lite0@288-whole"]),
    "cub100_frozen_320_whole": ("cub100", "fit", ["--backbone", "efficientnet_lite0@320-whole"]),
    "cub100_frozen_384_whole": ("cub100", "fit", ["--backbone", "efficientnet_lite0@384-whole"]),
    "cub100_frozen_448_whole": ("cub100", "fit", ["--backbone", "efficientnet_lite0@448-whole"]),
    "cub100_whole": ("cub100", "finetune", ["--backbone", "efficientnet_lite0@whole"]),
    "cub100_288_whole": ("cub100", "finetune", ["--backbone", "efficientnet_lite0@288-whole"]),
    "cub100_320_whole": ("cub100", "finetune", ["--backbone", "efficientnet_lite0@320-whole"]),
    "cub100_frozen_pad": ("cub100", "fit", ["--backbone", "efficientnet_lite0@pad"]),
    "plankton_frozen_pad": ("plankton", "fit", ["--backbone", "efficientnet_lite0@pad"]),
    "plankton_frozen_320_pad": ("plankton", "fit", ["--backbone", "efficientnet_lite0@320-pad"]),
    "plankton_pad": ("plankton", "finetune", ["--backbone", "efficientnet_lite0@pad"]),
    "plankton_frozen_whole": ("plankton", "fit", ["--backbone", "efficientnet_lite0@whole"]),
    "plankton_frozen_320_whole": ("plankton", "fit", ["--backbone", "efficientnet_lite0@320-whole"]),
    "plankton_whole": ("plankton", "finetune", ["--backbone", "efficientnet_lite0@whole"]),
    "plankton_320_whole": ("plankton", "finetune", ["--backbone", "efficientnet_lite0@320-whole"]),
    "cub100_lite012_frozen": ("cub100", "fit", ["--backbone", LITE012]),
    "cub100_lite012_frozen_320_whole": ("cub100", "fit", ["--backbone", LITE012_320_WHOLE]),
    "cub100_lite012": ("cub100", "finetune", ["--backbone", LITE012]),
    "cub100_lite012_320_whole": ("cub100", "finetune", ["--backbone", LITE012_320_WHOLE]),
    # test-time mirror (--tta flip): a run identical but for --tta reuses the finished tuning and refits the head
    "cub100_frozen_tta": ("cub100", "fit", ["--tta", "flip"]),
    "cub100_320_whole_tta": ("cub100", "finetune", ["--backbone", "efficientnet_lite0@320-whole", "--tta", "flip"]),
    "cub100_lite012_320_whole_tta": ("cub100", "finetune", ["--backbone", LITE012_320_WHOLE, "--tta", "flip"]),
    "plankton_frozen_pad_d4": ("plankton", "fit", ["--backbone", "efficientnet_lite0@pad", "--tta", "d4"]),
    "plankton_pad_d4": ("plankton", "finetune", ["--backbone", "efficientnet_lite0@pad", "--tta", "d4"]),
    "plankton_pad_rot4": ("plankton", "finetune", ["--backbone", "efficientnet_lite0@pad", "--tta", "rot4"]),
    "plankton_pad_flip": ("plankton", "finetune", ["--backbone", "efficientnet_lite0@pad", "--tta", "flip"]),
    "plankton_320_whole_tta": ("plankton", "finetune", ["--backbone", "efficientnet_lite0@320-whole", "--tta", "flip"]),
    "cub100_stock_plus_tuned": ("cub100", "fit", ["--backbone", f"efficientnet_lite0+{CACHE}/work/cub100_lite0_224_s0"]),
    "plankton_frozen": ("plankton", "fit", []),
    "plankton_lite0_224": ("plankton", "finetune", []),
}


def plankton_manifest(work: Path, per_class: int = 100, seed: int = 0) -> Path:
    """The open-world protocol's plankton data: ≤ per_class images a class, split 50/50, stratified and seeded."""
    source = shared_dataset("ndsb_plankton") / "manifest.csv"
    with source.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[dict]] = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r)
    out = work / "plankton_manifest.csv"
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        for label in sorted(by_class):
            items = [by_class[label][i] for i in rng.permutation(len(by_class[label]))[:per_class]]
            half = len(items) // 2
            for i, r in enumerate(items):
                w.writerow([str((source.parent / r["path"]).resolve()), label, "train" if i >= half else "test"])
    return out


def data_for(dataset: str, work: Path) -> Path:
    return shared_dataset("cub100") if dataset == "cub100" else plankton_manifest(work)


def run_row(name: str, seed: int) -> dict:
    dataset, command, extra = ROWS[name]
    work = CACHE / "work"
    work.mkdir(parents=True, exist_ok=True)
    data = data_for(dataset, work)
    model = work / f"{name}_s{seed}"
    env = {"FINEGRAIN_CACHE_DIR": str(CACHE)}
    stores_before = set((CACHE / "activations").glob("*/chunk-*.json"))
    base = FINETUNE_BASE if command == "finetune" and name not in AS_TYPED else []
    wall, _ = run_cli([command, str(data), "-o", str(model), "--seed", str(seed), *base, *extra, "-q"], env)
    rss = peak_rss_children_mib()
    cold = set((CACHE / "activations").glob("*/chunk-*.json")) != stores_before
    t_eval, out = run_cli(["eval", str(model), str(data), "--format", "json", "-q",
                           "--output", str(work / f"{name}_s{seed}_eval.json")], env)
    rep = json.loads(out)
    config = json.loads((model / "config.json").read_text())
    row = {"row": name, "dataset": dataset, "command": command, "args": extra, "seed": seed,
           "top1": rep["top1"], "top5": rep["top5"], "mean_per_class_accuracy": rep["mean_per_class_accuracy"],
           "ece": rep["ece"], "n_test": rep["n"], "wall_s": round(wall, 1), "eval_s": round(t_eval, 1),
           "peak_rss_mib": round(rss), "cold_activations": cold, "machine": machine(),
           "other_load": os.environ.get("FINEGRAIN_BENCH_NOTE", ""), "date": time.strftime("%Y-%m-%d %H:%M")}
    if "finetune" in config:
        members = config["finetune"]["members"]
        row["finetune"] = [{k: m.get(k, "local" if k == "engine" else None)
                            for k in ("base", "trained_stages", "precision", "best_epoch", "network_val_accuracy",
                                      "store_seconds", "train_seconds", "history", "engine", "reused_finished_run")}
                           for m in members]
        row["head_val_accuracy"] = config["training"].get("val_accuracy")
    if config["head"]["head"] == "rbi":
        row["rbi"] = rbi_extras(name, seed, model, data, env)
    return row


def rbi_extras(name: str, seed: int, model: Path, data: Path, env: dict[str, str]) -> dict:
    """An RBI-tuned model scored every way: each inference mode of its head (transductive with its flip rate
    over 3 shuffles), the logistic head refitted on its backbone (RBI as a training-time regulariser only), and
    where its attention looks on training batches (entropy 1 = spread evenly, i.e. inert)."""
    from finegrain.data.sources import load_data
    from finegrain.pipeline import Classifier
    from finegrain.store import EmbeddingCache

    work = CACHE / "work"
    out: dict = {"modes": {}}
    for mode in ("single", "bank", "transductive", "plain"):
        _, text = run_cli(["eval", str(model), str(data), "--head-mode", mode, "--format", "json", "-q"], env)
        rep = json.loads(text)
        out["modes"][mode] = {k: rep[k] for k in ("top1", "ece", "flip_rate") if k in rep}
    logistic = work / f"{name}_s{seed}_logistic"
    run_cli(["fit", str(data), "-o", str(logistic), "--backbone", str(model), "--seed", str(seed), "-q"], env)
    _, text = run_cli(["eval", str(logistic), str(data), "--format", "json", "-q"], env)
    out["logistic_on_tuned_backbone"] = {k: json.loads(text)[k] for k in ("top1", "ece")}
    os.environ["FINEGRAIN_CACHE_DIR"] = str(CACHE)
    clf = Classifier.load(model)
    with EmbeddingCache(CACHE) as cache:
        emb = clf.embed(load_data(data).select(["train"]), cache=cache)
    out["attention_on_train_batches"] = clf.head.attention_profile(emb.X, np.asarray(emb.labels, dtype=object))
    return out


def ensemble_row(row: str, seeds: tuple[int, ...]) -> dict:
    """Reference, not a product default: the calibrated probabilities of a cub100 row's models of `seeds` averaged
    (N times the networks to run at prediction time), scored on the test split. Each model must have been made
    by `--row ROW --seed S` first."""
    from finegrain.data.sources import load_data
    from finegrain.pipeline import Classifier
    from finegrain.store import EmbeddingCache

    if ROWS[row][0] != "cub100":
        raise SystemExit(f"--ensemble scores cub100 rows; {row} is a {ROWS[row][0]} row")
    data = shared_dataset("cub100")
    test = load_data(data).select(["test"])
    total, labels = None, None
    os.environ["FINEGRAIN_CACHE_DIR"] = str(CACHE)
    with EmbeddingCache(CACHE) as cache:
        for seed in seeds:
            clf = Classifier.load(CACHE / "work" / f"{row}_s{seed}")
            emb = clf.embed(test, cache=cache)
            probs = clf.predict_proba_embeddings(emb)
            total = probs if total is None else total + probs
            labels = np.asarray(emb.labels)
            classes = np.asarray(clf.classes)
    top1 = float((classes[total.argmax(1)] == labels).mean())
    return {"row": f"{row}_seed_ensemble", "dataset": "cub100", "command": "ensemble", "args": list(seeds),
            "seed": 0, "top1": top1, "ece": float("nan"), "n_test": len(labels), "wall_s": 0.0, "peak_rss_mib": 0,
            "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}


def merge() -> dict:
    rows = [json.loads(p.read_text()) for p in sorted((RESULTS / "finetune").glob("*.json"))]
    table: dict[str, dict] = {}
    for r in rows:
        t = table.setdefault(r["row"], {"dataset": r["dataset"], "args": r["args"], "seeds": [], "top1": [],
                                         "ece": [], "wall_s": [], "peak_rss_mib": []})
        for k in ("top1", "ece", "wall_s", "peak_rss_mib"):
            t[k].append(r[k])
        t["seeds"].append(r["seed"])
        if r.get("rbi"):
            for mode, m in r["rbi"]["modes"].items():
                t.setdefault(f"rbi_{mode}_top1", []).append(m["top1"])
                if "flip_rate" in m:
                    t.setdefault("rbi_flip_rate", []).append(m["flip_rate"])
            t.setdefault("rbi_logistic_on_tuned_backbone_top1", []).append(r["rbi"]["logistic_on_tuned_backbone"]["top1"])
            for k, v in r["rbi"]["attention_on_train_batches"].items():
                t.setdefault(f"rbi_attention_{k}", []).append(v)
        if r.get("finetune"):
            t.setdefault("s_per_epoch", []).append(
                round(float(np.mean([h["seconds"] for h in r["finetune"][0]["history"]])), 1))
    for t in table.values():
        t["top1_mean"], t["top1_std"] = float(np.mean(t["top1"])), float(np.std(t["top1"]))
    return {"rows": table, "machine": machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", choices=sorted(ROWS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--merge", action="store_true")
    ap.add_argument("--ensemble", choices=sorted(ROWS), metavar="ROW",
                    help="score the mean of a cub100 row's models of --seeds (each made by --row ROW --seed S)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the seeds --ensemble averages")
    args = ap.parse_args()
    if args.merge:
        merged = merge()
        (RESULTS / "finetune.json").write_text(json.dumps(merged, indent=2) + "\n")
        for name, t in merged["rows"].items():
            print(f"{name:20s} top1 {t['top1_mean']:.4f} ± {t['top1_std']:.4f} (seeds {t['seeds']})  "
                  f"ece {np.mean(t['ece']):.4f}  wall {np.mean(t['wall_s']):.0f} s  rss {max(t['peak_rss_mib'])} MiB")
            for k in sorted(k for k in t if k.startswith("rbi_")):
                print(f"    {k}: {np.mean(t[k]):.4f} ± {np.std(t[k]):.4f}")
        return
    if args.ensemble:
        row = ensemble_row(args.ensemble, tuple(args.seeds))
        out = RESULTS / "finetune" / f"{row['row']}_s0.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(row, indent=2) + "\n")
        print(f"{row['row']} of seeds {args.seeds}: top1 {row['top1']:.4f}", file=sys.stderr)
        return
    if not args.row:
        ap.error("give --row NAME (or --merge, --ensemble)")
    row = run_row(args.row, args.seed)
    out = RESULTS / "finetune" / f"{args.row}_s{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    print(f"{args.row} seed {args.seed}: top1 {row['top1']:.4f}, wall {row['wall_s']:.0f} s → {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
