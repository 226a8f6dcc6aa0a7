"""The head's half of Grad-CAM: analytic gradients agree with central differences; any head works numerically."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.explain.gradients import numeric_score_gradient, score_direction, score_gradient
from finegrain.heads import KNNHead, LogisticHead, PrototypeHead
from finegrain.heads.base import l2_normalise


def _data(seed=0, n=60, d=8, c=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d))
    y = np.repeat(np.arange(c), n // c)
    # positive like pooled ReLU features, and away from 0 where the square root has no derivative
    X = l2_normalise(np.abs(centres[y] + 0.8 * rng.normal(size=(n, d))) + 0.05).astype(np.float32)
    return X, np.array([f"class_{i}" for i in y])


@pytest.mark.parametrize("head", [LogisticHead(C=1.0), LogisticHead(C=1.0, power=False), PrototypeHead()],
                         ids=["logistic", "logistic-no-power", "prototype"])
@pytest.mark.parametrize("contrast", [False, True])
def test_analytic_gradient_matches_central_differences(head, contrast):
    X, y = _data()
    head.fit(X, y)
    target, other = np.array([0, 1, 2, 0]), (np.array([1, 2, 0, 2]) if contrast else None)
    exact = score_gradient(head, X[:4], target, other)
    numeric = numeric_score_gradient(head, X[:4], score_direction(3, target, other))
    assert np.allclose(exact, numeric, rtol=2e-2, atol=2e-2 * np.abs(numeric).max())


def test_logistic_gradient_is_the_standardised_weight_difference():
    """For logit_a − logit_b of a linear head on raw embeddings the gradient is (w_a − w_b) / scale, whatever the input."""
    X, y = _data(1)
    head = LogisticHead(C=1.0, power=False).fit(X, y)
    g = score_gradient(head, X[:2], np.array([0, 0]), np.array([1, 1]))
    expected = (head.coef_[0] - head.coef_[1]) / head.scale_
    assert np.allclose(g, expected[None, :], rtol=1e-5)


def test_knn_gradient_is_that_of_the_smoothed_vote():
    X, y = _data(2)
    head = KNNHead(k=5, temperature=0.1).fit(X, y)
    labels = head.memory_labels_

    def smooth_scores(Z):
        sims = l2_normalise(Z) @ head.memory_.T / head.temperature
        return np.stack([np.log(np.exp(sims[:, labels == c]).sum(axis=1)) for c in range(3)], axis=1)

    x, step = X[:1].astype(np.float64), 1e-5
    coef = score_direction(3, np.array([1]), None)[0]
    numeric = np.array([(smooth_scores(x + step * e) - smooth_scores(x - step * e))[0] @ coef / (2 * step)
                        for e in np.eye(X.shape[1])])
    assert np.allclose(score_gradient(head, X[:1], np.array([1]))[0], numeric, rtol=1e-3, atol=1e-4)


class QuadraticHead(LogisticHead):
    """A head finegrain has no formula for: logits = (x · W)², so only the numeric path can explain it."""

    name = "quadratic"

    def decision_function(self, X):
        return (np.asarray(X, dtype=np.float64) @ self.coef_.T.astype(np.float64)) ** 2


def test_unknown_heads_fall_back_to_central_differences():
    X, y = _data(3)
    head = QuadraticHead(C=1.0).fit(X, y)
    g = score_gradient(head, X[:3], np.array([0, 1, 2]), np.array([1, 2, 0]))
    W = head.coef_.astype(np.float64)
    for i, (a, b) in enumerate([(0, 1), (1, 2), (2, 0)]):
        expected = 2 * (X[i] @ W[a]) * W[a] - 2 * (X[i] @ W[b]) * W[b]
        assert np.allclose(g[i], expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_centred_score_ignores_a_constant_shift_of_all_logits():
    """A two-class logistic head leaves one class's raw logit flat; its centred score still has a gradient."""
    X, y = _data(4, c=2)
    head = LogisticHead(C=1.0).fit(X, y)
    g0, g1 = score_gradient(head, X[:1], np.array([0])), score_gradient(head, X[:1], np.array([1]))
    assert np.abs(g0).max() > 0 and np.allclose(g0, -g1)
