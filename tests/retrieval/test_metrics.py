"""Retrieval metrics against naive, loop-by-loop implementations on seeded random data."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.retrieval.metrics import map_at_r, precision_at_k, recall_at_k, relevance, retrieval_metrics


def naive(neigh: np.ndarray, queries: np.ndarray, gallery: np.ndarray, ks) -> dict:
    out = {}
    for k in ks:
        out[f"recall@{k}"] = sum(any(n == q for n in row[:k]) for row, q in zip(neigh, queries)) / len(queries)
        out[f"precision@{k}"] = sum(sum(n == q for n in row[:k]) / k for row, q in zip(neigh, queries)) / len(queries)
    aps = []
    for row, q in zip(neigh, queries):
        R = int(sum(g == q for g in gallery))
        if R == 0:
            continue
        hits, ap = 0, 0.0
        for i in range(R):
            if i < len(row) and row[i] == q:
                hits += 1
                ap += hits / (i + 1)
        aps.append(ap / R)
    out["map@r"] = sum(aps) / len(aps)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_naive_implementation(seed):
    rng = np.random.default_rng(seed)
    gallery = rng.integers(0, 7, 200)
    queries = rng.integers(0, 8, 50)  # class 7 has no gallery images: R = 0, left out of mAP@R
    neigh = rng.integers(0, 7, (50, 40))
    ks = (1, 3, 5, 10)
    got = retrieval_metrics(neigh, queries, gallery, ks)
    want = naive(neigh, queries, gallery, ks)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_perfect_and_worst_rankings():
    gallery = np.array([0, 0, 1, 1, 1])
    queries = np.array([0, 1])
    perfect = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert retrieval_metrics(perfect, queries, gallery, (1, 2))["map@r"] == 1.0
    worst = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1]])
    m = retrieval_metrics(worst, queries, gallery, (1, 2))
    assert m["recall@1"] == 0.0 and m["map@r"] == pytest.approx((0 + (1 / 3) / 3) / 2)  # one hit, at rank R
    # hits past rank R earn nothing in mAP@R, unlike plain AP
    assert map_at_r(relevance(np.array([[1, 0, 0]]), np.array([0])), [1]) == 0.0


def test_short_neighbour_lists_count_missing_as_misses():
    rel = np.array([[True, False]])
    assert map_at_r(rel, [4]) == pytest.approx(0.25)
    assert precision_at_k(rel, [4])[4] == pytest.approx(0.25)
    assert recall_at_k(rel, [1])[1] == 1.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="n_queries"):
        relevance(np.zeros((3, 2)), np.zeros(4))
