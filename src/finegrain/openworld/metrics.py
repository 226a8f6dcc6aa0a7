"""Open-world metrics as pure functions: OOD detection quality and clustering accuracy for category discovery."""
from __future__ import annotations

import numpy as np

from ..errors import DataError


def _scores(a: np.ndarray, name: str) -> np.ndarray:
    s = np.asarray(a, dtype=np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise DataError(f"{name} must be a non-empty array of finite scores", expected="finite numbers",
                        found=f"{s.size} values" if s.size == 0 else "nan or inf", fix="check the detector output")
    return s


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Probability that a random known-class image scores higher than a random unknown one (ties count half)."""
    a, b = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([a, b]))
    return float((ranks[:a.size].sum() - a.size * (a.size + 1) / 2) / (a.size * b.size))


def threshold_at_tpr(id_scores: np.ndarray, tpr: float = 0.95) -> float:
    """The score above which a fraction `tpr` of known-class images lie (known = score ≥ threshold)."""
    if not 0.0 < tpr <= 1.0:
        raise DataError("target true-positive rate out of range", expected="a number in (0, 1]", found=str(tpr),
                        fix="use e.g. 0.95")
    a = np.sort(_scores(id_scores, "id_scores"))
    return float(a[int(np.floor((1.0 - tpr) * a.size))]) if tpr < 1.0 else float(a[0])


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of unknown images still accepted as known when the threshold keeps `tpr` of the known ones."""
    thr = threshold_at_tpr(id_scores, tpr)
    return float((_scores(ood_scores, "ood_scores") >= thr).mean())


def clustering_accuracy(y_true: np.ndarray, clusters: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Accuracy under the best one-to-one matching of clusters to classes (Hungarian), as in GCD papers.

    The matching is computed on all images; `mask` then selects the images scored (e.g. old or new classes),
    so All/Old/New share one matching.
    """
    from scipy.optimize import linear_sum_assignment

    t, c = np.asarray(y_true), np.asarray(clusters)
    if t.shape != c.shape or t.ndim != 1 or t.size == 0:
        raise DataError("y_true and clusters must be 1-D arrays of one length", expected="shape (N,) each",
                        found=f"{t.shape} and {c.shape}", fix="pass one class and one cluster per image")
    classes, ti = np.unique(t, return_inverse=True)
    ids, ci = np.unique(c, return_inverse=True)
    counts = np.zeros((ids.size, classes.size), dtype=np.int64)
    np.add.at(counts, (ci, ti), 1)
    rows, cols = linear_sum_assignment(-counts)
    mapped = np.full(ids.size, -1)
    mapped[rows] = cols
    hit = mapped[ci] == ti
    m = np.ones(t.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return float(hit[m].mean()) if m.any() else float("nan")
