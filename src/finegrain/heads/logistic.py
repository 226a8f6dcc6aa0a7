"""Multinomial logistic regression on standardised embeddings ("CNN features off-the-shelf" + a linear model).

Embeddings are power-normalised first (signed square root, unit length; `power=False` turns it off), then
standardised. The regularisation strength is chosen on a validation split drawn from the training data,
never on test. With `blocks` (the widths of a combined backbone's members, set by `fit`), one model is
learnt per member and their logits are averaged: on cub100 lite0+lite1+lite2 that beats one model on the
joined embedding, and gives a better "unknown" score (benchmarks/cub100.py, benchmarks/openworld.py).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from .base import Head, power_normalise, stratified_holdout

DEFAULT_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


class LogisticHead(Head):
    name = "logistic"

    def __init__(self, C: float | None = None, Cs: Sequence[float] = DEFAULT_CS, val_fraction: float = 0.2,
                 max_iter: int = 300, seed: int = 0, power: bool = True, blocks: Sequence[int] | None = None) -> None:
        self.C, self.Cs, self.val_fraction, self.max_iter, self.seed = C, tuple(Cs), val_fraction, max_iter, seed
        self.power, self.blocks = power, list(blocks) if blocks else None

    def get_params(self) -> dict[str, Any]:
        return {"C": self.C, "Cs": list(self.Cs), "val_fraction": self.val_fraction, "max_iter": self.max_iter,
                "seed": self.seed, "power": self.power, "blocks": self.blocks}

    def _member_params(self) -> dict[str, Any]:
        return {**self.get_params(), "blocks": None}

    def _block_slices(self, width: int) -> list[slice]:
        if sum(self.blocks) != width:
            raise DataError("the logistic head's blocks do not add up to the embedding width",
                            expected=f"blocks summing to {width}", found=f"{self.blocks} (sum {sum(self.blocks)})",
                            fix="leave blocks unset: `fit` sets it from a combined backbone")
        ends = np.cumsum(self.blocks)
        return [slice(int(e - b), int(e)) for b, e in zip(self.blocks, ends)]

    def prepare(self, X: np.ndarray) -> np.ndarray:
        """What the linear model reads: power-normalised embeddings (or the embeddings, with power=False)."""
        return power_normalise(X).astype(np.float32) if self.power else np.asarray(X, dtype=np.float32)

    def _model(self, C: float):
        from sklearn.linear_model import LogisticRegression
        return LogisticRegression(C=C, max_iter=self.max_iter, tol=1e-4)

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) / self.scale_

    def fit(self, X, y, X_val=None, y_val=None) -> "LogisticHead":
        X, yi = self._check_fit_input(X, y)
        if self.blocks:
            has_val = X_val is not None and len(X_val)
            self.members_ = [LogisticHead(**self._member_params()).fit(
                X[:, part], y, np.asarray(X_val)[:, part] if has_val else None, y_val if has_val else None)
                for part in self._block_slices(X.shape[1])]
            return self
        X = self.prepare(X)
        if X_val is not None and len(X_val):
            Xv, yv = self.prepare(X_val), self.encode_labels(np.asarray(y_val))
            X_tr, y_tr = X, yi
            X_fit, y_fit = np.concatenate([X, Xv]), np.concatenate([yi, yv])
        else:
            tr, va = stratified_holdout(yi, self.val_fraction, self.seed)
            X_tr, y_tr, Xv, yv = X[tr], yi[tr], X[va], yi[va]
            X_fit, y_fit = X, yi
        self.C_ = self.C if self.C is not None else self._select_C(X_tr, y_tr, Xv, yv)
        self.mean_ = X_fit.mean(axis=0)
        self.scale_ = X_fit.std(axis=0) + 1e-6
        model = self._model(self.C_).fit(self._standardise(X_fit), y_fit)
        self.coef_, self.intercept_ = self._full_rank(model, len(self.classes_))
        return self

    def _select_C(self, X, y, X_val, y_val) -> float:
        """Highest validation accuracy; ties broken by lower validation log-loss."""
        if len(X_val) == 0 or len(np.unique(y)) < 2:
            return 1.0
        mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-6
        Xs, Xv = (X - mean) / scale, (X_val - mean) / scale
        scores = []
        for C in self.Cs:
            model = self._model(C).fit(Xs, y)
            coef, intercept = self._full_rank(model, len(self.classes_))
            logits = Xv @ coef.T + intercept
            acc = float((logits.argmax(1) == y_val).mean())
            z = logits - logits.max(1, keepdims=True)
            nll = float(-(z[np.arange(len(y_val)), y_val] - np.log(np.exp(z).sum(1))).mean())
            scores.append((acc, -nll, C))
        self.validation_ = [{"C": C, "val_accuracy": a, "val_nll": -n} for a, n, C in scores]
        return max(scores)[2]

    @staticmethod
    def _full_rank(model, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """sklearn omits classes absent from a fit; give them weight 0 and a very low bias."""
        coef = np.zeros((n_classes, model.coef_.shape[1]), dtype=np.float32)
        intercept = np.full(n_classes, -1e4, dtype=np.float32)
        present = model.classes_.astype(int)
        if len(present) == 2 and model.coef_.shape[0] == 1:
            coef[present[1]], intercept[present[1]] = model.coef_[0], model.intercept_[0]
            intercept[present[0]] = 0.0
        else:
            coef[present], intercept[present] = model.coef_, model.intercept_
        return coef, intercept

    def decision_function(self, X):
        X = self._check_predict_input(X)
        if self.blocks:  # the members' mean logits: a product of experts, so logit-based "unknown" scores still work
            return np.mean([m.decision_function(X[:, part])
                            for m, part in zip(self.members_, self._block_slices(X.shape[1]))], axis=0)
        return self._standardise(self.prepare(X)) @ self.coef_.T + self.intercept_

    def _state(self):
        if self.blocks:
            states = [m._state() for m in self.members_]
            return ({"members": [v for v, _ in states]},
                    {f"member{i}_{k}": a for i, (_, arrays) in enumerate(states) for k, a in arrays.items()})
        return ({"C_": self.C_, "validation_": getattr(self, "validation_", [])},
                {"coef": self.coef_, "intercept": self.intercept_, "mean": self.mean_, "scale": self.scale_})

    def _load_state(self, values, arrays):
        if self.blocks:
            self.members_ = []
            for i, (member_values, part) in enumerate(zip(values["members"], self._block_slices(self.n_features_in_))):
                member = LogisticHead(**self._member_params())
                member.classes_, member.n_features_in_ = self.classes_, part.stop - part.start
                prefix = f"member{i}_"
                member._load_state(member_values, {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)})
                self.members_.append(member)
            return
        self.C_ = values["C_"]
        self.validation_ = values.get("validation_", [])
        self.coef_, self.intercept_ = arrays["coef"], arrays["intercept"]
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]
