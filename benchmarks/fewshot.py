"""Few-shot benchmark: inductive prototypes vs transductive EM (hand-set and UNEM-learned) on cub100 and plankton.

    python benchmarks/fewshot.py                      # writes benchmarks/results/fewshot.json, prints a table
    python benchmarks/fewshot.py --datasets cub100    # one dataset only

Protocol (episodes seeded, 15 queries per class, 600 test episodes per row):
- cub100: validation episodes (for learning the unrolled EM hyper-parameters) come from the train split,
  test episodes from the test split: same 100 species, no shared image.
- ndsb_plankton (no split): a seeded stratified half of each class for validation, the other half for test.
- Each (dataset, ways, shots) learns ONE set of hyper-parameters (100 Adam steps, 10 unrolled EM steps) on a
  mix of balanced and Dirichlet(2) imbalanced validation episodes, then is scored on balanced and on
  imbalanced test episodes. The inductive logistic head is left out here (slow per episode, and far behind:
  `finegrain fewshot-eval` scores it).
- "transfer": hyper-parameters learned on cub100 5-way 1-shot applied unchanged to plankton 5-way 1-shot
  (these are the defaults shipped for models too small to learn from).
Embeddings go through the embedding cache (efficientnet_lite0), so a warm cache makes the run fast.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from _common import machine, shared_dataset, write_result

SETTINGS = ((5, 1), (5, 5), (20, 5))
EPISODES, QUERIES, ALPHA, SEED, LEARN_ITERATIONS = 600, 15, 2.0, 0, 100
DATASETS = {"cub100": "cub100", "plankton": "ndsb_plankton/manifest.csv"}


def embeddings(name: str):
    from finegrain.data.sources import load_data
    from finegrain.embed import embed_samples
    from finegrain.store import EmbeddingCache

    samples = [s for s in load_data(shared_dataset(DATASETS[name])).samples if s.label is not None]
    with EmbeddingCache() as cache:
        emb = embed_samples(samples, "efficientnet_lite0", cache=cache, progress=True, desc=f"embedding {name}")
    return emb


def run_dataset(name: str, emb, transfer_params=None) -> tuple[list[dict], dict]:
    from finegrain.fewshot.evaluate import evaluate_on_embeddings
    from finegrain.fewshot.transductive import EMParams

    splits = [s.split for s in emb.samples]
    rows, learned = [], {}
    for ways, shots in SETTINGS:
        params = None
        for alpha in (None, ALPHA):
            methods = ("prototype", "em", "unem")
            t = time.perf_counter()
            rep = evaluate_on_embeddings(emb.X, emb.labels, splits, ways=ways, shots=shots, queries=QUERIES,
                                         episodes=EPISODES, seed=SEED, imbalance_alpha=alpha, methods=methods,
                                         params=params, learn_iterations=LEARN_ITERATIONS)
            params = EMParams.from_dict(rep["unem_params"])
            learned[f"{ways}w{shots}s"] = rep["unem_params"]
            if transfer_params is not None and (ways, shots) == (5, 1):
                rep_t = evaluate_on_embeddings(emb.X, emb.labels, splits, ways=ways, shots=shots, queries=QUERIES,
                                               episodes=EPISODES, seed=SEED, imbalance_alpha=alpha,
                                               methods=("unem",), params=transfer_params)
                rep["methods"]["unem_transfer"] = {**rep_t["methods"]["unem"],
                                                   "description": "UNEM hyper-parameters learned on cub100 5w1s"}
            row = {"dataset": name, "ways": ways, "shots": shots, "queries": rep["setting"]["query_distribution"],
                   "episodes": EPISODES, "protocol": rep["protocol"], "seconds": round(time.perf_counter() - t, 1),
                   **{m: {"accuracy": round(100 * v["accuracy"], 2), "ci95": round(100 * v["ci95"], 2)}
                      for m, v in rep["methods"].items()}}
            if "learn_seconds" in rep:
                row["learn_seconds"] = rep["learn_seconds"]
            rows.append(row)
            print(table([row], header=False), file=sys.stderr)
    return rows, learned


COLUMNS = ("prototype", "em", "unem", "unem_transfer")


def table(rows: list[dict], header: bool = True) -> str:
    head = ["| data | setting | queries | " + " | ".join(COLUMNS) + " | UNEM − proto |",
            "|---|---|---|" + "---:|" * (len(COLUMNS) + 1)]
    lines = []
    for r in rows:
        cells = [f"{r[c]['accuracy']:.2f} ± {r[c]['ci95']:.2f}" if c in r else "" for c in COLUMNS]
        gain = r["unem"]["accuracy"] - r["prototype"]["accuracy"]
        lines.append(f"| {r['dataset']} | {r['ways']}-way {r['shots']}-shot | {r['queries']} | "
                     + " | ".join(cells) + f" | {gain:+.2f} |")
    return "\n".join((head if header else []) + lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cub100,plankton", help="comma-separated: cub100, plankton")
    args = parser.parse_args()
    from finegrain.fewshot.transductive import EMParams

    t0 = time.perf_counter()
    result = {"benchmark": "fewshot", "machine": machine(), "load_average_at_start": list(os.getloadavg()),
              "backbone": "efficientnet_lite0", "episodes": EPISODES, "learn_iterations": LEARN_ITERATIONS,
              "queries_per_class": QUERIES, "dirichlet_alpha": ALPHA, "seed": SEED, "rows": [], "learned": {}}
    transfer = None
    for name in args.datasets.split(","):
        emb = embeddings(name)
        rows, learned = run_dataset(name, emb, transfer)
        result["rows"] += rows
        result["learned"][name] = learned
        if name == "cub100":
            transfer = EMParams.from_dict(learned["5w1s"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    path = write_result("fewshot", result)
    print(table(result["rows"]))
    print(f"wrote {path} in {result['seconds']}s", file=sys.stderr)


if __name__ == "__main__":
    main()
