"""Model soups on cub100: `finetune --sweep 3` ingredients (seeds 0-2, one shared held-out set), their greedy and
uniform soups, and the ensemble of the ingredients (3 networks at prediction time) for reference.

    python benchmarks/soup.py               # trains what is missing (resumable), then scores → results/soup.json
    python benchmarks/soup.py --epochs 5    # shorter ingredients (what fitted in one session on 2 busy cores)

All models are scored on the cub100 test split. The ingredients are the `finetune` defaults (lite0, 5 blocks,
8 views, 15 epochs) with the validation images of seed 0's split held out by all three; they share the trunk
activations of benchmarks/finetune.py's cache ($FINEGRAIN_BENCH_CACHE, default /tmp/finegrain-bench-cache).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from _common import machine, run_cli, shared_dataset, write_result
from finetune import FINETUNE_BASE  # the recipe these short ingredients were measured with

CACHE = Path(os.environ.get("FINEGRAIN_BENCH_CACHE", "/tmp/finegrain-bench-cache"))
WORK = CACHE / "work"
SEEDS = (0, 1, 2)


def score(models: dict[str, Path], data: Path) -> dict[str, dict]:
    """Top-1 and ECE of each model on the test split, and of the ensemble of the ingredients."""
    from finegrain.data.sources import load_data
    from finegrain.metrics import expected_calibration_error
    from finegrain.pipeline import Classifier
    from finegrain.store import EmbeddingCache

    test = load_data(data).select(["test"])
    out, ensemble = {}, []
    with EmbeddingCache(CACHE) as cache:
        for name, folder in models.items():
            clf = Classifier.load(folder)
            emb = clf.embed(test, cache=cache)
            probs = clf.predict_proba_embeddings(emb)
            classes = list(clf.classes)
            y = np.asarray([classes.index(lab) for lab in emb.labels])
            out[name] = {"top1": float((probs.argmax(1) == y).mean()),
                         "ece": expected_calibration_error(y, probs),
                         "val_accuracy": clf.info["training"].get("val_accuracy"), "backbone": clf.backbone_id}
            if name.startswith("ingredient"):
                ensemble.append(probs)
    mean = np.mean(ensemble, axis=0)
    out["ensemble_of_ingredients"] = {"top1": float((mean.argmax(1) == y).mean()),
                                      "ece": expected_calibration_error(y, mean)}
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15, help="epochs of each ingredient (default 15, finetune's)")
    ap.add_argument("--soup-only", action="store_true",
                    help="the ingredients exist: only soup them again (greedy and uniform) and score")
    args = ap.parse_args()
    epochs = args.epochs
    data = shared_dataset("cub100")
    env = {"FINEGRAIN_CACHE_DIR": str(CACHE)}
    tag = "" if epochs == 15 else f"_e{epochs}"
    greedy, uniform = WORK / f"cub100_sweep{tag}", WORK / f"cub100_uniform_soup{tag}"
    ingredients = [WORK / f"cub100_sweep{tag}-ingredients" / f"seed{s}" for s in SEEDS]
    if args.soup_only:
        t_sweep, _ = run_cli(["soup", *map(str, ingredients), "-o", str(greedy), "--method", "greedy", "-q"], env)
    else:
        t_sweep, _ = run_cli(["finetune", str(data), "-o", str(greedy), "--sweep", str(len(SEEDS)), "--seed", "0",
                              *FINETUNE_BASE, "--epochs", str(epochs), "-q"], env)
    t_uniform, _ = run_cli(["soup", *map(str, ingredients), "-o", str(uniform), "--method", "uniform", "-q"], env)
    models = {f"ingredient_seed{s}": p for s, p in zip(SEEDS, ingredients)}
    models |= {"greedy_soup": greedy, "uniform_soup": uniform}
    rows = score(models, data)
    config = json.loads((greedy / "config.json").read_text())
    best = max(rows[f"ingredient_seed{s}"]["top1"] for s in SEEDS)
    result = {"epochs": epochs, "rows": rows, "greedy_kept": config["soup"]["kept"],
              "greedy_ge_best_ingredient": rows["greedy_soup"]["top1"] >= best,
              "greedy_ge_uniform": rows["greedy_soup"]["top1"] >= rows["uniform_soup"]["top1"],
              "greedy_wall_s" if args.soup_only else "sweep_and_greedy_wall_s": round(t_sweep, 1), "uniform_wall_s": round(t_uniform, 1),
              "other_load": os.environ.get("FINEGRAIN_BENCH_NOTE", ""), "machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M")}
    write_result(f"soup{tag}", result)
    for name, r in rows.items():
        print(f"{name:26s} top1 {r['top1']:.4f}  ece {r['ece']:.4f}")


if __name__ == "__main__":
    main()
