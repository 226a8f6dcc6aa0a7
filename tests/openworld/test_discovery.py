"""Semi-supervised GMM with split/merge: finds the new classes and how many there are on clear synthetic data."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.errors import DataError
from finegrain.openworld.discovery import SemiSupervisedGMM, separation, sq_distances, two_means
from finegrain.openworld.metrics import clustering_accuracy


def world(seed: int = 0, n_known: int = 6, n_new: int = 3, dim: int = 24):
    """Class centres on random directions; labelled images of the known classes, unlabelled of all classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_known + n_new, dim)) * 3
    draw = lambda c, n: centres[c] + rng.normal(0, 0.6, (n, dim))  # noqa: E731
    X_l = np.concatenate([draw(c, 20) for c in range(n_known)])
    y_l = np.repeat(np.array([f"k{c}" for c in range(n_known)]), 20)
    X_u = np.concatenate([draw(c, 15) for c in range(n_known + n_new)])
    y_u = np.repeat(np.arange(n_known + n_new), 15)
    return X_l, y_l, X_u, y_u


def test_helpers_match_naive():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    np.testing.assert_allclose(sq_distances(A, B), ((A[:, None] - B[None]) ** 2).sum(-1), atol=1e-9)
    ma, mb = A.mean(0), B.mean(0)
    spread = ((A - ma) ** 2).sum(1).mean() + ((B - mb) ** 2).sum(1).mean()
    assert separation(A, B) == pytest.approx(((ma - mb) ** 2).sum() / spread)
    two = np.concatenate([rng.normal(-5, 1, (10, 2)), rng.normal(5, 1, (10, 2))])
    second = two_means(two)
    assert second.sum() == 10 and len(set(second[:10])) == 1
    fixed = np.zeros(20, dtype=bool)
    fixed[12] = True
    assert not two_means(two, fixed=fixed)[12]


@pytest.mark.parametrize("init_new", [1, 8])
def test_finds_new_classes_and_their_number(init_new):
    X_l, y_l, X_u, y_u = world()
    gmm = SemiSupervisedGMM(n_dims=16, init_new=init_new).fit(X_l, y_l, X_u)
    assert gmm.n_components_ == 9
    assert clustering_accuracy(y_u, gmm.labels_) >= 0.95
    known_part = gmm.labels_[: 6 * 15]
    assert [gmm.component_class_[k] for k in known_part[::15]] == [f"k{c}" for c in range(6)]
    assert all(gmm.component_class_[k] is None for k in gmm.labels_[6 * 15:])


def test_unlabelled_images_of_one_known_class_only():
    X_l, y_l, X_u, y_u = world()
    gmm = SemiSupervisedGMM(n_dims=16).fit(X_l, y_l, X_u[y_u == 2])
    assert gmm.n_components_ == 6 and {gmm.component_class_[k] for k in gmm.labels_} == {"k2"}


def test_rejects_mismatched_inputs():
    X_l, y_l, X_u, _ = world()
    with pytest.raises(DataError):
        SemiSupervisedGMM().fit(X_l, y_l, X_u[:, :5])
    with pytest.raises(DataError):
        SemiSupervisedGMM().fit(X_l, np.array(["k0"] * len(y_l)), X_u)
