"""The head contract: scikit-learn-style estimators on embeddings, saved as JSON params + named arrays."""
from __future__ import annotations

import abc
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, NotFittedError


class Head(abc.ABC):
    """`fit(X, y) -> self`; learned state ends in `_`; `predict_proba` rows sum to 1 over `classes_`."""

    name: str = "head"

    @abc.abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> "Head":
        """Learn from embeddings X (N, D) and labels y (N,); X_val/y_val, when given, choose hyper-parameters."""

    @abc.abstractmethod
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(N, C) logits whose softmax is `predict_proba`."""

    @abc.abstractmethod
    def get_params(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-ready)."""

    @abc.abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Learned state as (JSON-ready values, arrays); `classes_` and `n_features_in_` are added by the base."""

    @abc.abstractmethod
    def _load_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Inverse of `_state`."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X)  # checks fitted state and width first
        return self.classes_[np.argmax(scores, axis=1)]

    # --- shared checks -------------------------------------------------------------------------------
    def _check_fit_input(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise DataError(f"{self.name} head got embeddings and labels that do not match",
                            expected="X of shape (N, D) and N labels", found=f"X {X.shape}, {len(y)} labels",
                            fix="pass one label per embedding")
        if not np.isfinite(X).all():
            raise DataError(f"{self.name} head got non-finite embeddings", expected="finite values",
                            found=f"{int((~np.isfinite(X)).sum())} NaN/inf values", fix="re-embed the images")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise DataError(f"{self.name} head needs at least 2 classes to learn from",
                            expected="labelled images of 2 or more classes",
                            found=f"{len(self.classes_)} class ({', '.join(map(str, self.classes_))})",
                            fix="add images of more classes")
        self.n_features_in_ = X.shape[1]
        return X, np.searchsorted(self.classes_, y)

    def _check_predict_input(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {self.name} head is not fitted yet", expected="a fitted head",
                                 found="an unfitted one", fix="call fit(X, y) first, or load a saved model")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise DataError(f"{self.name} head was fitted on {self.n_features_in_}-d embeddings",
                            expected=f"X of shape (N, {self.n_features_in_})", found=f"X of shape {X.shape}",
                            fix="embed the images with the same backbone the model was trained on")
        return X

    def encode_labels(self, y: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != np.asarray(y)
        if unknown.any():
            raise DataError(f"labels not known to this {self.name} head", expected=f"one of {len(self.classes_)} classes",
                            found=", ".join(sorted(set(map(str, np.asarray(y)[unknown])))[:5]),
                            fix="evaluate on data whose classes the model was trained on")
        return idx

    # --- persistence ---------------------------------------------------------------------------------
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        values, arrays = self._state()
        return ({"head": self.name, "params": self.get_params(), "classes": [str(c) for c in self.classes_],
                 "n_features_in": int(self.n_features_in_), **values}, arrays)

    @classmethod
    def from_state(cls, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Head":
        head = cls(**values["params"])
        head.classes_ = np.asarray(values["classes"], dtype=object)
        head.n_features_in_ = int(values["n_features_in"])
        head._load_state(values, arrays)
        return head


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def l2_normalise(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


POWER_EPS = 1e-6  # |x| floor in the square root's derivative: it is infinite at 0


def _signed_root(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return np.sign(X) * np.sqrt(np.abs(X))


def power_normalise(X: np.ndarray) -> np.ndarray:
    """Unit rows of the signed square root: damps the few dominant channels of pooled CNN features
    (cub100 logistic top-1 0.891 → 0.900, `benchmarks/cub100.py`)."""
    return l2_normalise(_signed_root(X))


def power_normalise_backward(X: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Gradient with respect to X of a function whose gradient with respect to power_normalise(X) is `grad`.

    p = s/‖s‖ with s = sign(x)·√|x|: ∂/∂s = (g − (g·p)p)/‖s‖, then ∂s/∂x = 1/(2√|x|)."""
    s = _signed_root(X)
    norm = np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
    p = s / norm
    g = np.asarray(grad, dtype=np.float64)
    g_s = (g - p * (g * p).sum(axis=1, keepdims=True)) / norm
    return g_s * 0.5 / np.sqrt(np.maximum(np.abs(np.asarray(X, dtype=np.float64)), POWER_EPS))


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation index split that keeps at least one example of every class on the training side."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError("validation fraction out of range", expected="a number between 0 and 1",
                          found=str(fraction), fix="use e.g. --val-split 0.2")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        n_val = min(n_val, len(idx) - 1)
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return np.sort(np.asarray(train, dtype=int)), np.sort(np.asarray(val, dtype=int))
