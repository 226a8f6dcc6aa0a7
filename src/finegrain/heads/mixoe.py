"""MixOE at head level (Zhang et al., "Mixture Outlier Exposure"): a linear softmax head trained so that its
confidence decays linearly as an input moves from a known class towards an outlier.

Images cannot be mixed once they are embeddings, so known-class and outlier EMBEDDINGS are mixed:
x̃ = λ·x + (1−λ)·o with target λ·onehot(y) + (1−λ)·uniform. Outliers come from a user folder (embedded like the
training images) or, where none is given, are synthesised from the training data as blends of two different
classes — points between known species, where a novel species of the same group is likely to land.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError
from .base import Head


def synthesise_outliers(X: np.ndarray, y: np.ndarray, n: int, seed: int = 0,
                        low: float = 0.3, high: float = 0.7) -> np.ndarray:
    """`n` blends a·x_i + (1−a)·x_j of embeddings from two different classes, a ~ U(low, high)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(X), n)
    j = rng.integers(0, len(X), n)
    clash = y[i] == y[j]
    while clash.any():
        j[clash] = rng.integers(0, len(X), int(clash.sum()))
        clash = y[i] == y[j]
    a = rng.uniform(low, high, (n, 1))
    return (a * X[i] + (1 - a) * X[j]).astype(np.float32)


class MixOEHead(Head):
    """Linear head on standardised embeddings; loss = CE(known) + beta · soft-CE(known ⊕ outlier mixtures)."""

    name = "mixoe"

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, epochs: int = 60, lr: float = 1e-3,
                 weight_decay: float = 1e-2, batch_size: int = 128, n_synthetic: int | None = None,
                 seed: int = 0) -> None:
        self.alpha, self.beta, self.epochs, self.lr = alpha, beta, epochs, lr
        self.weight_decay, self.batch_size, self.n_synthetic, self.seed = weight_decay, batch_size, n_synthetic, seed

    def get_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "epochs": self.epochs, "lr": self.lr,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size, "n_synthetic": self.n_synthetic,
                "seed": self.seed}

    def fit(self, X, y, X_val=None, y_val=None, outliers: np.ndarray | None = None) -> "MixOEHead":
        """Fit on known-class embeddings (plus X_val/y_val if given); `outliers` (M, D) are optional."""
        import torch

        X, yi = self._check_fit_input(X, y)
        if X_val is not None and len(X_val):
            X = np.concatenate([X, np.asarray(X_val, dtype=np.float32)])
            yi = np.concatenate([yi, self.encode_labels(np.asarray(y_val))])
        if outliers is None or len(outliers) == 0:
            outliers = synthesise_outliers(X, yi, self.n_synthetic or len(X), self.seed)
        outliers = np.asarray(outliers, dtype=np.float32)
        if outliers.ndim != 2 or outliers.shape[1] != X.shape[1]:
            raise DataError("MixOE outlier embeddings have another width than the training ones",
                            expected=f"(M, {X.shape[1]})", found=str(outliers.shape),
                            fix="embed the outlier folder with the same backbone")
        self.mean_, self.scale_ = X.mean(axis=0), X.std(axis=0) + 1e-6
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one small linear layer: extra threads only add contention
        try:
            self._train(X, yi, outliers)
        finally:
            torch.set_num_threads(threads)
        return self

    def _train(self, X: np.ndarray, yi: np.ndarray, outliers: np.ndarray) -> None:
        import torch

        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        Xt = torch.from_numpy(self._standardise(X))
        Ot = torch.from_numpy(self._standardise(outliers))
        yt = torch.from_numpy(yi.astype(np.int64))
        n_classes = len(self.classes_)
        layer = torch.nn.Linear(X.shape[1], n_classes)
        opt = torch.optim.AdamW(layer.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        beta_dist = torch.distributions.Beta(self.alpha, self.alpha)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(Xt), generator=gen).split(self.batch_size):
                xb, yb = Xt[idx], yt[idx]
                ob = Ot[torch.randint(0, len(Ot), (len(idx),), generator=gen)]
                lam = beta_dist.sample((len(idx), 1))
                target = lam * torch.nn.functional.one_hot(yb, n_classes) + (1 - lam) / n_classes
                mixed_logp = torch.log_softmax(layer(lam * xb + (1 - lam) * ob), dim=1)
                loss = torch.nn.functional.cross_entropy(layer(xb), yb) - self.beta * (target * mixed_logp).sum(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.coef_ = layer.weight.detach().numpy().astype(np.float32)
        self.intercept_ = layer.bias.detach().numpy().astype(np.float32)

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    def decision_function(self, X):
        X = self._check_predict_input(X)
        return self._standardise(X) @ self.coef_.T + self.intercept_

    def _state(self):
        return {}, {"coef": self.coef_, "intercept": self.intercept_, "mean": self.mean_, "scale": self.scale_}

    def _load_state(self, values, arrays):
        self.coef_, self.intercept_ = arrays["coef"], arrays["intercept"]
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]
