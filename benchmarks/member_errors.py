"""Why joined backbones stop gaining: how often every member of a joined model is wrong on the same image.

    cd benchmarks && python member_errors.py --row cub100_lite012_320_whole_tta --seeds 0 1

Reads the models `finetune.py --row ROW --seed S` wrote (their embeddings are cached by that run), scores each
member's own logistic model inside the joined head (the head averages their logits) on the cub100 test split,
and writes results/member_errors.json: each member's top-1, the joined head's, the share of images every member
gets wrong (no way of combining them can fix those), the share at least one gets right (the oracle's top-1), and
the classes where the joined head errs most.
With several seeds, the members of all of them are pooled as one larger joint.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from _common import RESULTS, machine, shared_dataset
from finetune import CACHE, ROWS


def member_correct(model_dir, test, cache) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per member of the model's joined logistic head: which test images its own logistic model gets right;
    and the labels."""
    from finegrain.backbones.composite import member_ids
    from finegrain.pipeline import Classifier

    clf = Classifier.load(model_dir)
    emb = clf.embed(test, cache=cache)
    head, members = clf.head, member_ids(clf.backbone_id)
    if not getattr(head, "blocks", None):
        raise SystemExit(f"{model_dir} has no joined logistic head (one model per member)")
    labels = np.asarray(emb.labels)
    classes = np.asarray(head.classes_)
    out = {}
    for name, model, part in zip(members, head.members_, head._block_slices(emb.X.shape[1])):  # as explain reads it
        out[name] = classes[model.decision_function(emb.X[:, part]).argmax(1)] == labels
    out["joined head"] = classes[head.decision_function(emb.X).argmax(1)] == labels
    return out, labels


def summarise(correct: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    members = np.stack([v for k, v in correct.items() if k != "joined head"])
    classes, errors = np.unique(labels[~correct["joined head"]], return_counts=True)
    worst = np.argsort(-errors, kind="stable")[:5]
    return {"members_top1": {k: round(float(v.mean()), 4) for k, v in correct.items() if k != "joined head"},
            "joined_head_top1": round(float(correct["joined head"].mean()), 4),
            "all_members_wrong": round(float((~members).all(0).mean()), 4),
            "oracle_top1": round(float(members.any(0).mean()), 4),
            "joined_head_errors_by_class": {str(classes[i]): int(errors[i]) for i in worst}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", required=True, choices=sorted(r for r, (d, _, _) in ROWS.items() if d == "cub100"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    from finegrain.data.sources import load_data
    from finegrain.store import EmbeddingCache

    os.environ["FINEGRAIN_CACHE_DIR"] = str(CACHE)
    test = load_data(shared_dataset("cub100")).select(["test"])
    result = {"row": args.row, "seeds": args.seeds, "per_seed": {}, "machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M")}
    pooled: dict[str, np.ndarray] = {}
    with EmbeddingCache(CACHE) as cache:
        for seed in args.seeds:
            correct, labels = member_correct(CACHE / "work" / f"{args.row}_s{seed}", test, cache)
            result["per_seed"][seed] = summarise(correct, labels)
            pooled |= {f"{k} (seed {seed})": v for k, v in correct.items() if k != "joined head"}
            print(f"seed {seed}: {json.dumps(result['per_seed'][seed])}")
    if len(args.seeds) > 1:
        members = np.stack(list(pooled.values()))
        result["pooled"] = {"networks": len(pooled), "all_wrong": round(float((~members).all(0).mean()), 4),
                            "oracle_top1": round(float(members.any(0).mean()), 4)}
        print(f"pooled: {json.dumps(result['pooled'])}")
    (RESULTS / "member_errors.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
