"""Out-of-distribution scores as pure functions: arrays in, one score per image out.

Every score follows one convention (scikit-learn's `score_samples`): HIGHER means MORE like the training
classes, so a single rule, "unknown when the score is below the threshold", serves every method.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..heads.base import l2_normalise


def _logits(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise DataError("logits must be a 2-D array with one column per class", expected="shape (N, C)",
                        found=f"shape {z.shape}", fix="pass the head's decision_function output")
    return z


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1)
    return m + np.log(np.exp(z - m[:, None]).sum(axis=1))


def max_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Largest softmax probability (Hendrycks & Gimpel): the classic baseline."""
    z = _logits(logits) / temperature
    return np.exp(z.max(axis=1) - _logsumexp(z))


def max_logit(logits: np.ndarray) -> np.ndarray:
    """Largest raw logit: keeps the magnitude information that the softmax normalises away."""
    return _logits(logits).max(axis=1)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy T·logsumexp(z/T) (Liu et al. 2020): a smooth max-logit over all classes."""
    return temperature * _logsumexp(_logits(logits) / temperature)


def class_means(X: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, D) mean embedding of each class id in [0, C)."""
    X = np.asarray(X, dtype=np.float64)
    sums = np.zeros((n_classes, X.shape[1]))
    np.add.at(sums, y, X)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return sums / np.maximum(counts, 1.0)[:, None]


def shared_precision(X: np.ndarray, y: np.ndarray, means: np.ndarray, shrinkage: float) -> np.ndarray:
    """Inverse of the pooled within-class covariance, shrunk towards a scaled identity.

    With fewer images than dimensions the pooled covariance is singular; shrinkage makes it invertible and
    stops the rarely seen directions from dominating the distance.
    """
    if not 0.0 <= shrinkage <= 1.0:
        raise DataError("Mahalanobis shrinkage must lie in [0, 1]", expected="a number in [0, 1]",
                        found=str(shrinkage), fix="use e.g. shrinkage=0.5")
    R = np.asarray(X, dtype=np.float64) - means[y]
    cov = R.T @ R / max(len(R), 1)
    target = np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    return np.linalg.inv((1.0 - shrinkage) * cov + shrinkage * target + 1e-9 * np.eye(cov.shape[0]))


def mahalanobis(X: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Minus the smallest class-conditional squared Mahalanobis distance (Lee et al. 2018), shared covariance."""
    X = np.asarray(X, dtype=np.float64)
    XP = X @ precision
    quad_x = np.einsum("nd,nd->n", XP, X)
    quad_m = np.einsum("cd,cd->c", means @ precision, means)
    d2 = quad_x[:, None] - 2.0 * XP @ means.T + quad_m[None, :]
    return -d2.min(axis=1)


def knn_distance(X: np.ndarray, memory: np.ndarray, k: int = 5) -> np.ndarray:
    """Minus the Euclidean distance of each L2-normalised row to its k-th nearest training embedding (Sun et al. 2022)."""
    if k < 1 or k > len(memory):
        raise DataError("kNN OOD score needs 1 ≤ k ≤ number of training embeddings",
                        expected=f"k in [1, {len(memory)}]", found=str(k), fix="choose a smaller k")
    sims = l2_normalise(np.asarray(X, dtype=np.float64)) @ l2_normalise(np.asarray(memory, dtype=np.float64)).T
    kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
    return -np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0))



def principal_axes(Z: np.ndarray, n: int) -> np.ndarray:
    """(n, D) top principal directions of the rows of Z, from the D×D covariance (cheap when N ≫ D or N ≈ D)."""
    Zc = np.asarray(Z, dtype=np.float64) - np.mean(Z, axis=0)
    evals, evecs = np.linalg.eigh(Zc.T @ Zc)
    return evecs[:, ::-1][:, : min(n, Zc.shape[1])].T
