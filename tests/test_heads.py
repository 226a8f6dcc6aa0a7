from __future__ import annotations

import numpy as np
import pytest

from finegrain.errors import ConfigError, DataError, NotFittedError
from finegrain.heads import HEADS, head_from_state, make_head

HEAD_NAMES = ["logistic", "prototype", "knn"]


def blobs(n_per_class=30, n_classes=4, dim=16, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    X = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres]).astype(np.float32)
    y = np.repeat(np.array([f"class_{i}" for i in range(n_classes)], dtype=object), n_per_class)
    return X, y


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_head_learns_separable_classes(name):
    X, y = blobs(seed=1)
    Xt, yt = blobs(seed=1, n_per_class=20)  # same centres, new noise
    head = make_head(name).fit(X, y)
    assert list(head.classes_) == sorted(set(y))
    assert (head.predict(Xt) == yt).mean() > 0.9
    p = head.predict_proba(Xt)
    assert p.shape == (len(Xt), 4)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    assert (p >= 0).all()


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_state_round_trip_gives_identical_outputs(name):
    X, y = blobs(seed=2)
    head = make_head(name).fit(X, y)
    values, arrays = head.to_state()
    import json
    back = head_from_state(json.loads(json.dumps(values)), arrays)
    np.testing.assert_allclose(back.predict_proba(X), head.predict_proba(X), rtol=1e-6)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_errors_before_fit_and_on_wrong_width(name):
    X, y = blobs()
    with pytest.raises(NotFittedError, match="not fitted"):
        make_head(name).predict(X)
    head = make_head(name).fit(X, y)
    with pytest.raises(DataError, match="16-d") as e:
        head.predict(np.zeros((2, 8), dtype=np.float32))
    assert "same backbone" in str(e.value)


def test_one_class_is_refused():
    X, _ = blobs(n_classes=1)
    with pytest.raises(DataError, match="at least 2 classes"):
        make_head("logistic").fit(X, np.array(["a"] * len(X), dtype=object))


def test_logistic_chooses_C_on_validation_not_training():
    X, y = blobs(seed=3, spread=1.5)
    Xv, yv = blobs(seed=3, spread=1.5, n_per_class=10)
    head = make_head("logistic", Cs=(0.01, 1.0)).fit(X, y, Xv, yv)
    assert head.C_ in (0.01, 1.0)
    assert len(head.validation_) == 2
    assert all(0 <= r["val_accuracy"] <= 1 for r in head.validation_)
    fixed = make_head("logistic", C=0.5).fit(X, y)
    assert fixed.C_ == 0.5 and not hasattr(fixed, "validation_")


def test_logistic_validation_labels_must_be_known():
    X, y = blobs()
    with pytest.raises(DataError, match="not known"):
        make_head("logistic").fit(X, y, X[:2], np.array(["zebra", "zebra"], dtype=object))


def test_knn_neighbours_are_sorted():
    X, y = blobs()
    head = make_head("knn", k=5).fit(X, y)
    sims, idx = head.kneighbors(X[:3])
    assert (np.diff(sims, axis=1) <= 1e-7).all()
    assert (idx[:, 0] == np.arange(3)).all()  # each point is its own nearest neighbour


def test_unknown_head_suggests_name():
    with pytest.raises(ConfigError, match="did you mean 'logistic'"):
        HEADS.get("logistc")


def test_unknown_head_parameter_lists_accepted_ones():
    with pytest.raises(ConfigError, match="no parameter kk") as e:
        make_head("knn", kk=3)
    assert "k, temperature" in str(e.value)
