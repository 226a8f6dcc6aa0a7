"""ESZSL (Romera-Paredes & Torr, 2015): the closed-form attribute baseline for unseen-class zero-shot."""
from __future__ import annotations

import numpy as np


def eszsl_fit(X: np.ndarray, y: np.ndarray, S: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """V (D, A) in the paper's closed form: (XᵀX + γI)⁻¹ XᵀY S (SᵀS + λI)⁻¹.

    X: (N, D) seen-class image features; y: (N,) indices into the rows of S: (K, A) seen-class attributes;
    Y is the ±1 one-hot target. Unseen images are scored with `X V S_unseenᵀ`."""
    X = np.asarray(X, dtype=np.float64)
    S = np.asarray(S, dtype=np.float64)
    Y = -np.ones((len(X), len(S)))
    Y[np.arange(len(X)), y] = 1.0
    left = np.linalg.solve(X.T @ X + gamma * np.eye(X.shape[1]), X.T @ Y @ S)
    return np.linalg.solve((S.T @ S + lam * np.eye(S.shape[1])).T, left.T).T


def eszsl_scores(X: np.ndarray, V: np.ndarray, S: np.ndarray) -> np.ndarray:
    """(N, K) compatibility of images with the classes whose attribute rows are S."""
    return np.asarray(X, dtype=np.float64) @ V @ np.asarray(S, dtype=np.float64).T
