"""`OODDetector`: an estimator that scores how much an image looks like the training classes, and a threshold
that turns the score into an explicit "unknown" answer.

Logit scores (msp, maxlogit, energy) read the head's logits; feature scores (mahalanobis, knn) read embeddings.
The threshold is set on held-out known-class images so that a target fraction of them (default 95 %) is kept.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, NotFittedError
from ..heads.base import l2_normalise
from . import scores as S
from .metrics import threshold_at_tpr

LOGIT_METHODS = ("msp", "maxlogit", "energy")
FEATURE_METHODS = ("mahalanobis", "knn")
METHODS = LOGIT_METHODS + FEATURE_METHODS
DEFAULT_METHOD = "msp"


class OODDetector:
    """`fit(X, y)` then `score_samples(X, logits)`: higher = more like the training classes."""

    def __init__(self, method: str = DEFAULT_METHOD, temperature: float = 1.0, shrinkage: float = 0.3,
                 n_components: int = 64, k: int = 1, target_tpr: float = 0.95) -> None:
        if method not in METHODS:
            raise ConfigError(f"unknown OOD score '{method}'", expected=f"one of {', '.join(METHODS)}",
                              found=method, fix=f"use e.g. {DEFAULT_METHOD}")
        self.method, self.temperature, self.shrinkage = method, temperature, shrinkage
        self.n_components, self.k, self.target_tpr = n_components, k, target_tpr

    def get_params(self) -> dict[str, Any]:
        return {"method": self.method, "temperature": self.temperature, "shrinkage": self.shrinkage,
                "n_components": self.n_components, "k": self.k, "target_tpr": self.target_tpr}

    # --- fitting ----------------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> "OODDetector":
        """Learn the feature statistics (feature methods); y are integer class ids."""
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)
        self.n_features_in_ = X.shape[1]
        self.centre_ = X.mean(axis=0)
        if self.method == "mahalanobis":
            Z = l2_normalise(X - self.centre_)
            self.components_ = S.principal_axes(Z, int(min(self.n_components, max(len(Z) - 1, 1))))
            P = Z @ self.components_.T
            self.means_ = S.class_means(P, y, int(y.max()) + 1)
            self.precision_ = S.shared_precision(P, y, self.means_, self.shrinkage)
        elif self.method == "knn":
            if not 1 <= self.k <= len(X):
                raise ConfigError("kNN OOD score needs k between 1 and the number of training images",
                                  expected=f"1 ≤ k ≤ {len(X)}", found=str(self.k), fix="choose a smaller k")
            self.memory_ = l2_normalise(X - self.centre_).astype(np.float32)
        return self

    def fit_threshold(self, X_val: np.ndarray, logits_val: np.ndarray | None = None) -> "OODDetector":
        """Threshold that keeps `target_tpr` of these held-out known-class images."""
        self.threshold_ = threshold_at_tpr(self.score_samples(X_val, logits_val), self.target_tpr)
        return self

    # --- scoring ----------------------------------------------------------------------------------------
    def score_samples(self, X: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
        if not hasattr(self, "centre_"):
            raise NotFittedError("OOD detector is not fitted", expected="a fitted detector", found="an unfitted one",
                                 fix="call fit(X, y) on training embeddings first")
        if self.method in LOGIT_METHODS:
            if logits is None:
                raise DataError(f"OOD score '{self.method}' needs the head's logits", expected="logits (N, C)",
                                found="none", fix="pass logits=head.decision_function(X)")
            z = np.asarray(logits, dtype=np.float64) / self.temperature
            return {"msp": S.max_softmax, "maxlogit": S.max_logit, "energy": S.energy}[self.method](z)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise DataError("OOD detector got embeddings of another width", expected=f"(N, {self.n_features_in_})",
                            found=str(X.shape), fix="use embeddings from the backbone the model was trained with")
        Z = l2_normalise(X - self.centre_)
        if self.method == "mahalanobis":
            return S.mahalanobis(Z @ self.components_.T, self.means_, self.precision_)
        return S.knn_distance(Z, self.memory_, self.k)

    def predict_unknown(self, X: np.ndarray, logits: np.ndarray | None = None,
                        threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(unknown flags, scores): unknown when the score is below `threshold` (default: the fitted one)."""
        if threshold is None:
            if not hasattr(self, "threshold_"):
                raise NotFittedError("this model has no automatic unknown threshold",
                                     expected="a threshold set on validation data at fit time", found="none",
                                     fix="refit the model with calibration on, or pass a number to --unknown")
            threshold = self.threshold_
        scores = self.score_samples(X, logits)
        return scores < threshold, scores

    # --- persistence ------------------------------------------------------------------------------------
    _ARRAYS = ("centre_", "components_", "means_", "precision_", "memory_")

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        values = {"params": self.get_params(), "n_features_in": int(self.n_features_in_)}
        if hasattr(self, "threshold_"):
            values["threshold"] = float(self.threshold_)
        arrays = {name.rstrip("_"): np.asarray(getattr(self, name), dtype=np.float32)
                  for name in self._ARRAYS if hasattr(self, name)}
        return values, arrays

    @classmethod
    def from_state(cls, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> "OODDetector":
        det = cls(**values["params"])
        det.n_features_in_ = int(values["n_features_in"])
        if "threshold" in values:
            det.threshold_ = float(values["threshold"])
        for name in cls._ARRAYS:
            if name.rstrip("_") in arrays:
                setattr(det, name, np.asarray(arrays[name.rstrip("_")], dtype=np.float64))
        return det
