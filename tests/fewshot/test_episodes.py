from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finegrain.data.samples import Sample
from finegrain.errors import ConfigError, DataError
from finegrain.fewshot.episodes import dirichlet_counts, sample_episodes, select_shots


def labels(n_classes=8, per_class=25):
    return np.repeat(np.arange(n_classes), per_class)


def test_balanced_episodes_have_disjoint_support_and_query_of_the_chosen_classes():
    y = labels()
    eps = sample_episodes(y, ways=5, shots=2, queries=4, episodes=20, seed=3)
    for e in eps:
        assert len(set(e.classes)) == 5 and len(e.support) == 10 and len(e.query) == 20
        assert not set(e.support) & set(e.query)
        assert (y[e.support] == e.classes[e.support_labels]).all()
        assert (y[e.query] == e.classes[e.query_labels]).all()
        assert (np.bincount(e.query_labels, minlength=5) == 4).all()


def test_episodes_are_seeded():
    y = labels()
    a = sample_episodes(y, ways=3, shots=1, queries=5, episodes=4, seed=1)
    b = sample_episodes(y, ways=3, shots=1, queries=5, episodes=4, seed=1)
    c = sample_episodes(y, ways=3, shots=1, queries=5, episodes=4, seed=2)
    assert all((x.query == z.query).all() and (x.support == z.support).all() for x, z in zip(a, b))
    assert any(not np.array_equal(x.query, z.query) for x, z in zip(a, c))


def test_imbalanced_episodes_keep_the_total_but_vary_class_counts():
    y = labels(per_class=40)
    eps = sample_episodes(y, ways=5, shots=1, queries=15, episodes=50, seed=0, imbalance_alpha=2.0)
    counts = np.stack([np.bincount(e.query_labels, minlength=5) for e in eps])
    assert (counts.sum(1) == 75).all()
    assert counts.max() <= 39  # never more than a class has left after its shot
    assert counts.std(axis=1).mean() > 3  # far from 15 each


def test_dirichlet_counts_respect_capacity_and_total():
    rng = np.random.default_rng(0)
    for _ in range(200):
        cap = rng.integers(5, 30, size=4)
        total = int(rng.integers(1, cap.sum() + 1))
        c = dirichlet_counts(rng, 4, total, cap, alpha=0.5)
        assert c.sum() == total and (c >= 0).all() and (c <= cap).all()


def test_too_few_classes_and_bad_sizes_are_explained():
    y = labels(n_classes=4, per_class=5)
    with pytest.raises(DataError, match="only 0 classes"):
        sample_episodes(y, ways=3, shots=1, queries=10, episodes=1)
    with pytest.raises(ConfigError, match="--ways"):
        sample_episodes(y, ways=1, shots=1, queries=1, episodes=1)
    with pytest.raises(ConfigError, match="Dirichlet"):
        sample_episodes(y, ways=2, shots=1, queries=1, episodes=1, imbalance_alpha=0)


def test_select_shots_keeps_at_most_k_per_class_with_a_seed():
    samples = [Sample(Path(f"{c}{i}.jpg"), c) for c in "abc" for i in range(6)] + [Sample(Path("x.jpg"))]
    picked = select_shots(samples, 2, seed=0)
    assert sorted(s.label for s in picked) == ["a", "a", "b", "b", "c", "c"]
    assert picked == select_shots(samples, 2, seed=0)
    assert {s.path for s in picked} != {s.path for s in select_shots(samples, 2, seed=5)}
    assert len(select_shots(samples, 10, seed=0)) == 18
