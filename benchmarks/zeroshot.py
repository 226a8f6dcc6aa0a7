"""Zero-shot benchmark on cub100: unseen species from descriptions alone, GZSL, prompt ensembling, ConSE.

    python benchmarks/zeroshot.py            # writes benchmarks/results/zeroshot.json and prints a table

Protocol (per seeded class split, 3 splits): 25 species are held out (unseen), the other 75 are seen.
The alignment is trained on the seen species' TRAIN images and descriptions only. Every hyper-parameter
is chosen on held-out SEEN classes: `finegrain align` itself chooses its text weight and ridge penalties
by hiding 20 % of the seen classes (3 folds); the description settings (attribute threshold, name weight)
are chosen here by splitting the 75 seen species into 60 + 15, aligning on the 60 and scoring the 15's
train images. Unseen test images are then classified among the 25 unseen species (chance 4 %).
Descriptions are CUB's class-level attributes turned into weighted phrases (`finegrain.zeroshot.attributes`).
ESZSL on the attribute vectors is the baseline, on the raw features (the classic method) and on the same
centred features the alignment uses, each tuned honestly (held-out seen classes) and on the unseen test
images (oracle).
"""
from __future__ import annotations

import csv
import itertools
import json
import sys
import time

import numpy as np

from _common import machine, shared_dataset, write_result

from finegrain.data.sources import load_data
from finegrain.embed import embed_samples
from finegrain.store import EmbeddingCache
from finegrain.zeroshot.alignment import AlignmentParams, RefineParams, centred, image_centre
from finegrain.zeroshot.attributes import attribute_descriptions, read_cub_attributes
from finegrain.zeroshot.build import build_zeroshot, train_alignment
from finegrain.zeroshot.eszsl import eszsl_fit, eszsl_scores
from finegrain.zeroshot.texts import read_templates

SEEDS = (0, 1, 2)
N_UNSEEN, N_VAL_SEEN = 25, 15
GRID = {"name_weight": (0.0, 0.2, 0.5), "min_percent": (1.0, 10.0)}
PROMPT_TEMPERATURES = (0.5, 1.0, 2.0, 4.0, None)  # None: uniform weights
REFINE_GRID = [RefineParams(t, s) for t in (20.0, 50.0) for s in (0.5, 0.8)]
ESZSL_GRID = [(g, l) for g in (0.1, 1.0, 10.0, 100.0) for l in (0.01, 0.1, 1.0, 10.0)]


def class_split(classes: list[str], seed: int, n_out: int) -> tuple[list[str], list[str]]:
    """(kept, held out): a seeded random split of class names."""
    perm = np.random.default_rng(seed).permutation(len(classes))
    out = sorted(classes[i] for i in perm[:n_out])
    return sorted(set(classes) - set(out)), out


def accuracy(clf, X: np.ndarray, y: np.ndarray) -> float:
    return float((clf.head.predict(X) == y).mean())


