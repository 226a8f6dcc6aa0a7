"""Open-world benchmark: calibration, near-OOD detection ("unknown"), MixOE and category discovery.

    python benchmarks/openworld.py            # writes benchmarks/results/openworld.json (+ reliability PNG/SVG)
    python benchmarks/openworld.py --quick    # one class split per dataset
    python benchmarks/openworld.py --finetune --datasets cub100 --name openworld_finetuned
                                              # tuned features: `finetune` on each split's known species first
    python benchmarks/openworld.py --finetune --mixoe 1 --datasets cub100 --name openworld_finetuned_mixoe
                                              # the same with MixOE fine-tuning (synthetic outliers)

Near-OOD protocol: for each of 3 seeded class splits, 75 % of the species are known (train on their train
images), the rest are unknown; the test images of both are scored. cub100 uses its train/test split; plankton
(no split in the manifest) is capped at 100 images per class and split 50/50, stratified and seeded.
The head is the default logistic head (C chosen from C_GRID on held-out train images of the first split, then
kept for the other splits to save time; on a combined backbone one model per member, each choosing its C on every
split, as `fit` does); temperature and the `auto` threshold come from `calibrate_and_detect`, exactly as
`finegrain fit` does (held-out 20 % of the known train images).
MixOE "outlier folder" uses the train images of a third of the unknown species as the user's outlier folder and
is scored on the remaining unknown species only, next to the plain head on that same subset.
Discovery (cub100): labelled = train images of the known species, unlabelled = test images of all species.
Embeddings come through the default embedding cache (fast once warm, computed from scratch otherwise).
With --finetune, each class split first fine-tunes the backbone (`finegrain.finetune` defaults, seed = the split's
seed) on the train images of its known species only, and every score is computed on that tuned network's
embeddings: the unknown species are never seen by the network, its head or its calibration.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _common import RESULTS, machine, shared_dataset, write_result

SEEDS = (0, 1, 2)
KNOWN_FRACTION = 0.75
PLANKTON_CAP = 100
C_GRID = (0.01, 0.1, 1.0)  # the values the default grid picks here; half the fits of the full grid


def embeddings(name: str, backbone: str = "efficientnet_lite0") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, labels, split) for a dataset, through the embedding cache."""
    from finegrain.data.sources import load_data
    from finegrain.embed import embed_samples
    from finegrain.heads.base import stratified_holdout
    from finegrain.store import EmbeddingCache

    ds = load_data(shared_dataset("cub100" if name == "cub100" else "ndsb_plankton/manifest.csv"))
    samples = [s for s in ds.samples if s.label is not None]
    if name == "plankton":
        rng = np.random.default_rng(0)
        by_class: dict[str, list] = {}
        for s in samples:
            by_class.setdefault(s.label, []).append(s)
        samples = [by_class[c][i] for c in sorted(by_class)
                   for i in sorted(rng.permutation(len(by_class[c]))[:PLANKTON_CAP])]
    with EmbeddingCache() as cache:
        emb = embed_samples(samples, backbone, cache=cache, progress=True, desc=f"embedding {name}")
    labels = np.asarray(emb.labels, dtype=object)
    if name == "plankton":
        _, test = stratified_holdout(labels, 0.5, 0)
        split = np.full(len(labels), "train", dtype=object)
        split[test] = "test"
    else:
        split = np.asarray([s.split for s in emb.samples], dtype=object)
    return emb.X, labels, split


def known_species_data(name: str, known: np.ndarray):
    """The dataset restricted to the train images of the known species (what a user would fine-tune on)."""
    from finegrain.data.sources import DataSet, load_data

    ds = load_data(shared_dataset("cub100" if name == "cub100" else "ndsb_plankton/manifest.csv"))
    keep = set(known.tolist())
    return DataSet([s for s in ds.samples if s.label in keep and s.split in (None, "train")], ds.root, ds.kind, [])


