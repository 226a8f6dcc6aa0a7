from __future__ import annotations

import numpy as np
import pytest
import torch

from finegrain.errors import ConfigError, DataError
from finegrain.fewshot.episodes import sample_episodes
from finegrain.fewshot.transductive import (DEFAULT_PARAMS, EMParams, TransductivePrototypes, em_logits,
                                            learn_params, params_for_training_set, predict_episodes,
                                            transductive_proba)
from finegrain.heads import LogisticHead, PrototypeHead


def clusters(n_classes=6, per_class=40, dim=12, spread=0.9, seed=0):
    """Gaussian classes around random centres plus a shared offset (what centring removes)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) + 3.0
    X = np.concatenate([c + spread * rng.normal(size=(per_class, dim)) for c in centres]).astype(np.float32)
    return X, np.repeat(np.arange(n_classes), per_class)


def naive_em(S, ys, Q, n_classes, params):
    """Loop-by-loop numpy EM, written from the module docstring's equations."""
    c = S.mean(0)
    zs = [(s - c) / np.linalg.norm(s - c) for s in S]
    zq = [(q - c) / np.linalg.norm(q - c) for q in Q]
    sums = [sum(z for z, l in zip(zs, ys) if l == k) for k in range(n_classes)]
    cnt = [sum(1 for l in ys if l == k) for k in range(n_classes)]
    mu = [sums[k] / cnt[k] for k in range(n_classes)]
    pi = [1.0 / n_classes] * n_classes
    for t in range(params.steps):
        beta, gamma, w = np.exp(params.log_beta[t]), params.gamma[t], np.exp(params.log_support_weight[t])
        logits = np.array([[-beta * np.sum((z - mu[k]) ** 2) + gamma * np.log(pi[k]) for k in range(n_classes)]
                           for z in zq])
        u = np.exp(logits - logits.max(1, keepdims=True))
        u /= u.sum(1, keepdims=True)
        mass = u.sum(0)
        mu = [(w * sums[k] + sum(u[n, k] * zq[n] for n in range(len(zq)))) / (w * cnt[k] + mass[k])
              for k in range(n_classes)]
        pi = [mass[k] / len(zq) + 1e-8 for k in range(n_classes)]
    return logits


def odd_params(steps=4):
    return EMParams([2.0, 2.5, 1.5, 2.2][:steps], [1.0, 0.5, -0.3, 2.0][:steps], [0.0, 0.3, -0.2, 0.1][:steps])


def test_unrolled_em_matches_a_naive_implementation():
    X, y = clusters()
    e = sample_episodes(y, ways=4, shots=2, queries=5, episodes=1, seed=0, imbalance_alpha=1.0)[0]
    S, Q = X[e.support], X[e.query]
    got = em_logits(torch.from_numpy(S)[None], torch.from_numpy(e.support_labels)[None], torch.from_numpy(Q)[None],
                    4, odd_params())[0].numpy()
    np.testing.assert_allclose(got, naive_em(S, e.support_labels, Q, 4, odd_params()), rtol=1e-4, atol=1e-4)


def test_predictions_do_not_depend_on_query_order():
    X, y = clusters()
    e = sample_episodes(y, ways=5, shots=1, queries=8, episodes=1, seed=4, imbalance_alpha=2.0)[0]
    S, Q = X[e.support], X[e.query]
    perm = np.random.default_rng(0).permutation(len(Q))
    p = transductive_proba(S, e.support_labels, Q, 5, odd_params())
    p_perm = transductive_proba(S, e.support_labels, Q[perm], 5, odd_params())
    np.testing.assert_allclose(p_perm, p[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)


def test_em_beats_inductive_prototypes_on_noisy_one_shot_episodes():
    X, y = clusters(spread=1.3)
    eps = sample_episodes(y, ways=5, shots=1, queries=15, episodes=40, seed=1)
    truth = [e.query_labels for e in eps]
    proto = np.mean([(PrototypeHead().fit(X[e.support], e.support_labels).predict(X[e.query]) == t).mean()
                     for e, t in zip(eps, truth)])
    em = np.mean([(p == t).mean() for p, t in zip(predict_episodes(X, eps, EMParams.initial()), truth)])
    assert em > proto + 0.03


def test_unrolled_learning_lowers_the_validation_loss_and_is_seeded():
    X, y = clusters(n_classes=8, spread=1.3)
    a = learn_params(X, y, ways=4, shots=1, queries=6, steps=3, iterations=25, batch=8, seed=0)
    b = learn_params(X, y, ways=4, shots=1, queries=6, steps=3, iterations=25, batch=8, seed=0)
    assert a.learned_on["final_loss"] < a.learned_on["initial_loss"]
    assert a.to_dict() == b.to_dict() and a.steps == 3
    assert a.gamma != EMParams.initial(3).gamma


def test_params_round_trip_and_reject_malformed_values():
    p = odd_params()
    assert EMParams.from_dict(p.to_dict()).to_dict() == p.to_dict()
    with pytest.raises(DataError, match="inconsistent"):
        EMParams.from_dict({"log_beta": [1.0], "gamma": [1.0, 2.0], "log_support_weight": [0.0]})
    with pytest.raises(DataError, match="malformed"):
        EMParams.from_dict({"gamma": [1.0]})


def test_transductive_view_of_a_prototype_head_equals_episode_em():
    X, y = clusters()
    e = sample_episodes(y, ways=4, shots=3, queries=6, episodes=1, seed=2)[0]
    head = PrototypeHead().fit(X[e.support], e.support_labels)
    view = TransductivePrototypes(head, odd_params())
    expected = transductive_proba(X[e.support], e.support_labels, X[e.query], 4, odd_params())
    np.testing.assert_allclose(view.predict_proba(X[e.query]), expected, rtol=1e-4, atol=1e-5)
    assert (view.predict(X[e.query]) == head.classes_[expected.argmax(1)]).all()
    with pytest.raises(ConfigError, match="prototype head"):
        TransductivePrototypes(LogisticHead(C=1.0).fit(X[e.support], e.support_labels), odd_params())


def test_training_sets_too_small_to_learn_from_get_the_shipped_defaults():
    X, y = clusters(n_classes=4, per_class=1)
    p = params_for_training_set(X, y)
    assert p.gamma == DEFAULT_PARAMS.gamma and "too few training images" in p.learned_on["why"]
    X, y = clusters(n_classes=4, per_class=8)
    learned = params_for_training_set(X, y, iterations=5, batch=4)
    assert learned.learned_on["source"] == "unrolled on validation episodes" and learned.learned_on["shots"] == 2
