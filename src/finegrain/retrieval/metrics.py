"""Retrieval metrics as pure functions: arrays of neighbour labels in, numbers out.

They follow the metric-learning literature (Musgrave et al., "A Metric Learning Reality Check", 2020):
Recall@K is the fraction of queries with at least one same-class image among their K nearest gallery images
(what CUB/SOP papers report), precision@K the mean fraction of same-class images among those K, and mAP@R the
mean over queries of average precision over the first R neighbours, R being how many gallery images share the
query's class — so a perfect ranking scores 1 and no partial credit is given for hits past rank R.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def relevance(neighbour_labels: np.ndarray, query_labels: Sequence) -> np.ndarray:
    """(Q, K) booleans: neighbour j of query i has the query's label."""
    neighbour_labels = np.asarray(neighbour_labels)
    query_labels = np.asarray(query_labels)
    if neighbour_labels.ndim != 2 or len(neighbour_labels) != len(query_labels):
        raise ValueError(f"neighbour labels must be (n_queries, k); got {neighbour_labels.shape} for "
                         f"{len(query_labels)} queries")
    return neighbour_labels == query_labels[:, None]


def recall_at_k(rel: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Recall@K for each K: fraction of queries with a relevant item among the first K neighbours."""
    rel = np.asarray(rel, dtype=bool)
    return {int(k): float(rel[:, :k].any(axis=1).mean()) if len(rel) else 0.0 for k in ks}


def precision_at_k(rel: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Precision@K for each K: mean fraction of relevant items among the first K neighbours (a query with fewer
    than K neighbours counts the missing ones as not relevant)."""
    rel = np.asarray(rel, dtype=bool)
    return {int(k): float(rel[:, :k].sum(axis=1).mean() / k) if len(rel) else 0.0 for k in ks}


def map_at_r(rel: np.ndarray, n_relevant: Sequence[int]) -> float:
    """mAP@R: for query i with R_i relevant gallery items, (1/R_i) Σ_{j≤R_i} P(j)·rel(j), averaged over queries
    with R_i ≥ 1. `rel` must hold at least max(R_i) neighbours per query (missing columns count as misses)."""
    rel = np.asarray(rel, dtype=bool)
    R = np.asarray(n_relevant, dtype=np.int64)
    keep = R > 0
    rel, R = rel[keep], R[keep]
    if not len(R):
        return 0.0
    width = int(R.max())
    if rel.shape[1] < width:
        rel = np.pad(rel, ((0, 0), (0, width - rel.shape[1])))
    rel = rel[:, :width]
    ranks = np.arange(1, width + 1)
    within = ranks[None, :] <= R[:, None]
    hits = rel & within
    precision = np.cumsum(hits, axis=1) / ranks[None, :]
    return float(((precision * hits).sum(axis=1) / R).mean())


def retrieval_metrics(neighbour_labels: np.ndarray, query_labels: Sequence, gallery_labels: Sequence,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K, precision@K and mAP@R in one dict (keys `recall@1`, `precision@1`, `map@r`, …); R per query is
    the number of gallery items of its class, so `neighbour_labels` should hold at least that many columns."""
    rel = relevance(neighbour_labels, query_labels)
    labels, counts = np.unique(np.asarray(gallery_labels), return_counts=True)
    per_class = dict(zip(labels.tolist(), counts.tolist()))
    n_rel = [per_class.get(q, 0) for q in np.asarray(query_labels).tolist()]
    out = {f"recall@{k}": v for k, v in recall_at_k(rel, ks).items()}
    out.update({f"precision@{k}": v for k, v in precision_at_k(rel, ks).items()})
    out["map@r"] = map_at_r(rel, n_rel)
    return out


__all__ = ["relevance", "recall_at_k", "precision_at_k", "map_at_r", "retrieval_metrics"]
