"""MixOE head: outlier blends come from two classes; training on mixtures lowers confidence between classes."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.errors import DataError
from finegrain.heads.mixoe import MixOEHead, synthesise_outliers
from finegrain.openworld.scores import max_softmax

rng = np.random.default_rng(0)
CENTRES = np.eye(6)[:3] * 3
X = np.concatenate([c + rng.normal(0, 0.4, (30, 6)) for c in CENTRES]).astype(np.float32)
y = np.repeat(np.array(["a", "b", "c"]), 30)


def test_synthetic_outliers_blend_two_different_classes():
    yi = np.repeat(np.arange(3), 30)
    X_exact = np.repeat(CENTRES, 30, axis=0).astype(np.float32)
    O = synthesise_outliers(X_exact, yi, 50, seed=1)
    assert O.shape == (50, 6)
    # weights in [0.3, 0.7] of two different class centres: exactly two coordinates in [0.9, 2.1]
    big = (O[:, :3] >= 0.9 - 1e-5) & (O[:, :3] <= 2.1 + 1e-5)
    assert (big.sum(axis=1) == 2).all()


def test_mixing_lowers_confidence_between_classes_but_keeps_accuracy():
    plain = MixOEHead(beta=0.0, epochs=30, lr=1e-2).fit(X, y)
    mixoe = MixOEHead(beta=1.0, epochs=30, lr=1e-2).fit(X, y)
    between = ((CENTRES[0] + CENTRES[1]) / 2 + rng.normal(0, 0.4, (40, 6))).astype(np.float32)
    assert max_softmax(mixoe.decision_function(between)).mean() < max_softmax(plain.decision_function(between)).mean()
    assert (mixoe.predict(X) == y).mean() > 0.95


def test_user_outliers_must_have_the_training_width():
    with pytest.raises(DataError):
        MixOEHead(epochs=1).fit(X, y, outliers=np.zeros((5, 3), dtype=np.float32))


def test_mixoe_is_a_head_fit_can_train_and_save(split_folder, tmp_path):
    import finegrain
    clf = finegrain.fit(split_folder, backbone="tiny", head="mixoe", head_params={"lr": 1e-2})
    assert clf.head.get_params()["seed"] == 0  # fit's --seed reaches heads that take one
    clf.save(tmp_path / "m")
    back = finegrain.Classifier.load(tmp_path / "m")
    preds = back.predict(split_folder / "test" / "red_finch")
    assert [p.label for p in preds] == [p.label for p in clf.predict(split_folder / "test" / "red_finch")]
    assert sum(p.label == "red_finch" for p in preds) >= 3
