"""Generalized Category Discovery with a semi-supervised Gaussian mixture and split/merge (after Zhao et al.).

Unlabelled images mix known classes and new ones, and nobody says how many new ones. Labelled images are fixed
to their class's component; EM fits isotropic Gaussians in a PCA space of the embeddings; split and merge
moves change the number of components. What counts as "one class" is learnt from the labelled data itself: a
split is accepted when the two halves are as well separated as two neighbouring known classes are, and a
merge when two components are as close as random halves of one known class.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError
from ..heads.base import l2_normalise
from .scores import principal_axes

MIN_CLUSTER = 4  # fewer images than this never form a component of their own


def sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(len(A), len(B)) squared Euclidean distances without the (N, K, D) intermediate."""
    return np.maximum((A ** 2).sum(1)[:, None] - 2.0 * A @ B.T + (B ** 2).sum(1)[None, :], 0.0)


def separation(A: np.ndarray, B: np.ndarray) -> float:
    """Fisher ratio ‖μA − μB‖² / (sA² + sB²), s² = mean squared distance to the group's own mean."""
    ma, mb = A.mean(axis=0), B.mean(axis=0)
    spread = ((A - ma) ** 2).sum(axis=1).mean() + ((B - mb) ** 2).sum(axis=1).mean()
    return float(((ma - mb) ** 2).sum() / max(spread, 1e-12))


def two_means(Z: np.ndarray, fixed: np.ndarray | None = None, n_iter: int = 20, seed: int = 0) -> np.ndarray:
    """Split rows into two groups (bool: in the second group) by 2-means; `fixed` rows stay in the first."""
    rng = np.random.default_rng(seed)
    fixed = np.zeros(len(Z), dtype=bool) if fixed is None else fixed
    free = np.flatnonzero(~fixed)
    c0 = Z[fixed].mean(axis=0) if fixed.any() else Z[rng.choice(len(Z))]
    far = free[np.argmax(((Z[free] - c0) ** 2).sum(axis=1))]
    c1 = Z[far]
    second = np.zeros(len(Z), dtype=bool)
    for _ in range(n_iter):
        new = (((Z - c1) ** 2).sum(axis=1) < ((Z - c0) ** 2).sum(axis=1)) & ~fixed
        if (new == second).all() or new.all() or not new.any():
            second = new
            break
        second = new
        c0, c1 = Z[~second].mean(axis=0), Z[second].mean(axis=0)
    return second


