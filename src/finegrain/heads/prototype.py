"""Nearest class mean (prototype) head: centred, L2-normalised embeddings; cosine to each class mean.

A strong baseline for few images per class; the softmax temperature is fitted by likelihood so its
probabilities mean something.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Head, l2_normalise


def fit_temperature(logits: np.ndarray, y: np.ndarray, lo: float = 1e-2, hi: float = 1e3) -> float:
    """The scale s minimising the mean negative log-likelihood of softmax(s * logits)."""
    from scipy.optimize import minimize_scalar

    def nll(log_s: float) -> float:
        z = np.exp(log_s) * logits
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())

    res = minimize_scalar(nll, bounds=(np.log(lo), np.log(hi)), method="bounded")
    return float(np.exp(res.x))


class PrototypeHead(Head):
    name = "prototype"

    def __init__(self, centre: bool = True, shrinkage: float = 0.0) -> None:
        self.centre, self.shrinkage = centre, shrinkage

    def get_params(self) -> dict[str, Any]:
        return {"centre": self.centre, "shrinkage": self.shrinkage}

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return l2_normalise(X - self.centre_)

    def fit(self, X, y, X_val=None, y_val=None) -> "PrototypeHead":
        X, yi = self._check_fit_input(X, y)
        if X_val is not None and len(X_val):
            X_val, yv = np.asarray(X_val, dtype=np.float32), self.encode_labels(np.asarray(y_val))
            X, yi = np.concatenate([X, X_val]), np.concatenate([yi, yv])
        self.centre_ = X.mean(axis=0) if self.centre else np.zeros(X.shape[1], dtype=np.float32)
        Z = self._transform(X)
        self.class_counts_ = np.bincount(yi, minlength=len(self.classes_)).astype(np.float32)
        self.class_sums_ = np.stack([Z[yi == c].sum(axis=0) for c in range(len(self.classes_))]).astype(np.float32)
        means = self.class_sums_ / self.class_counts_[:, None]  # support statistics kept for transductive EM
        means = (1 - self.shrinkage) * means + self.shrinkage * Z.mean(axis=0)
        self.prototypes_ = l2_normalise(means).astype(np.float32)
        self.temperature_ = fit_temperature(Z @ self.prototypes_.T, yi)
        return self

    def decision_function(self, X):
        X = self._check_predict_input(X)
        return self.temperature_ * (self._transform(X) @ self.prototypes_.T)

    def _state(self):
        return {"temperature_": self.temperature_}, {"prototypes": self.prototypes_, "centre": self.centre_,
                                                     "class_sums": self.class_sums_, "class_counts": self.class_counts_}

    def _load_state(self, values, arrays):
        self.temperature_ = float(values["temperature_"])
        self.prototypes_, self.centre_ = arrays["prototypes"], arrays["centre"]
        self.class_sums_, self.class_counts_ = arrays.get("class_sums"), arrays.get("class_counts")
