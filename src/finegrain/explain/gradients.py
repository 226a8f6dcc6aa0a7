"""Gradient of a head's class score with respect to the embedding: the head's half of Grad-CAM.

Heads are numpy estimators, so the gradient is taken analytically where the head's formula is known
(logistic, prototype) and by central differences on `decision_function` otherwise — which makes Grad-CAM
work for every head, including ones added later. The backbone's half runs in torch (see `gradcam.py`).

The explained score of class c is its *centred* logit z_c − mean_k z_k. Logits are defined only up to a
constant shared by all classes (softmax ignores it), and heads use that freedom differently — a two-class
logistic head puts all weight on one class, leaving the other's raw logit flat. Centring removes the
arbitrary part, so the map depends only on what the probabilities depend on. A contrast z_A − z_B is already
free of it.

A kNN vote is piecewise constant (flat wherever the k neighbours agree), so for the kNN head the gradient is
that of its smooth limit: log Σ_{j ∈ c} exp(cos(x, m_j) / T) over all training embeddings m_j of class c,
with the head's own temperature T.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..heads import Head, KNNHead, LogisticHead, PrototypeHead
from ..heads.base import power_normalise_backward

NUMERIC_STEP = 1e-3


def score_direction(n_classes: int, target: np.ndarray, other: np.ndarray | None) -> np.ndarray:
    """(N, C) coefficients c such that the explained score is c · logits: the centred logit of `target`
    (e_target − 1/C), or e_target − e_other."""
    coef = np.zeros((len(target), n_classes), dtype=np.float64)
    coef[np.arange(len(target)), target] = 1.0
    if other is not None:
        coef[np.arange(len(target)), other] -= 1.0
    else:
        coef -= 1.0 / n_classes
    return coef


def numeric_score_gradient(head: Head, X: np.ndarray, coef: np.ndarray, step: float = NUMERIC_STEP) -> np.ndarray:
    """∂(coef · logits)/∂x per row by central differences: 2·D calls' worth of rows per image, one batch each."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    eye = np.eye(d) * step
    grads = np.empty((n, d), dtype=np.float64)
    for i in range(n):
        batch = np.concatenate([X[i] + eye, X[i] - eye]).astype(np.float32)
        scores = np.asarray(head.decision_function(batch), dtype=np.float64) @ coef[i]
        grads[i] = (scores[:d] - scores[d:]) / (2 * step)
    return grads


def _logistic_gradient(head: LogisticHead, X: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """logits = ((p(x) − mean) / scale) · Wᵀ + b, so ∂(c · logits)/∂p = (c · W) / scale, then back through the
    power normalisation p when the head uses it."""
    if head.blocks:  # logits = mean of the members' logits, each reading its own block of columns
        parts = head._block_slices(X.shape[1])
        return np.hstack([_logistic_gradient(m, X[:, part], coef) for m, part in zip(head.members_, parts)]) / len(parts)
    grad = (coef @ head.coef_.astype(np.float64)) / head.scale_.astype(np.float64)
    return power_normalise_backward(X, grad) if head.power else grad


def _prototype_gradient(head: PrototypeHead, X: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """logits = T · z · Pᵀ with z = (x − c)/‖x − c‖, so the gradient is T (I − z zᵀ)(c · P) / ‖x − c‖."""
    centred = np.asarray(X, dtype=np.float64) - head.centre_.astype(np.float64)
    norm = np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    z = centred / norm
    v = coef @ head.prototypes_.astype(np.float64)
    return head.temperature_ * (v - z * (z * v).sum(axis=1, keepdims=True)) / norm


def _knn_gradient(head: KNNHead, X: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Gradient of coef · s, s_c = log Σ_{j∈c} exp(cos(x, m_j)/T): the kNN vote with k = all, smoothed."""
    X = np.asarray(X, dtype=np.float64)
    norm = np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    xhat = X / norm
    memory = head.memory_.astype(np.float64)
    logits = xhat @ memory.T / head.temperature
    grads = np.empty_like(X)
    for i in range(len(X)):
        w = np.zeros(len(memory))
        for c in np.flatnonzero(coef[i]):
            members = head.memory_labels_ == c
            if members.any():
                z = np.exp(logits[i, members] - logits[i, members].max())
                w[members] += coef[i, c] * z / z.sum()
        v = w @ memory / head.temperature
        grads[i] = (v - xhat[i] * (xhat[i] @ v)) / norm[i]
    return grads


_ANALYTIC: dict[type, Callable[[Head, np.ndarray, np.ndarray], np.ndarray]] = {
    LogisticHead: _logistic_gradient,
    PrototypeHead: _prototype_gradient,
    KNNHead: _knn_gradient,
}


def score_gradient(head: Head, X: np.ndarray, target: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """(N, D) gradient of logit[target] (or logit[target] − logit[other]) with respect to each embedding row."""
    coef = score_direction(len(head.classes_), np.asarray(target), None if other is None else np.asarray(other))
    exact = _ANALYTIC.get(type(head))
    grads = exact(head, X, coef) if exact else numeric_score_gradient(head, X, coef)
    return grads.astype(np.float32)


__all__ = ["score_gradient", "numeric_score_gradient", "score_direction"]
