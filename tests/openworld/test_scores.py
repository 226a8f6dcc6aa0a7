"""OOD scores and open-world metrics against naive implementations on seeded data."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from finegrain.errors import DataError
from finegrain.openworld import scores as S
from finegrain.openworld.metrics import auroc, clustering_accuracy, fpr_at_tpr, threshold_at_tpr

rng = np.random.default_rng(0)
LOGITS = rng.normal(0, 3, (50, 7))


def test_logit_scores_match_naive_formulas():
    p = np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True)
    np.testing.assert_allclose(S.max_softmax(LOGITS), p.max(1), rtol=1e-10)
    np.testing.assert_allclose(S.max_logit(LOGITS), LOGITS.max(1))
    np.testing.assert_allclose(S.energy(LOGITS, 2.0), 2.0 * np.log(np.exp(LOGITS / 2.0).sum(1)), rtol=1e-10)
    pt = np.exp(LOGITS / 3) / np.exp(LOGITS / 3).sum(1, keepdims=True)
    np.testing.assert_allclose(S.max_softmax(LOGITS, 3.0), pt.max(1), rtol=1e-10)


def test_energy_is_stable_for_huge_logits():
    assert np.isfinite(S.energy(np.array([[1e4, 0.0], [-1e4, 1e4]]))).all()


def test_mahalanobis_matches_loop():
    X, y = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    means = S.class_means(X, y, 3)
    for c in range(3):
        np.testing.assert_allclose(means[c], X[y == c].mean(0))
    P = S.shared_precision(X, y, means, 0.2)
    Q = rng.normal(size=(6, 5))
    naive = [-min((q - m) @ P @ (q - m) for m in means) for q in Q]
    np.testing.assert_allclose(S.mahalanobis(Q, means, P), naive, rtol=1e-8)


def test_full_shrinkage_gives_scaled_identity_precision():
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 2, 30)
    m = S.class_means(X, y, 2)
    P = S.shared_precision(X, y, m, 1.0)
    np.testing.assert_allclose(P, P[0, 0] * np.eye(4), atol=1e-6)
    with pytest.raises(DataError):
        S.shared_precision(X, y, m, 1.5)


def test_knn_distance_matches_sorted_distances():
    mem, Q = rng.normal(size=(20, 6)), rng.normal(size=(5, 6))
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    d = np.linalg.norm(unit(Q)[:, None] - unit(mem)[None], axis=2)
    np.testing.assert_allclose(S.knn_distance(Q, mem, 3), -np.sort(d, axis=1)[:, 2], atol=1e-6)
    with pytest.raises(DataError):
        S.knn_distance(Q, mem, 21)


def test_principal_axes_span_the_main_variance():
    X = rng.normal(size=(200, 3)) * np.array([10.0, 1.0, 0.1])
    axes = S.principal_axes(X, 2)
    assert axes.shape == (2, 3)
    assert abs(axes[0, 0]) > 0.99 and abs(axes[1, 1]) > 0.99


def test_auroc_matches_pair_counting():
    a, b = rng.normal(1, 1, 30), rng.normal(0, 1, 20)
    a[:3] = b[:3]  # ties count half
    naive = np.mean([1.0 if x > z else 0.5 if x == z else 0.0 for x in a for z in b])
    assert auroc(a, b) == pytest.approx(naive)
    assert auroc([2, 3], [0, 1]) == 1.0 and auroc([0, 1], [2, 3]) == 0.0


def test_fpr_at_tpr_keeps_the_target_share_of_known():
    a, b = rng.normal(1, 1, 200), rng.normal(0, 1, 100)
    thr = threshold_at_tpr(a, 0.95)
    assert (a >= thr).mean() >= 0.95 and (a > thr).mean() < 0.95
    assert fpr_at_tpr(a, b, 0.95) == pytest.approx((b >= thr).mean())
    with pytest.raises(DataError):
        threshold_at_tpr(a, 0.0)


def test_clustering_accuracy_matches_best_permutation():
    y = rng.integers(0, 3, 40)
    c = np.where(rng.random(40) < 0.7, (y + 1) % 3, rng.integers(0, 4, 40))
    best = max(np.mean([perm.get(ci, -1) == yi for ci, yi in zip(c, y)])
               for p in itertools.permutations(range(4), 3) for perm in [dict(zip(p, range(3)))])
    assert clustering_accuracy(y, c) == pytest.approx(best)
    old = y < 2
    acc_old = clustering_accuracy(y, c, old)
    acc_new = clustering_accuracy(y, c, ~old)
    assert clustering_accuracy(y, c) == pytest.approx((acc_old * old.sum() + acc_new * (~old).sum()) / 40)
