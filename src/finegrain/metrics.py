"""Classification metrics as pure numpy functions, so evaluation needs neither sklearn nor a framework.

Labels are integer class ids in [0, C); scores and probabilities are (N, C) arrays.
Bad input raises DataError (the arrays) or ConfigError (an option such as `k` or `n_bins`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from finegrain.errors import ConfigError, DataError


def _labels(y: Any, name: str) -> np.ndarray:
    """Return `y` as a non-empty 1-D integer array; float or 2-D labels are a caller mistake, not data to coerce."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of class ids", expected="shape (N,)",
                        found=f"shape {arr.shape}", fix=f"pass {name} as a flat array with one class id per image")
    if arr.size == 0:
        raise DataError(f"{name} is empty", expected="at least one image", found="0 images",
                        fix="evaluate on a non-empty set")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name} must hold integer class ids", expected="an integer dtype",
                        found=f"dtype {arr.dtype}", fix=f"convert {name} with .astype(int), or argmax over scores")
    return arr


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate true and predicted labels together: both 1-D integer arrays of one length."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise DataError("y_true and y_pred have different lengths", expected="one prediction per label",
                        found=f"{t.size} labels and {p.size} predictions", fix="pass arrays for the same images")
    return t, p


def _in_range(y: np.ndarray, n_classes: int, name: str) -> None:
    """Reject ids outside [0, C): they would silently index the wrong class or crash deep inside numpy."""
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise DataError(f"{name} has class ids outside [0, {n_classes})", expected=f"ids 0..{n_classes - 1}",
                        found=f"{int(bad.sum())} out of range, e.g. {int(y[bad][0])}",
                        fix="check the label encoding matches the class list")


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer", expected="an int >= 1", found=repr(value),
                          fix=f"pass {name} >= 1")
    return int(value)


def _scores(y_true: Any, scores: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels against an (N, C) score matrix: matching N, finite numbers, labels in [0, C)."""
    t = _labels(y_true, "y_true")
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[1] == 0:
        raise DataError(f"{name} must be a 2-D array with one column per class", expected="shape (N, C), C >= 1",
                        found=f"shape {s.shape}", fix=f"pass {name} as (images, classes)")
    if s.shape[0] != t.size:
        raise DataError(f"y_true and {name} have different numbers of images", expected=f"{t.size} rows",
                        found=f"{s.shape[0]} rows", fix="pass arrays for the same images")
    if not np.issubdtype(s.dtype, np.number) or not np.isfinite(s).all():
        raise DataError(f"{name} must be finite numbers", expected="no nan or inf",
                        found=f"dtype {s.dtype}" if not np.issubdtype(s.dtype, np.number) else "nan or inf values",
                        fix="check the model output for overflow")
    _in_range(t, s.shape[1], "y_true")
    return t, s.astype(np.float64)


def _probs(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Like `_scores`, and values must lie in [0, 1]: calibration bins are defined over probabilities."""
    t, p = _scores(y_true, probs, "probs")
    if p.min() < 0 or p.max() > 1:
        raise DataError("probs must be probabilities", expected="values in [0, 1]",
                        found=f"values in [{p.min():.4g}, {p.max():.4g}]", fix="apply softmax to the logits first")
    return t, p


def top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int = 1) -> float:
    """Fraction of images whose true class is among the k highest scores; k is clipped to C.

    Ties go to the lower class id (stable argsort of -scores), so results never depend on sort internals.
    """
    t, s = _scores(y_true, scores, "scores")
    k = min(_positive(k, "k"), s.shape[1])
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return float((top == t[:, None]).any(axis=1).mean())