def tuned_embeddings(name: str, labels: np.ndarray, seed: int, backbone: str,
                     mixoe: float = 0.0) -> tuple[np.ndarray, str]:
    """Fine-tune on this split's known species (with MixOE's synthetic-outlier loss when `mixoe` > 0), then
    embed every image with the tuned network."""
    import finegrain
    from finegrain.finetune.settings import TrainSettings

    known = known_and_unknown(labels, seed)[0]
    clf = finegrain.finetune(known_species_data(name, known), backbone=backbone, seed=seed, progress=True,
                             tta="none", settings=TrainSettings(seed=seed, mixoe=mixoe))
    X, tuned_labels, _ = embeddings(name, clf.backbone_id)
    if not np.array_equal(tuned_labels, labels):
        raise RuntimeError("the tuned embeddings are not in the stock embeddings' order")
    return X, clf.backbone_id


def known_and_unknown(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    classes = np.unique(labels)
    perm = np.random.default_rng(seed).permutation(classes)
    n_known = int(round(KNOWN_FRACTION * len(classes)))
    return perm[:n_known], perm[n_known:]


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict:
    from finegrain.openworld.metrics import auroc, fpr_at_tpr
    return {"auroc": round(auroc(id_scores, ood_scores), 4), "fpr95": round(fpr_at_tpr(id_scores, ood_scores), 4)}


def one_split(X, labels, split, seed: int, with_discovery: bool, C: float | None,
              blocks: list[int] | None = None) -> tuple[dict, dict]:
    """Metrics of one seeded known/unknown class split, and the test calibration summary (for the diagram)."""
    from finegrain.heads import make_head
    from finegrain.heads.base import softmax
    from finegrain.metrics import expected_calibration_error
    from finegrain.openworld.calibration import calibration_summary
    from finegrain.openworld import scores as S
    from finegrain.openworld.detector import OODDetector
    from finegrain.openworld.fitting import calibrate_and_detect
    from finegrain.heads.mixoe import MixOEHead

    known, unknown = known_and_unknown(labels, seed)
    n_known = len(known)
    is_known = np.isin(labels, known)
    tr, te_id, te_ood = (split == "train") & is_known, (split == "test") & is_known, (split == "test") & ~is_known
    out: dict = {"seed": seed, "n_known": int(n_known), "n_unknown": int(len(unknown)),
                 "n_train": int(tr.sum()), "n_test_known": int(te_id.sum()), "n_test_unknown": int(te_ood.sum())}
    t0 = time.perf_counter()
    head = make_head("logistic", seed=seed, C=C, Cs=C_GRID, blocks=blocks).fit(X[tr], labels[tr])
    T, cal, detector = calibrate_and_detect(head, X[tr], labels[tr], seed=seed)
    out["fit_s"] = round(time.perf_counter() - t0, 1)
    z_id, z_ood = head.decision_function(X[te_id]), head.decision_function(X[te_ood])
    y_id = head.encode_labels(labels[te_id])
    before, after = softmax(z_id), softmax(z_id / T)
    out["closed_set"] = {"C": [m.C_ for m in head.members_] if blocks else head.C_, "temperature": round(T, 4),
                         "top1_before": round(float((before.argmax(1) == y_id).mean()), 4),
                         "top1_after": round(float((after.argmax(1) == y_id).mean()), 4),
                         "ece_before": round(expected_calibration_error(y_id, before), 4),
                         "ece_after": round(expected_calibration_error(y_id, after), 4),
                         "ece_held_out_before": round(cal["before"]["ece"], 4),
                         "ece_held_out_after": round(cal["after"]["ece"], 4)}
    yi = head.encode_labels(labels[tr])
    scores = {"msp": (S.max_softmax(z_id), S.max_softmax(z_ood)),
              "msp_calibrated": (S.max_softmax(z_id, T), S.max_softmax(z_ood, T)),
              "maxlogit": (S.max_logit(z_id), S.max_logit(z_ood)),
              "energy": (S.energy(z_id), S.energy(z_ood))}
    for method in ("mahalanobis", "knn"):
        det = OODDetector(method).fit(X[tr], yi)
        scores[method] = (det.score_samples(X[te_id]), det.score_samples(X[te_ood]))
    t1 = time.perf_counter()
    mix = MixOEHead(seed=seed).fit(X[tr], labels[tr])
    scores["mixoe_synthetic_msp"] = (S.max_softmax(mix.decision_function(X[te_id])),
                                     S.max_softmax(mix.decision_function(X[te_ood])))
    out["mixoe_fit_s"] = round(time.perf_counter() - t1, 1)
    out["mixoe_synthetic_top1"] = round(float((mix.decision_function(X[te_id]).argmax(1) == y_id).mean()), 4)
    out["ood"] = {name: ood_metrics(*pair) for name, pair in scores.items()}
    if with_discovery:  # cub100: species names carry their group
        out["msp_by_sibling"] = siblings_analysis(labels[te_ood], known, *scores["msp"])
    flagged_id = detector.predict_unknown(X[te_id], z_id)[0]
    flagged_ood = detector.predict_unknown(X[te_ood], z_ood)[0]
    out["auto_threshold"] = {"score": detector.method, "threshold": round(detector.threshold_, 4),
                             "known_kept": round(float(1 - flagged_id.mean()), 4),
                             "unknown_flagged": round(float(flagged_ood.mean()), 4)}
    out["mixoe_outlier_folder"] = mixoe_with_folder(X, labels, split, tr, te_id, unknown, head, seed)
    if with_discovery:
        out["discovery"] = discovery(X, labels, split, tr, known)
    return out, calibration_summary(z_id, y_id, T)


def siblings_analysis(labels_ood: np.ndarray, known: np.ndarray, id_scores: np.ndarray,
                      ood_scores: np.ndarray) -> dict:
    """cub100 only: MSP AUROC for unknown species that share their group name (last word: Warbler, Gull, ...)
    with a known species, vs those whose group is entirely unknown — how "near" the near-OOD is."""
    group = lambda name: str(name).rsplit("_", 1)[-1]  # noqa: E731
    known_groups = {group(c) for c in known}
    near = np.array([group(c) in known_groups for c in labels_ood])
    out = {"unknown_images_with_known_sibling": round(float(near.mean()), 4)}
    for name, mask in (("with_known_sibling", near), ("without_known_sibling", ~near)):
        if mask.any():
            out[name] = ood_metrics(id_scores, ood_scores[mask])
    return out


def mixoe_with_folder(X, labels, split, tr, te_id, unknown, head, seed: int) -> dict:
    """A third of the unknown species' TRAIN images act as the outlier folder; scored on the other unknowns."""
    from finegrain.openworld import scores as S
    from finegrain.heads.mixoe import MixOEHead

    folder_species = unknown[: len(unknown) // 3]
    folder = (split == "train") & np.isin(labels, folder_species)
    te_rest = (split == "test") & np.isin(labels, unknown[len(unknown) // 3:])
    mix = MixOEHead(seed=seed).fit(X[tr], labels[tr], outliers=X[folder])
    return {"outlier_species": int(len(folder_species)), "scored_unknown_species": int(len(unknown) - len(folder_species)),
            "logistic_msp": ood_metrics(S.max_softmax(head.decision_function(X[te_id])),
                                        S.max_softmax(head.decision_function(X[te_rest]))),
            "mixoe_msp": ood_metrics(S.max_softmax(mix.decision_function(X[te_id])),
                                     S.max_softmax(mix.decision_function(X[te_rest])))}


def discovery(X, labels, split, tr, known) -> dict:
    from finegrain.openworld.discovery import SemiSupervisedGMM
    from finegrain.openworld.metrics import clustering_accuracy

    unl = split == "test"
    t0 = time.perf_counter()
    gmm = SemiSupervisedGMM().fit(X[tr], labels[tr], X[unl])
    y = labels[unl]
    old = np.isin(y, known)
    n_true = int(len(np.unique(y)))
    return {"seconds": round(time.perf_counter() - t0, 1),
            "all": round(clustering_accuracy(y, gmm.labels_), 4),
            "old": round(clustering_accuracy(y, gmm.labels_, old), 4),
            "new": round(clustering_accuracy(y, gmm.labels_, ~old), 4),
            "estimated_classes": gmm.n_components_, "true_classes": n_true,
            "estimate_error": round(gmm.n_components_ / n_true - 1, 4), "history": gmm.history_}


def summarise(runs: list[dict]) -> dict:
    """Mean ± std over class splits of every number in the runs."""
    def walk(items: list) -> dict | list:
        first = items[0]
        if isinstance(first, dict):
            return {k: walk([it[k] for it in items]) for k in first if not isinstance(first[k], (list, str))}
        arr = np.asarray(items, dtype=float)
        return {"mean": round(float(arr.mean()), 4), "std": round(float(arr.std()), 4)}
    return walk(runs)


def reliability_figure(summary: dict, name: str, prefix: str = "openworld") -> list[str]:
    """Reliability diagram of the seed-0 known-class TEST images, before and after temperature scaling."""
    from finegrain.openworld.plots import save_reliability_diagram

    paths = save_reliability_diagram(summary, [RESULTS / f"{prefix}_{name}_reliability.png",
                                               RESULTS / f"{prefix}_{name}_reliability.svg"],
                                     title=f"{name} test (known species, split seed 0), logistic head")
    return [str(p.relative_to(RESULTS.parent.parent)) for p in paths]


def previous_runs(result_name: str, dataset: str) -> list[dict]:
    """The runs an earlier part of this benchmark wrote for `dataset` (none when there is no such file)."""
    import json

    path = RESULTS / f"{result_name}.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text()).get("datasets", {}).get(dataset, {}).get("runs", [])


def main() -> None:
    import torch

    from finegrain.backbones import member_widths

    torch.set_num_threads(1)  # MixOE's small linear layer: threads only add contention on a 2-core machine
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one class split per dataset")
    ap.add_argument("--datasets", nargs="+", default=["cub100", "plankton"])
    ap.add_argument("--backbone", default="efficientnet_lite0", help="backbone id (default efficientnet_lite0)")
    ap.add_argument("--name", default="openworld", help="results file name (default openworld)")
    ap.add_argument("--finetune", action="store_true", help="fine-tune on each split's known species first")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="class splits to run (default 0 1 2)")
    ap.add_argument("--mixoe", type=float, default=0.0, help="with --finetune: MixOE fine-tuning weight (finetune --mixoe)")
    ap.add_argument("--append", action="store_true",
                    help="add these splits' runs to results/NAME.json (a long benchmark run in parts)")
    args = ap.parse_args()
    seeds = args.seeds or (SEEDS[:1] if args.quick else SEEDS)
    t_start = time.perf_counter()
    result = {"machine": machine(), "backbone": args.backbone, "head": "logistic", "seeds": list(seeds),
              "finetuned_per_split": args.finetune, "finetune_mixoe": args.mixoe,
              "known_fraction": KNOWN_FRACTION, "datasets": {}}
    for name in args.datasets:
        X, labels, split = embeddings(name, args.backbone)
        blocks = member_widths(args.backbone)  # a combined backbone: one logistic model per member, as `fit` does
        runs, test_calibration, C = [], [], None
        for seed in seeds:
            X_run = X
            if args.finetune:
                t0 = time.perf_counter()
                X_run, tuned_id = tuned_embeddings(name, labels, seed, args.backbone, args.mixoe)
                C = None  # each tuned network chooses its own C
            run, cal = one_split(X_run, labels, split, seed, with_discovery=name == "cub100", C=C, blocks=blocks)
            if args.finetune:
                run["finetune"] = {"backbone": tuned_id, "seconds": round(time.perf_counter() - t0, 1)}
            if blocks is None:  # chosen on the first split's held-out images, then kept: saves minutes
                C = run["closed_set"]["C"]
            runs.append(run)
            test_calibration.append(cal)
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v['auroc']:.3f}/{v['fpr95']:.3f}"
                                                      for k, v in runs[-1]["ood"].items()), file=sys.stderr, flush=True)
        earlier = previous_runs(args.name, name) if args.append else []
        result["datasets"][name] = {"n_images": int(len(labels)), "n_classes": int(len(np.unique(labels))),
                                    "mean": summarise(earlier + runs), "runs": earlier + runs,
                                    "reliability_diagram": reliability_figure(test_calibration[0], name, args.name)}
    result["seeds"] = sorted({r["seed"] for d in result["datasets"].values() for r in d["runs"]})
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    path = write_result(args.name, result)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