class SemiSupervisedGMM:
    """`fit(X_labelled, y_labelled, X_unlabelled)`; then `labels_` (component per unlabelled image),
    `component_class_` (known class of each component, None when new) and `n_components_`."""

    def __init__(self, n_dims: int = 96, init_new: int | None = None, n_iter: int = 15, max_rounds: int = 8,
                 split_quantile: float = 0.5, shrinkage: float = 0.2, seed: int = 0) -> None:
        self.n_dims, self.init_new, self.n_iter, self.max_rounds = n_dims, init_new, n_iter, max_rounds
        self.split_quantile, self.shrinkage, self.seed = split_quantile, shrinkage, seed

    def get_params(self) -> dict[str, Any]:
        return {"n_dims": self.n_dims, "init_new": self.init_new, "n_iter": self.n_iter,
                "max_rounds": self.max_rounds, "split_quantile": self.split_quantile, "shrinkage": self.shrinkage,
                "seed": self.seed}

    # --- features -------------------------------------------------------------------------------------
    def _project(self, X: np.ndarray) -> np.ndarray:
        return l2_normalise(X - self.centre_) @ self.components_.T

    def _fit_projection(self, X: np.ndarray, n_labelled: int, y: np.ndarray) -> None:
        """PCA of all images, then whitening by the labelled within-class covariance (shrunk): the known classes
        teach which directions separate species, and make each class round, as the isotropic GMM assumes."""
        self.centre_ = X.mean(axis=0)
        Z = l2_normalise(X - self.centre_)
        pca = principal_axes(Z, min(self.n_dims, len(Z) - 1))
        P = Z[:n_labelled] @ pca.T
        R = P - np.stack([P[y == c].mean(axis=0) for c in range(int(y.max()) + 1)])[y]
        cov = R.T @ R / len(R)
        cov = (1 - self.shrinkage) * cov + self.shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
        evals, evecs = np.linalg.eigh(cov)
        self.components_ = (evecs / np.sqrt(np.maximum(evals, 1e-12))).T @ pca

    # --- the "one class" scale, learnt from labelled classes ---------------------------------------------
    def _class_scale(self, Z: np.ndarray, y: np.ndarray) -> float:
        """Threshold between 'halves of one class' and 'two neighbouring classes' separations.

        `split_quantile` q: midway between the (1 − q/2) quantile of within-class 2-means splits and the q/2
        quantile of nearest-class pairs."""
        classes = np.unique(y)
        means = np.stack([Z[y == c].mean(axis=0) for c in classes])
        d2 = sq_distances(means, means)
        np.fill_diagonal(d2, np.inf)
        between = [separation(Z[y == c], Z[y == classes[d2[i].argmin()]]) for i, c in enumerate(classes)]
        within = []
        for c in classes:
            Zc = Z[y == c]
            if len(Zc) >= 2 * MIN_CLUSTER:
                second = two_means(Zc, seed=self.seed)
                if MIN_CLUSTER <= second.sum() <= len(Zc) - MIN_CLUSTER:
                    within.append(separation(Zc[~second], Zc[second]))
        self.between_, self.within_ = np.asarray(between), np.asarray(within)
        if not within:
            return float(np.quantile(between, 0.1))
        w_hi, b_lo = np.quantile(within, 1 - self.split_quantile / 2), np.quantile(between, self.split_quantile / 2)
        return float(np.sqrt(w_hi * b_lo))  # geometric midpoint: separations are ratios

    # --- EM ----------------------------------------------------------------------------------------------
    def _em(self, Z: np.ndarray, fixed: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hard-EM iterations of an isotropic GMM with shared variance; rows with fixed >= 0 keep their component."""
        free = fixed < 0
        assign = fixed.copy()
        for _ in range(self.n_iter):
            counts = np.bincount(assign[assign >= 0], minlength=len(means)).astype(np.float64)
            log_w = np.log(np.maximum(counts, 1.0) / counts.sum())
            new = np.argmax(log_w[None, :] - sq_distances(Z[free], means) / (2 * self.var_), axis=1)
            if (assign[free] == new).all():
                break
            assign[free] = new
            means = self._means(Z, assign, means)
            resid = Z - means[assign]
            self.var_ = float((resid ** 2).sum() / (len(Z) * Z.shape[1]))
        return assign, means

    @staticmethod
    def _means(Z: np.ndarray, assign: np.ndarray, old: np.ndarray) -> np.ndarray:
        sums = np.zeros_like(old)
        np.add.at(sums, assign, Z)
        counts = np.bincount(assign, minlength=len(old))[:, None]
        return np.where(counts > 0, sums / np.maximum(counts, 1), old)

    # --- split and merge -----------------------------------------------------------------------------------
    def _split(self, Z, fixed, assign, means) -> tuple[np.ndarray, np.ndarray, int]:
        n_split = 0
        for k in range(len(means)):
            members = np.flatnonzero(assign == k)
            if len(members) < 2 * MIN_CLUSTER:
                continue
            locked = fixed[members] >= 0
            if (~locked).sum() < MIN_CLUSTER:  # a new class needs unlabelled images to split off
                continue
            second = two_means(Z[members], fixed=locked, seed=self.seed + k)
            if not MIN_CLUSTER <= second.sum() <= len(members) - MIN_CLUSTER:
                continue
            if separation(Z[members[~second]], Z[members[second]]) > self.scale_:
                assign[members[second]] = len(means)
                means = np.vstack([means, Z[members[second]].mean(axis=0)])
                n_split += 1
        return assign, means, n_split

    def _merge(self, Z, fixed, assign, means) -> tuple[np.ndarray, np.ndarray, int]:
        """Merge close pairs where at least one side is new; two known classes never merge."""
        known = self._known_mask(fixed, len(means))
        sizes = np.bincount(assign, minlength=len(means))
        alive = np.flatnonzero(sizes > 0)
        d2 = sq_distances(means[alive], means[alive])
        np.fill_diagonal(d2, np.inf)
        used, n_merged = set(), 0
        for i in np.argsort(d2.min(axis=1)):
            a = alive[i]
            b = alive[np.argmin(d2[i])]
            if a in used or b in used or (known[a] and known[b]):
                continue
            if separation(Z[assign == a], Z[assign == b]) < self.scale_:
                keep, drop = (b, a) if known[b] or (not known[a] and sizes[b] > sizes[a]) else (a, b)
                assign[assign == drop] = keep
                used.update((a, b))
                n_merged += 1
        assign, means = self._compact(Z, assign, means)
        return assign, means, n_merged

    def _known_mask(self, fixed: np.ndarray, n: int) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        mask[np.unique(fixed[fixed >= 0])] = True
        return mask

    def _compact(self, Z: np.ndarray, assign: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Drop new components under MIN_CLUSTER images (their images go to the nearest remaining component)
        and empty ones; the known ones stay first, in class order."""
        sizes = np.bincount(assign, minlength=len(means))
        small = np.flatnonzero(sizes < MIN_CLUSTER)
        small = small[small >= self.n_known_]
        if len(small):
            moved = np.isin(assign, small)
            d2 = sq_distances(Z[moved], means)
            d2[:, small] = np.inf
            assign = assign.copy()
            assign[moved] = d2.argmin(axis=1)
        alive = np.unique(assign)
        keep = np.concatenate([np.arange(self.n_known_), alive[alive >= self.n_known_]])
        remap = np.full(len(means), -1)
        remap[keep] = np.arange(len(keep))
        return remap[assign], self._means(Z, remap[assign], means[keep])

    # --- fit ---------------------------------------------------------------------------------------------
    def fit(self, X_labelled: np.ndarray, y_labelled: np.ndarray, X_unlabelled: np.ndarray) -> "SemiSupervisedGMM":
        X_l, X_u = np.asarray(X_labelled, dtype=np.float64), np.asarray(X_unlabelled, dtype=np.float64)
        if X_l.ndim != 2 or X_u.ndim != 2 or X_l.shape[1] != X_u.shape[1] or len(X_u) == 0:
            raise DataError("discovery needs labelled and unlabelled embeddings of one width",
                            expected="(N, D) and (M, D), M ≥ 1", found=f"{X_l.shape} and {X_u.shape}",
                            fix="embed both sets with the same backbone")
        self.classes_, y = np.unique(np.asarray(y_labelled), return_inverse=True)
        if len(self.classes_) < 2:
            raise DataError("discovery needs labelled images of at least 2 known classes",
                            expected="2 or more classes", found=f"{len(self.classes_)}",
                            fix="give the labelled training data of the model")
        self.n_known_ = len(self.classes_)
        self._fit_projection(np.concatenate([X_l, X_u]), len(y), y)
        Z = self._project(np.concatenate([X_l, X_u]))
        fixed = np.concatenate([y, np.full(len(X_u), -1)])
        self.scale_ = self._class_scale(Z[: len(y)], y)
        means = np.stack([Z[: len(y)][y == c].mean(axis=0) for c in range(self.n_known_)])
        means = np.vstack([means, self._init_new(Z[len(y):], means)])
        self.var_ = float(((Z[: len(y)] - means[y]) ** 2).sum() / (len(y) * Z.shape[1]))
        assign, means = self._compact(Z, *self._em(Z, fixed, means))
        self.history_ = [len(means)]
        for _ in range(self.max_rounds):
            assign, means, n_split = self._split(Z, fixed, assign, means)
            assign, means = self._em(Z, fixed, means)
            assign, means, n_merged = self._merge(Z, fixed, assign, means)
            assign, means = self._compact(Z, *self._em(Z, fixed, means))
            self.history_.append(len(means))
            if n_split == 0 and n_merged == 0:
                break
        self.means_ = means
        self.labels_ = assign[len(y):]
        self.n_components_ = int(len(np.unique(assign)))
        self.component_class_ = [str(c) for c in self.classes_] + [None] * (len(means) - self.n_known_)
        return self

    def _init_new(self, Z_u: np.ndarray, known_means: np.ndarray) -> np.ndarray:
        """k-means++ seeds among the unlabelled images, each far from the known classes and earlier seeds."""
        n_new = self.init_new if self.init_new is not None else max(1, len(known_means) // 4)
        n_new = max(1, min(n_new, len(Z_u) // MIN_CLUSTER))
        rng = np.random.default_rng(self.seed)
        d2 = sq_distances(Z_u, known_means).min(axis=1)
        seeds = []
        for _ in range(min(n_new, len(Z_u))):
            i = rng.choice(len(Z_u), p=d2 / d2.sum()) if d2.sum() > 0 else rng.integers(len(Z_u))
            seeds.append(Z_u[i])
            d2 = np.minimum(d2, ((Z_u - Z_u[i]) ** 2).sum(-1))
        return np.asarray(seeds).reshape(-1, Z_u.shape[1])
