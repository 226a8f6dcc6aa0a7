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
        vocabulary = shared_terms(rows, learn)
        for text_weight in grid["text_weight"]:
            signed = with_terms(rows, vocabulary, text_weight)
            S = class_vectors(signed.row_emb, signed.row_class, signed.coef, n_classes)
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
