"""Learned alignment: a linear projection of image embeddings into the text space, trained on seen classes.

Bag-level supervision as in AdaptCLIPZS: every training image is paired with its class's text vector (its
description and name), not with a caption of its own. The projection is the closed-form solution of the
ESZSL objective with the class texts in place of attribute vectors, so it is exact, deterministic and
takes a second on a CPU; at test time it places images of never-seen classes next to their descriptions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..heads.base import l2_normalise, softmax


@dataclass(frozen=True)
class AlignmentParams:
    """Ridge penalties on the image side (gamma) and the text side (lam); choose them on held-out SEEN classes."""

    gamma: float = 10.0
    lam: float = 1e-3


@dataclass(frozen=True)
class RefineParams:
    """Label-free adaptation of class vectors to unlabelled images (temperature, step, rounds)."""

    temperature: float = 50.0
    step: float = 0.5
    rounds: int = 10


def project(X: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """(N, D) image embeddings → (N, T) unit vectors in the text space."""
    return l2_normalise(np.asarray(X, dtype=np.float32) @ projection).astype(np.float32)


def fit_projection(X: np.ndarray, y: np.ndarray, class_emb: np.ndarray,
                   params: AlignmentParams = AlignmentParams()) -> np.ndarray:
    """Projection P (D, T) from images X (N, D) labelled y (N,) with rows of class_emb (K, T).

    Minimises ||X P Sᵀ − Y||² + ridge terms, Y the ±1 one-hot targets over the K classes given:
    P = (XᵀX + γI)⁻¹ XᵀY S (SᵀS + λI)⁻¹. Only the classes in class_emb take part."""
    y = np.asarray(y, dtype=np.int64)
    if len(X) != len(y) or len(np.unique(y)) < 2:
        raise DataError("alignment needs labelled images of at least 2 described classes",
                        expected="images of 2 or more classes that have descriptions",
                        found=f"{len(X)} images of {len(np.unique(y))} class(es)",
                        fix="describe more of the labelled classes, or add their images")
    X = np.asarray(X, dtype=np.float64)
    S = np.asarray(class_emb, dtype=np.float64)
    Y = -np.ones((len(X), len(S)))
    Y[np.arange(len(X)), y] = 1.0
    left = np.linalg.solve(X.T @ X + params.gamma * np.eye(X.shape[1]), X.T @ (Y @ S))
    P = np.linalg.solve(S.T @ S + params.lam * np.eye(S.shape[1]), left.T).T
    return P.astype(np.float32)


def adapted_means(U: np.ndarray, C: np.ndarray, params: RefineParams = RefineParams()) -> np.ndarray:
    """Label-free adaptation to unlabelled images: (K, T) unit image means that each class moves toward.

    Each round soft-assigns the images U (N, T, in the text space) to the current class vectors, and sets
    class k to unit((1 − step)·C_k + step·M_k), M_k the unit mean of its soft-assigned images; the final
    M is returned, so the adapted class vector stays an explicit mix of text and images. Transductive: it
    adapts to the images it is given, so report it apart from purely inductive results."""
    C0 = l2_normalise(np.asarray(C, dtype=np.float64))
    U = np.asarray(U, dtype=np.float64)
    Cr, M = C0, C0
    for _ in range(params.rounds):
        p = softmax(params.temperature * (U @ Cr.T)).astype(np.float64)
        M = l2_normalise(p.T @ U)
        Cr = l2_normalise((1.0 - params.step) * C0 + params.step * M)
    return M.astype(np.float32)
