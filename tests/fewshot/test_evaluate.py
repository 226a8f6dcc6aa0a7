from __future__ import annotations

import numpy as np

from finegrain.fewshot.evaluate import evaluate_on_embeddings, mean_ci95, validation_test_pools


def test_mean_ci95_matches_the_textbook_formula():
    v = np.random.default_rng(0).uniform(size=50)
    m, h = mean_ci95(v)
    naive_sd = np.sqrt(sum((x - v.mean()) ** 2 for x in v) / (len(v) - 1))
    assert np.isclose(m, v.mean()) and np.isclose(h, 1.96 * naive_sd / np.sqrt(50))
    assert np.isnan(mean_ci95([0.5])[1])


def test_pools_share_no_image():
    y = np.repeat(np.arange(5), 10)
    val, test, how = validation_test_pools(y, [None] * 50, seed=0)
    assert not set(val) & set(test) and len(val) + len(test) == 50 and "halves" in how
    splits = ["train"] * 30 + ["test"] * 20
    val, test, how = validation_test_pools(y, splits, seed=0)
    assert set(test) == set(range(30, 50)) and "test split" in how


def test_report_scores_every_method_on_the_same_episodes():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 10)) + 3.0
    X = np.concatenate([c + 1.2 * rng.normal(size=(30, 10)) for c in centres]).astype(np.float32)
    labels = [f"class{i}" for i in np.repeat(np.arange(8), 30)]
    rep = evaluate_on_embeddings(X, labels, [None] * len(X), ways=4, shots=1, queries=5, episodes=20, seed=0,
                                 imbalance_alpha=2.0, methods=("prototype", "em", "unem"), learn_iterations=10)
    assert set(rep["methods"]) == {"prototype", "em", "unem"}
    assert all(0 <= m["accuracy"] <= 1 and m["ci95"] > 0 for m in rep["methods"].values())
    assert rep["setting"]["query_distribution"] == "dirichlet(alpha=2.0)"
    assert rep["unem_params"]["learned_on"]["ways"] == 4
    assert rep["methods"]["em"]["accuracy"] > rep["methods"]["prototype"]["accuracy"]
