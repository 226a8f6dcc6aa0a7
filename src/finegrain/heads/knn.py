"""k-nearest-neighbour head: cosine similarity to stored training embeddings, similarity-weighted vote.

Keeps every training embedding in the artifact, so it also answers "which training images is this like?".
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Head, l2_normalise

_SMOOTHING = 1e-3  # probability mass spread over all classes so a vote never gives exactly 0


class KNNHead(Head):
    name = "knn"

    def __init__(self, k: int = 10, temperature: float = 0.05) -> None:
        self.k, self.temperature = k, temperature

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature}

    def fit(self, X, y, X_val=None, y_val=None) -> "KNNHead":
        X, yi = self._check_fit_input(X, y)
        if X_val is not None and len(X_val):
            X_val, yv = np.asarray(X_val, dtype=np.float32), self.encode_labels(np.asarray(y_val))
            X, yi = np.concatenate([X, X_val]), np.concatenate([yi, yv])
        self.memory_ = l2_normalise(X).astype(np.float32)
        self.memory_labels_ = yi.astype(np.int64)
        return self

    def kneighbors(self, X: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, indices) of the k most similar training embeddings, most similar first."""
        X = self._check_predict_input(X)
        k = min(k or self.k, len(self.memory_))
        sims = l2_normalise(X) @ self.memory_.T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(sims, idx, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(idx, order, axis=1)

    def predict_proba(self, X):
        sims, idx = self.kneighbors(X)
        weights = np.exp((sims - sims[:, :1]) / self.temperature)
        votes = np.zeros((len(sims), len(self.classes_)), dtype=np.float64)
        np.add.at(votes, (np.arange(len(sims))[:, None], self.memory_labels_[idx]), weights)
        votes /= votes.sum(axis=1, keepdims=True)
        return ((1 - _SMOOTHING) * votes + _SMOOTHING / len(self.classes_)).astype(np.float32)

    def decision_function(self, X):
        return np.log(self.predict_proba(X))

    def _state(self):
        return {}, {"memory": self.memory_, "memory_labels": self.memory_labels_}

    def _load_state(self, values, arrays):
        self.memory_, self.memory_labels_ = arrays["memory"], arrays["memory_labels"]