def mean_per_class(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


class Data:
    """cub100 embeddings (through the cache) + attribute descriptions, with the masks the protocol needs."""

    def __init__(self) -> None:
        root = shared_dataset("cub100")
        ds = load_data(root)
        with EmbeddingCache() as cache:
            self.emb = embed_samples(ds.samples, "efficientnet_lite0", cache=cache, progress=False)
        self.y = np.asarray(self.emb.labels, dtype=object)
        self.split = np.asarray([s.split for s in self.emb.samples], dtype=object)
        self.classes = sorted(set(self.y))
        attrs_dir = shared_dataset("cub_attributes")
        cub_names, attr_names, values = read_cub_attributes(attrs_dir)
        to_cub = {r["cub100_name"]: int(r["cub200_class_id"]) - 1
                  for r in csv.DictReader((attrs_dir / "cub100_class_map.csv").open())}
        self.attributes = np.stack([values[to_cub[c]] for c in self.classes]) / 100.0
        self.attr_names, self.values = attr_names, np.stack([values[to_cub[c]] for c in self.classes])

    def descriptions(self, min_percent: float):
        return attribute_descriptions(self.classes, self.attr_names, self.values, min_percent)

    def images(self, classes: list[str], split: str):
        mask = np.isin(self.y, classes) & (self.split == split)
        return self.emb.subset(mask), self.y[mask]


def align(data: Data, seen: list[str], targets: list[str], hp: dict, templates, **kw):
    """`finegrain align` on the seen classes' train images; it chooses its own settings unless `params` is given."""
    train, _ = data.images(seen, "train")
    return train_alignment(train, data.descriptions(hp["min_percent"]), classes=targets, templates=templates,
                           name_weight=hp["name_weight"], **kw)


def alignment_params(clf) -> AlignmentParams:
    """The settings an alignment chose, to reuse them in the secondary studies (adaptation, prompts, GZSL)."""
    return AlignmentParams(**clf.info["zeroshot"]["alignment"]["params"])


def choose(data: Data, seen: list[str], seed: int, grid: dict, templates) -> tuple[dict, float]:
    """Best hyper-parameters by accuracy on 15 held-out seen classes (their train images), trained on 60."""
    fit_on, val = class_split(seen, 1000 + seed, N_VAL_SEEN)
    val_emb, val_y = data.images(val, "train")
    best, best_acc = {}, -1.0
    for values in itertools.product(*grid.values()):
        hp = dict(zip(grid, values))
        acc = accuracy(align(data, fit_on, val, hp, templates), val_emb.X, val_y)
        if acc > best_acc:
            best, best_acc = hp, acc
    return best, best_acc


def choose_refine(data: Data, seen: list[str], seed: int, hp: dict, templates, params) -> RefineParams:
    """Adaptation parameters chosen the same way: the 15 held-out seen classes' images act as unlabelled."""
    fit_on, val = class_split(seen, 1000 + seed, N_VAL_SEEN)
    val_emb, val_y = data.images(val, "train")
    scores = {r: accuracy(align(data, fit_on, val, hp, templates, unlabelled=val_emb.X, refine=r, params=params),
                          val_emb.X, val_y) for r in REFINE_GRID}
    return max(scores, key=scores.get)


def eszsl(data: Data, seen: list[str], unseen: list[str], seed: int, centre_features: bool) -> dict:
    """ESZSL on the attribute vectors: (γ, λ) chosen on held-out seen classes; also the oracle tuned on the
    unseen test images, for scale. `centre_features`: the alignment's image preparation (power-normalised,
    centred on the mean seen training image) instead of the raw embeddings."""
    def run(fit_on, target, X, y, g, l):
        tr, ytr = data.images(fit_on, "train")
        Xtr = tr.X
        if centre_features:
            centre = image_centre(Xtr)
            Xtr, X = centred(Xtr, centre), centred(X, centre)
        S = data.attributes
        idx = [data.classes.index(c) for c in fit_on]
        tidx = [data.classes.index(c) for c in target]
        V = eszsl_fit(Xtr, np.searchsorted(fit_on, ytr), S[idx], g, l)
        return float((np.asarray(target, dtype=object)[eszsl_scores(X, V, S[tidx]).argmax(1)] == y).mean())

    fit_on, val = class_split(seen, 1000 + seed, N_VAL_SEEN)
    val_emb, val_y = data.images(val, "train")
    chosen = max(ESZSL_GRID, key=lambda p: run(fit_on, val, val_emb.X, val_y, *p))
    test, y = data.images(unseen, "test")
    oracle = {p: run(seen, unseen, test.X, y, *p) for p in ESZSL_GRID}
    best = max(oracle, key=oracle.get)
    return {"honest": run(seen, unseen, test.X, y, *chosen), "honest_params": list(chosen),
            "oracle_tuned_on_test": oracle[best], "oracle_params": list(best)}


def gzsl(clf, data: Data, seen: list[str], unseen: list[str]) -> dict:
    """Seen/unseen mean per-class accuracy among all 100 candidates on test images, and their harmonic mean:
    with the seen-class penalty `align` chose on held-out seen classes, and without it (same model)."""
    def scores() -> dict:
        out = {}
        for name, classes in (("seen", seen), ("unseen", unseen)):
            emb, y = data.images(classes, "test")
            out[name] = mean_per_class(clf.head.predict(emb.X), y)
        out["harmonic_mean"] = 2 * out["seen"] * out["unseen"] / max(out["seen"] + out["unseen"], 1e-12)
        return out

    chosen = clf.head.seen_penalty_
    result = {**scores(), "seen_penalty": chosen}
    clf.head.seen_penalty_ = 0.0
    result["without_penalty"] = scores()
    clf.head.seen_penalty_ = chosen
    return result


def prompt_study(data: Data, seen: list[str], unseen: list[str], hp: dict, seed: int, params) -> dict:
    """Names only (no descriptions): plain prompt vs uniform template ensemble vs label-free weighted ensemble.

    The weighting's temperature (None = uniform) is chosen on the 15 held-out seen classes, whose images
    serve as the unlabelled set there; on the unseen classes the unlabelled set is their test images."""
    hp_names = {**hp, "name_weight": 1.0}
    birds = read_templates("birds")
    fit_on, val = class_split(seen, 1000 + seed, N_VAL_SEEN)
    val_emb, val_y = data.images(val, "train")
    val_acc = {t: accuracy(align(data, fit_on, val, hp_names, birds, unlabelled=val_emb.X, prompt_temperature=t,
                                 params=params), val_emb.X, val_y) for t in PROMPT_TEMPERATURES}
    temperature = max(PROMPT_TEMPERATURES, key=lambda t: (val_acc[t], t is not None))
    test, y = data.images(unseen, "test")
    plain = align(data, seen, unseen, hp_names, read_templates("photo"), params=params)
    uniform = align(data, seen, unseen, hp_names, birds, params=params)
    weighted = align(data, seen, unseen, hp_names, birds, unlabelled=test.X, prompt_temperature=temperature,
                     params=params)
    fixed = align(data, seen, unseen, hp_names, birds, unlabelled=test.X, prompt_temperature=1.0, params=params)
    return {"plain_photo_prompt": accuracy(plain, test.X, y), "uniform_birds_ensemble": accuracy(uniform, test.X, y),
            "weighted_birds_ensemble": accuracy(weighted, test.X, y), "weighting_temperature": temperature,
            "weighted_fixed_temperature_1": accuracy(fixed, test.X, y),
            "template_weights": weighted.info["zeroshot"]["template_weights"]}


def conse(data: Data) -> dict:
    test, y = data.images(data.classes, "test")
    out = {}
    for templates in ("photo", "birds"):
        clf = build_zeroshot(data.classes, templates=templates, backbone="efficientnet_lite0", method="conse")
        out[f"{templates}_templates"] = accuracy(clf, test.X, y)
    clf = build_zeroshot(data.classes, templates="birds", backbone="efficientnet_lite0", method="conse",
                         descriptions=data.descriptions(10.0), name_weight=0.5)
    out["birds_templates_plus_descriptions"] = accuracy(clf, test.X, y)
    return out


def main() -> None:
    t0 = time.perf_counter()
    data = Data()
    templates = read_templates("birds")
    result = {"dataset": "cub100", "machine": machine(), "backbone": "efficientnet_lite0", "text_encoder": "minilm",
              "protocol": __doc__.split("Protocol")[1].strip(), "grid": {k: list(v) for k, v in GRID.items()},
              "splits": []}
    for seed in SEEDS:
        seen, unseen = class_split(data.classes, seed, N_UNSEEN)
        hp, val_acc = choose(data, seen, seed, GRID, templates)
        test, y = data.images(unseen, "test")
        zsl = align(data, seen, unseen, hp, templates)
        params = alignment_params(zsl)
        refine = choose_refine(data, seen, seed, hp, templates, params)
        adapted = align(data, seen, unseen, hp, templates, unlabelled=test.X, refine=refine, params=params)
        row = {"seed": seed, "unseen": unseen, "chosen": hp, "val_seen_accuracy": val_acc,
               "alignment_params": params.__dict__,
               "zsl_top1": accuracy(zsl, test.X, y), "zsl_top1_adapted": accuracy(adapted, test.X, y),
               "adapt_params": refine.__dict__,
               "eszsl": eszsl(data, seen, unseen, seed, centre_features=False),
               "eszsl_centred_features": eszsl(data, seen, unseen, seed, centre_features=True),
               "gzsl": gzsl(align(data, seen, data.classes, hp, templates, params=params), data, seen, unseen),
               "prompts": prompt_study(data, seen, unseen, hp, seed, params)}
        result["splits"].append(row)
        print(json.dumps({k: row[k] for k in ("seed", "chosen", "zsl_top1", "zsl_top1_adapted", "alignment_params", "eszsl", "eszsl_centred_features", "gzsl",
                                               "prompts")}), file=sys.stderr, flush=True)
    result["conse_all_100"] = conse(data)

    def avg(get) -> float:
        return round(float(np.mean([get(r) for r in result["splits"]])), 4)

    result["summary"] = {
        "zsl_top1": avg(lambda r: r["zsl_top1"]), "zsl_top1_adapted_transductive": avg(lambda r: r["zsl_top1_adapted"]),
        "eszsl_honest": avg(lambda r: r["eszsl"]["honest"]),
        "eszsl_oracle_tuned_on_test": avg(lambda r: r["eszsl"]["oracle_tuned_on_test"]),
        "eszsl_centred_features_honest": avg(lambda r: r["eszsl_centred_features"]["honest"]),
        "eszsl_centred_features_oracle_tuned_on_test": avg(lambda r: r["eszsl_centred_features"]["oracle_tuned_on_test"]),
        "zsl_top1_per_split": [r["zsl_top1"] for r in result["splits"]],
        "gzsl_seen": avg(lambda r: r["gzsl"]["seen"]), "gzsl_unseen": avg(lambda r: r["gzsl"]["unseen"]),
        "gzsl_harmonic_mean": avg(lambda r: r["gzsl"]["harmonic_mean"]),
        "gzsl_without_penalty_seen": avg(lambda r: r["gzsl"]["without_penalty"]["seen"]),
        "gzsl_without_penalty_unseen": avg(lambda r: r["gzsl"]["without_penalty"]["unseen"]),
        "gzsl_without_penalty_harmonic_mean": avg(lambda r: r["gzsl"]["without_penalty"]["harmonic_mean"]),
        "names_plain_prompt": avg(lambda r: r["prompts"]["plain_photo_prompt"]),
        "names_uniform_ensemble": avg(lambda r: r["prompts"]["uniform_birds_ensemble"]),
        "names_weighted_ensemble": avg(lambda r: r["prompts"]["weighted_birds_ensemble"]),
        "names_weighted_ensemble_fixed_temperature_1": avg(lambda r: r["prompts"]["weighted_fixed_temperature_1"]),
        "conse_all_100": result["conse_all_100"], "seconds": round(time.perf_counter() - t0, 1),
    }
    path = write_result("zeroshot", result)
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
