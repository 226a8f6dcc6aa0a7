"""Pure functions that turn embedded prompts and descriptors into class vectors, scores and explanations.

Every class vector is an exact linear combination of text rows (`coef`), so a class score splits into
per-row contributions: that is what makes descriptor-based decisions explainable.
"""
from __future__ import annotations

import numpy as np


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def prompt_scores(U: np.ndarray, E: np.ndarray) -> np.ndarray:
    """Label-free quality score of each prompt template (in the spirit of zero-shot prompt weighting).

    U: (N, T) unlabelled images in the text space; E: (P, C, T) embeddings of template p for class c.
    A template's logits are first corrected for its class bias over the images (a template that favours
    one class for every image says nothing about the image); the score is then the mean margin of the top
    class over the average class. Confident, image-dependent templates score high.
    """
    L = np.einsum("nt,pct->pnc", U, E)
    L = L - L.mean(axis=1, keepdims=True)
    return (L.max(axis=2) - L.mean(axis=2)).mean(axis=1)


def prompt_weights(scores: np.ndarray, temperature: float | None) -> np.ndarray:
    """Softmax of z-scored template scores; temperature None (or a single template) gives uniform weights."""
    scores = np.asarray(scores, dtype=np.float64)
    if temperature is None or len(scores) < 2 or scores.std() == 0:
        return np.full(len(scores), 1.0 / len(scores))
    z = (scores - scores.mean()) / scores.std() / float(temperature)
    w = np.exp(z - z.max())
    return w / w.sum()


def ensemble_names(E: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(P, C, T) template embeddings + (P,) weights → (C, T) unit class-name vectors (weighted mean)."""
    M = np.einsum("p,pct->ct", np.asarray(weights, dtype=np.float64), E)
    return (M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def mix_coefficients(n_classes: int, row_class: np.ndarray, row_weight: np.ndarray,
                     row_is_name: np.ndarray, row_emb: np.ndarray, name_weight: float) -> np.ndarray:
    """Coefficient of each text row such that class vector = Σ coef·row is unit length.

    Per class: name part n̂ (its name row) and description part d̂ (unit weighted mean of its descriptors),
    mixed as name_weight·n̂ + (1 − name_weight)·d̂ and rescaled to unit length. A class without descriptors
    uses its name alone; a class without a name row uses its descriptors alone.
    """
    coef = np.zeros(len(row_class), dtype=np.float64)
    for c in range(n_classes):
        names = np.flatnonzero((row_class == c) & row_is_name)
        descs = np.flatnonzero((row_class == c) & ~row_is_name)
        a = name_weight if len(descs) and len(names) else (1.0 if len(names) else 0.0)
        if len(names):
            coef[names] = a * row_weight[names] / max(np.linalg.norm(row_weight[names] @ row_emb[names]), 1e-12)
        if len(descs):
            d = row_weight[descs] @ row_emb[descs]
            coef[descs] = (1.0 - a) * row_weight[descs] / max(float(np.linalg.norm(d)), 1e-12)
        rows = np.concatenate([names, descs])
        norm = float(np.linalg.norm(coef[rows] @ row_emb[rows])) if len(rows) else 0.0
        if norm > 0:
            coef[rows] /= norm
    return coef.astype(np.float32)


def class_vectors(row_emb: np.ndarray, row_class: np.ndarray, coef: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, T) class vectors Σ_rows coef·embedding (unit length when coef comes from `mix_coefficients`)."""
    out = np.zeros((n_classes, row_emb.shape[1]), dtype=np.float64)
    np.add.at(out, row_class, coef[:, None] * row_emb)
    return out.astype(np.float32)


def row_contributions(U: np.ndarray, row_emb: np.ndarray, coef: np.ndarray,
                      reference: np.ndarray | None = None) -> np.ndarray:
    """(N, M) contribution of each text row to its class's score: coef·cos(image, row).

    Summed per class they give the score. With `reference` (T,), e.g. the mean descriptor, similarities
    are taken relative to it, so traits every class shares ("black eyes") stop dominating the evidence."""
    R = row_emb if reference is None else row_emb - reference[None, :]
    return (U @ R.T) * coef[None, :]


def top_rows(contrib: np.ndarray, row_class: np.ndarray, classes: np.ndarray, k: int,
             rows_allowed: np.ndarray | None = None) -> list[list[int]]:
    """For each image i, the k rows of class classes[i] that contributed most (the explanation)."""
    out = []
    for i, c in enumerate(classes):
        mask = row_class == c
        if rows_allowed is not None:
            mask &= rows_allowed
        idx = np.flatnonzero(mask)
        out.append(idx[np.argsort(-contrib[i, idx], kind="stable")[:k]].tolist())
    return out


def shortlist_scores(S_coarse: np.ndarray, S_fine: np.ndarray, k: int) -> np.ndarray:
    """Retrieve-then-rescore: keep fine scores of each row's top-k coarse classes, −inf elsewhere."""
    k = min(k, S_coarse.shape[1])
    keep = np.argpartition(-S_coarse, k - 1, axis=1)[:, :k]
    out = np.full_like(S_fine, -np.inf)
    rows = np.arange(len(S_fine))[:, None]
    out[rows, keep] = S_fine[rows, keep]
    return out


def mix_in(C: np.ndarray, row_class: np.ndarray, coef: np.ndarray, M: np.ndarray, step: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients that turn unit class vectors C (= Σ coef·rows) into unit((1 − step)·C_k + step·M_k).

    Returns (rescaled coefficients of the existing rows, coefficients of the K new rows M), so the mixed
    class vectors stay exact linear combinations of stored rows."""
    mixed = (1.0 - step) * np.asarray(C, dtype=np.float64) + step * np.asarray(M, dtype=np.float64)
    z = np.maximum(np.linalg.norm(mixed, axis=1), 1e-12)
    return (coef * (1.0 - step) / z[row_class]).astype(np.float32), (step / z).astype(np.float32)
