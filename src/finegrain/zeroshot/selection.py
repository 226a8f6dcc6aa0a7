"""Choosing the alignment's hyper-parameters without ever looking at the classes it will be used on.

Zero-shot accuracy is about classes with no labelled image, so the only honest validation is to play the
same game inside the seen classes: hide some of them, learn the alignment on the rest, and score the
hidden ones' images among themselves. Several folds average out which classes happen to be hidden.
"""
from __future__ import annotations

import itertools
import logging
from typing import Sequence

import numpy as np

from ..heads.base import l2_normalise, stratified_holdout
from ..metrics import mean_per_class_accuracy
from .alignment import AlignmentParams, centred, fit_projection, image_centre
from .ensemble import class_vectors
from .head import TextRows
from .terms import shared_terms, with_terms

log = logging.getLogger("finegrain")
ALIGNMENT_GRID: dict[str, tuple[float, ...]] = {"text_weight": (0.5, 1.0, 2.0), "gamma": (0.1, 1.0, 10.0, 100.0),
                                                "lam": (0.01, 0.1, 1.0, 10.0)}
MIN_CLASSES_TO_CHOOSE = 6


def held_out_class_folds(n_classes: int, folds: int, fraction: float, seed: int) -> list[np.ndarray]:
    """Seeded sets of hidden class indices, at least 2 per fold and at least 2 classes left to learn from."""
    n_out = min(max(2, round(fraction * n_classes)), n_classes - 2)
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n_classes, n_out, replace=False)) for _ in range(folds)]


def fold_signatures(rows: TextRows, learn: np.ndarray, text_weight: float) -> np.ndarray:
    """(K, T) unit class signatures as an alignment learnt on the classes `learn` would build them: terms
    are only those the learnt classes share."""
    signed = with_terms(rows, shared_terms(rows, learn), text_weight)
    return class_vectors(signed.row_emb, signed.row_class, signed.coef, int(rows.row_class.max()) + 1)


def choose_alignment_params(X: np.ndarray, y: np.ndarray, rows: TextRows,
                            grid: dict[str, Sequence[float]] | None = None, folds: int = 3,
                            fraction: float = 0.2, seed: int = 0) -> tuple[AlignmentParams, dict]:
    """Best (text_weight, gamma, lam) by mean top-1 on held-out seen classes.

    X (N, D): images of the seen classes; y (N,): their class index into `rows` (text-space rows of the
    seen classes). Returns the parameters and a report with every candidate's held-out accuracy."""
    grid = {**ALIGNMENT_GRID, **(grid or {})}
    y = np.asarray(y, dtype=np.int64)
    n_classes = int(rows.row_class.max()) + 1
    if n_classes < MIN_CLASSES_TO_CHOOSE:
        log.warning("only %d described classes: too few to hide some for choosing the alignment's settings; "
                    "using the defaults (give --gamma/--lam/--text-weight to override)", n_classes)
        return AlignmentParams(), {"skipped": f"{n_classes} classes < {MIN_CLASSES_TO_CHOOSE}: defaults used"}
    candidates = list(itertools.product(grid["text_weight"], grid["gamma"], grid["lam"]))
    total = dict.fromkeys(candidates, 0.0)
    hidden_sets = held_out_class_folds(n_classes, folds, fraction, seed)
    for hidden in hidden_sets:
        learn = np.setdiff1d(np.arange(n_classes), hidden)
        on_learn, on_hidden = np.isin(y, learn), np.isin(y, hidden)
        centre = image_centre(X[on_learn])
        Z, Zh = centred(X[on_learn], centre), centred(X[on_hidden], centre)
        gram = Z.T @ Z
        for text_weight in grid["text_weight"]:
            S = fold_signatures(rows, learn, text_weight)
            for gamma, lam in itertools.product(grid["gamma"], grid["lam"]):
                P = fit_projection(Z, np.searchsorted(learn, y[on_learn]), S[learn],
                                   AlignmentParams(gamma, lam, text_weight), gram=gram)
                pred = hidden[np.argmax(Zh @ P @ S[hidden].T, axis=1)]
                total[(text_weight, gamma, lam)] += float((pred == y[on_hidden]).mean()) / len(hidden_sets)
    best = max(candidates, key=lambda c: total[c])  # first of equals in grid order: deterministic
    report = {"folds": len(hidden_sets), "hidden_classes_per_fold": len(hidden_sets[0]),
              "held_out_top1": round(total[best], 4),
              "candidates": [{"text_weight": t, "gamma": g, "lam": l, "held_out_top1": round(total[(t, g, l)], 4)}
                             for t, g, l in candidates]}
    return AlignmentParams(*best[1:], text_weight=best[0]), report


SEEN_PENALTIES = (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.13, 0.16, 0.2)


def harmonic_mean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def choose_seen_penalty(X: np.ndarray, y: np.ndarray, rows: TextRows, params: AlignmentParams,
                        penalties: Sequence[float] = SEEN_PENALTIES, folds: int = 3, fraction: float = 0.2,
                        seed: int = 0) -> tuple[float, dict]:
    """The amount subtracted from seen classes' cosine when seen and unseen classes compete (generalised
    zero-shot), by the harmonic mean of seen and unseen mean per-class accuracy on held-out seen classes.

    Each fold hides 20 % of the classes (the "unseen") and 20 % of the other classes' images (their test
    images), learns the alignment on the rest with `params`, and scores both among all classes."""
    y = np.asarray(y, dtype=np.int64)
    n_classes = int(rows.row_class.max()) + 1
    if n_classes < MIN_CLASSES_TO_CHOOSE:
        return 0.0, {"skipped": f"{n_classes} classes < {MIN_CLASSES_TO_CHOOSE}: no penalty"}
    total = dict.fromkeys(penalties, 0.0)
    hidden_sets = held_out_class_folds(n_classes, folds, fraction, seed)
    for f, hidden in enumerate(hidden_sets):
        learn = np.setdiff1d(np.arange(n_classes), hidden)
        on_learn = np.flatnonzero(np.isin(y, learn))
        fit_idx, held_idx = stratified_holdout(y[on_learn], fraction, seed + f)
        fit_rows, held_rows = on_learn[fit_idx], on_learn[held_idx]
        centre = image_centre(X[fit_rows])
        S = fold_signatures(rows, learn, params.text_weight)
        P = fit_projection(centred(X[fit_rows], centre), np.searchsorted(learn, y[fit_rows]), S[learn], params)
        is_seen = np.isin(np.arange(n_classes), learn)
        scored = {"seen": held_rows, "unseen": np.flatnonzero(np.isin(y, hidden))}
        sims = {k: l2_normalise(centred(X[idx], centre) @ P) @ S.T for k, idx in scored.items()}
        for penalty in penalties:
            acc = {k: mean_per_class_accuracy(y[idx], np.argmax(sims[k] - penalty * is_seen, axis=1))
                   for k, idx in scored.items()}
            total[penalty] += harmonic_mean(acc["seen"], acc["unseen"]) / len(hidden_sets)
    best = max(penalties, key=lambda p: total[p])
    return float(best), {"folds": len(hidden_sets), "held_out_harmonic_mean": round(total[best], 4),
                         "candidates": [{"seen_penalty": p, "held_out_harmonic_mean": round(total[p], 4)}
                                        for p in penalties]}