def mean_per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in y_true (balanced accuracy): every class counts the same,
    which matters for long-tailed fine-grained datasets where plain accuracy hides the rare classes."""
    t, p = _pair(y_true, y_pred)
    classes, inverse = np.unique(t, return_inverse=True)
    hits = np.bincount(inverse, weights=(t == p), minlength=classes.size)
    return float(np.mean(hits / np.bincount(inverse, minlength=classes.size)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    t, p = _pair(y_true, y_pred)
    c = _positive(n_classes, "n_classes")
    _in_range(t, c, "y_true")
    _in_range(p, c, "y_pred")
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c).astype(np.int64)


def _per_class_from_cm(cm: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.where(support > 0, 0.0, np.nan))
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    f1 = np.where(support > 0, f1, np.nan)
    return {"support": support, "accuracy": recall, "precision": precision, "f1": f1}


def per_class_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Per-class 'support', 'accuracy' (recall), 'precision' and 'f1', each shape (C,).

    A class absent from y_true has nan accuracy and f1, and nan precision unless it was predicted
    (then precision is 0.0: every such prediction is wrong). A present class never predicted has precision 0.0.
    """
    return _per_class_from_cm(confusion_matrix(y_true, y_pred, n_classes))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in y_true.

    Classes with no true images are left out rather than counted as 0, so the score does not depend on which
    classes the evaluation split happens to miss. Equals sklearn `f1_score(average='macro', labels=present)`.
    """
    return _mean_present_f1(per_class_metrics(y_true, y_pred, n_classes))


def _mean_present_f1(stats: dict[str, np.ndarray]) -> float:
    return float(np.mean(stats["f1"][stats["support"] > 0]))


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin mean top-label 'confidence', 'accuracy' and 'count' over equal-width bins on [0, 1].

    Bins are [i/n, (i+1)/n) with confidence 1.0 in the last bin; empty bins have nan confidence and accuracy.
    """
    t, p = _probs(y_true, probs)
    n = _positive(n_bins, "n_bins")
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == t
    edges = np.linspace(0.0, 1.0, n + 1)
    bins = np.searchsorted(edges[1:-1], confidence, side="right")
    count = np.bincount(bins, minlength=n).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=n) / count
        mean_acc = np.bincount(bins, weights=correct, minlength=n) / count
    return {"confidence": mean_conf, "accuracy": mean_acc, "count": count}


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE (Guo et al. 2017): the bin-count-weighted mean |accuracy - confidence|.

    0 means the model's confidence matches how often it is right; 1 means confidently always wrong.
    """
    bins = reliability_bins(y_true, probs, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(gaps * bins["count"][filled]) / bins["count"].sum())


def most_confused_pairs(cm: np.ndarray, k: int = 10) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells as (true, predicted, count): the class pairs worth looking at first.

    Only counts > 0; ordered by descending count, then (true, predicted).
    """
    m = np.asarray(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or not np.issubdtype(m.dtype, np.integer):
        raise DataError("cm must be a square integer confusion matrix", expected="an int array of shape (C, C)",
                        found=f"dtype {m.dtype}, shape {m.shape}", fix="pass the output of confusion_matrix")
    k = _positive(k, "k")
    off = m.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off > 0)
    order = np.lexsort((cols, rows, -off[rows, cols]))[:k]
    return [(int(rows[i]), int(cols[i]), int(off[rows[i], cols[i]])) for i in order]


def _none_if_nan(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def classification_summary(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                           top_k: int = 5) -> dict[str, Any]:
    """Every metric above in one JSON-ready dict (plain ints, floats, lists; nan becomes None) for reports."""
    t, p = _probs(y_true, probs)
    c = p.shape[1]
    names = list(class_names)
    if len(names) != c:
        raise DataError("class_names does not match the number of columns in probs", expected=f"{c} names",
                        found=f"{len(names)} names", fix="pass one name per class, in column order")
    y_pred = p.argmax(axis=1)
    cm = confusion_matrix(t, y_pred, c)
    stats = _per_class_from_cm(cm)
    per_class = [{"class": names[i], "support": int(stats["support"][i]),
                  "accuracy": _none_if_nan(stats["accuracy"][i]), "precision": _none_if_nan(stats["precision"][i]),
                  "f1": _none_if_nan(stats["f1"][i])} for i in range(c)]
    return {
        "n": int(t.size),
        "top1": top_k_accuracy(t, p, 1),
        f"top{top_k}": top_k_accuracy(t, p, top_k),
        "mean_per_class_accuracy": mean_per_class_accuracy(t, y_pred),
        "macro_f1": _mean_present_f1(stats),
        "ece": expected_calibration_error(t, p),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "most_confused": [{"true": names[i], "predicted": names[j], "count": n}
                          for i, j, n in most_confused_pairs(cm)],
    }
