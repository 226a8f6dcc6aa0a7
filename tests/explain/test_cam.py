"""CAM weights and maps against naive loop implementations of the papers' formulas, on seeded random data."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.errors import DataError
from finegrain.explain.cam import (gradcam_weights, gradcampp_weights, normalise_maps, upsample_maps,
                                   weighted_activation_map)


def _data(seed=0, n=2, c=5, h=4, w=3):
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(size=(n, c, h, w)), 0), rng.normal(size=(n, c, h, w))


def test_gradcam_matches_naive_loops():
    acts, grads = _data()
    n, c, h, w = acts.shape
    weights = gradcam_weights(grads)
    maps = weighted_activation_map(acts, weights)
    for i in range(n):
        for k in range(c):
            assert weights[i, k] == pytest.approx(sum(grads[i, k, a, b] for a in range(h) for b in range(w)) / (h * w))
        for a in range(h):
            for b in range(w):
                assert maps[i, a, b] == pytest.approx(max(0.0, sum(weights[i, k] * acts[i, k, a, b] for k in range(c))))


def test_gradcampp_matches_naive_loops():
    acts, grads = _data(1)
    n, c, h, w = acts.shape
    weights = gradcampp_weights(acts, grads)
    for i in range(n):
        for k in range(c):
            total = acts[i, k].sum()
            expected = 0.0
            for a in range(h):
                for b in range(w):
                    g = grads[i, k, a, b]
                    alpha = g ** 2 / (2 * g ** 2 + total * g ** 3) if g != 0 else 0.0
                    expected += alpha * max(g, 0.0)
            assert weights[i, k] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_maps_are_non_negative_and_normalised_to_unit_peak():
    acts, grads = _data(2)
    maps = normalise_maps(upsample_maps(weighted_activation_map(acts, gradcam_weights(np.abs(grads))), 16, 12))
    assert maps.shape == (2, 16, 12) and maps.dtype == np.float32
    assert maps.min() >= 0 and np.allclose(maps.reshape(2, -1).max(axis=1), 1.0)


def test_all_negative_evidence_gives_an_all_zero_map():
    acts = np.ones((1, 2, 3, 3))
    maps = normalise_maps(weighted_activation_map(acts, np.array([[-1.0, -2.0]])))
    assert not maps.any()


def test_upsampling_keeps_where_the_peak_is():
    coarse = np.zeros((1, 4, 4), dtype=np.float32)
    coarse[0, 0, 3] = 1.0  # top-right cell
    fine = upsample_maps(coarse, 32, 32)[0]
    r, c = np.unravel_index(fine.argmax(), fine.shape)
    assert r < 8 and c >= 24


def test_mismatched_shapes_are_reported():
    acts, grads = _data()
    with pytest.raises(DataError, match="do not match"):
        gradcampp_weights(acts, grads[:, :3])
    with pytest.raises(DataError, match="channel weights"):
        weighted_activation_map(acts, np.zeros((2, 4)))
