"""OODDetector: flags far-away embeddings, keeps the target share of held-out known ones, survives save/load."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.errors import ConfigError, DataError
from finegrain.heads import make_head
from finegrain.openworld.detector import METHODS, OODDetector


def blobs(seed: int, n: int = 40, centres=((4, 0, 0, 0), (0, 4, 0, 0), (0, 0, 4, 0))):
    rng = np.random.default_rng(seed)
    X = np.concatenate([np.asarray(c, float) + rng.normal(0, 0.5, (n, 4)) for c in centres])
    return X, np.repeat(np.arange(len(centres)), n)


X, y = blobs(0)
X_val, y_val = blobs(1)
X_out, _ = blobs(2, centres=((0, 0, 0, 4), (0, 0, 0, -4)))
HEAD = make_head("prototype").fit(X, y)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_separates_far_outliers(method):
    det = OODDetector(method, n_components=3).fit(X, y).fit_threshold(X_val, HEAD.decision_function(X_val))
    flags_val, _ = det.predict_unknown(X_val, HEAD.decision_function(X_val))
    flags_out, _ = det.predict_unknown(X_out, HEAD.decision_function(X_out))
    assert flags_val.mean() <= 0.06
    assert flags_out.mean() >= 0.9


@pytest.mark.parametrize("method", ["msp", "mahalanobis", "knn"])
def test_state_round_trip_gives_same_scores(method):
    det = OODDetector(method, temperature=0.7).fit(X, y).fit_threshold(X_val, HEAD.decision_function(X_val))
    values, arrays = det.to_state()
    again = OODDetector.from_state(values, arrays)
    z = HEAD.decision_function(X_out)
    np.testing.assert_allclose(again.score_samples(X_out, z), det.score_samples(X_out, z), rtol=1e-4)
    assert again.threshold_ == det.threshold_


def test_explicit_threshold_overrides_the_fitted_one():
    det = OODDetector("msp").fit(X, y)
    flags, scores = det.predict_unknown(X_val, HEAD.decision_function(X_val), threshold=1.01)
    assert flags.all() and (scores <= 1.0).all()


def test_usage_errors():
    with pytest.raises(ConfigError):
        OODDetector("odin")
    with pytest.raises(DataError):
        OODDetector("msp").fit(X, y).score_samples(X)
    with pytest.raises(DataError):
        OODDetector("knn").fit(X, y).score_samples(X[:, :2])
    with pytest.raises(Exception, match="no automatic unknown threshold"):
        OODDetector("msp").fit(X, y).predict_unknown(X, HEAD.decision_function(X))
