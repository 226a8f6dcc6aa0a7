"""Pure zero-shot functions against naive implementations on seeded random data."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.heads.base import l2_normalise, softmax
from finegrain.zeroshot.alignment import (AlignmentParams, RefineParams, adapted_means, centred, fit_projection,
                                          image_centre, project)
from finegrain.heads.base import power_normalise
from finegrain.zeroshot.conse import conse_embed
from finegrain.zeroshot.ensemble import (class_vectors, ensemble_names, mix_coefficients, mix_in, prompt_scores,
                                         prompt_weights, row_contributions, shortlist_scores, top_rows)
from finegrain.zeroshot.eszsl import eszsl_fit, eszsl_scores

rng = np.random.default_rng(0)


def unit(*shape):
    return l2_normalise(rng.normal(size=shape)).astype(np.float32) if len(shape) == 2 else \
        (lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True))(rng.normal(size=shape)).astype(np.float32)


def test_prompt_scores_match_a_loop():
    U, E = unit(7, 5), unit(3, 4, 5)
    naive = []
    for p in range(3):
        L = np.array([[U[i] @ E[p, c] for c in range(4)] for i in range(7)])
        L = L - L.mean(axis=0)  # the template's class bias over the images
        naive.append(np.mean([L[i].max() - L[i].mean() for i in range(7)]))
    np.testing.assert_allclose(prompt_scores(U, E), naive, rtol=1e-5)


def test_prompt_scores_ignore_a_class_bias_shared_by_all_images():
    U = np.concatenate([unit(20, 5), np.ones((20, 1), dtype=np.float32)], axis=1)  # last coordinate: constant
    E = unit(2, 4, 6)
    biased = E.copy()
    biased[1, :, -1] += np.array([3.0, 0.0, 0.0, 0.0])  # template 1 favours class 0 for every image
    assert (np.einsum("nt,ct->nc", U, biased[1]).argmax(1) == 0).all()  # raw logits: "confident"
    np.testing.assert_allclose(prompt_scores(U, biased), prompt_scores(U, E), rtol=1e-5)


def test_prompt_weights_uniform_and_ordered():
    s = np.array([0.1, 0.5, 0.3])
    np.testing.assert_allclose(prompt_weights(s, None), [1 / 3] * 3)
    w = prompt_weights(s, 1.0)
    assert w.sum() == pytest.approx(1.0) and np.argsort(w).tolist() == np.argsort(s).tolist()
    assert prompt_weights(s, 100.0).std() < w.std()  # higher temperature → closer to uniform
    np.testing.assert_allclose(prompt_weights(np.array([0.2, 0.2]), 1.0), [0.5, 0.5])


def test_ensemble_names_is_the_unit_weighted_mean():
    E, w = unit(3, 4, 5), np.array([0.2, 0.3, 0.5])
    naive = [(lambda v: v / np.linalg.norm(v))(sum(w[p] * E[p, c] for p in range(3))) for c in range(4)]
    np.testing.assert_allclose(ensemble_names(E, w), naive, rtol=1e-5)


def _rows():
    # class 0: name + 2 descriptors; class 1: name only; class 2: name + 1 descriptor
    row_class = np.array([0, 1, 2, 0, 0, 2])
    kind_name = np.array([True, True, True, False, False, False])
    weight = np.array([1, 1, 1, 0.8, 0.2, 1.0])
    return row_class, kind_name, weight, unit(6, 5)


@pytest.mark.parametrize("name_weight", [0.0, 0.3, 1.0])
def test_mix_coefficients_build_unit_class_vectors_from_names_and_descriptions(name_weight):
    row_class, is_name, weight, emb = _rows()
    coef = mix_coefficients(3, row_class, weight, is_name, emb, name_weight)
    V = class_vectors(emb, row_class, coef, 3)
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, rtol=1e-5)
    d0 = (0.8 * emb[3] + 0.2 * emb[4]) / np.linalg.norm(0.8 * emb[3] + 0.2 * emb[4])
    naive0 = name_weight * emb[0] + (1 - name_weight) * d0
    np.testing.assert_allclose(V[0], naive0 / np.linalg.norm(naive0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(V[1], emb[1], rtol=1e-5)  # no descriptors: the name alone


def test_contributions_sum_to_the_class_score_and_top_rows_pick_the_largest():
    row_class, is_name, weight, emb = _rows()
    coef = mix_coefficients(3, row_class, weight, is_name, emb, 0.5)
    U = unit(4, 5)
    C = row_contributions(U, emb, coef)
    S = U @ class_vectors(emb, row_class, coef, 3).T
    for c in range(3):
        np.testing.assert_allclose(C[:, row_class == c].sum(1), S[:, c], rtol=1e-4, atol=1e-6)
    top = top_rows(C, row_class, np.zeros(4, dtype=int), 1, rows_allowed=~is_name)
    for i in range(4):
        assert top[i] == [3 if C[i, 3] >= C[i, 4] else 4]


def test_mix_in_gives_the_unit_mix_of_class_and_image_vectors():
    row_class, is_name, weight, emb = _rows()
    coef = mix_coefficients(3, row_class, weight, is_name, emb, 0.5)
    C = class_vectors(emb, row_class, coef, 3)
    M = unit(3, 5)
    new_coef, m_coef = mix_in(C, row_class, coef, M, 0.4)
    V = class_vectors(np.concatenate([emb, M]), np.concatenate([row_class, np.arange(3)]),
                      np.concatenate([new_coef, m_coef]), 3)
    naive = 0.6 * C + 0.4 * M
    np.testing.assert_allclose(V, naive / np.linalg.norm(naive, axis=1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_adapted_means_follow_the_soft_assignment():
    C = unit(3, 6)
    U = l2_normalise(np.repeat(C, 5, axis=0) + 0.05 * rng.normal(size=(15, 6)))
    p = RefineParams(temperature=30.0, step=0.5, rounds=1)
    naive = l2_normalise(softmax(30.0 * U @ C.T).T @ U)
    np.testing.assert_allclose(adapted_means(U, C, p), naive, rtol=1e-4, atol=1e-6)
    assert (np.einsum("kt,kt->k", adapted_means(U, C), C) > 0.9).all()  # well-separated: means stay put


def test_shortlist_keeps_the_fine_scores_of_the_coarse_top_k():
    coarse, fine = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    out = shortlist_scores(coarse, fine, 3)
    for i in range(5):
        keep = set(np.argsort(-coarse[i])[:3])
        for c in range(8):
            assert out[i, c] == (fine[i, c] if c in keep else -np.inf)


def test_conse_embed_matches_a_loop():
    X, W, b, L = unit(4, 6), rng.normal(size=(10, 6)).astype(np.float32), rng.normal(size=10).astype(np.float32), unit(10, 5)
    out = conse_embed(X, W, b, 3.0, L, top=3)
    for i in range(4):
        p = np.exp(3.0 * W @ X[i] + b)
        p /= p.sum()
        top = np.argsort(-p)[:3]
        v = sum(p[t] * L[t] for t in top) / p[top].sum()
        np.testing.assert_allclose(out[i], v / np.linalg.norm(v), rtol=1e-4, atol=1e-6)


def test_eszsl_and_the_projection_are_the_closed_form():
    X, y, S = rng.normal(size=(30, 6)), np.arange(30) % 3, rng.normal(size=(3, 4))
    Y = -np.ones((30, 3))
    Y[np.arange(30), y] = 1
    naive = np.linalg.inv(X.T @ X + 2.0 * np.eye(6)) @ X.T @ Y @ S @ np.linalg.inv(S.T @ S + 0.5 * np.eye(4))
    np.testing.assert_allclose(eszsl_fit(X, y, S, 2.0, 0.5), naive, rtol=1e-6)
    np.testing.assert_allclose(eszsl_scores(X, naive, S), X @ naive @ S.T, rtol=1e-6)
    P = fit_projection(X, y, S, AlignmentParams(gamma=2.0, lam=0.5))
    np.testing.assert_allclose(P, naive, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit_projection(X, y, S, AlignmentParams(gamma=2.0, lam=0.5), gram=X.T @ X), P, rtol=1e-6)
    centre = image_centre(X)
    expected = (centred(X, centre) @ P) / np.linalg.norm(centred(X, centre) @ P, axis=1, keepdims=True)
    np.testing.assert_allclose(project(X, P, centre), expected, rtol=1e-5, atol=1e-6)


def test_image_preparation_is_signed_root_unit_rows_then_centred():
    X = rng.normal(size=(9, 5))
    root = np.sign(X) * np.sqrt(np.abs(X))
    np.testing.assert_allclose(power_normalise(X), root / np.linalg.norm(root, axis=1, keepdims=True), rtol=1e-6)
    centre = image_centre(X)
    np.testing.assert_allclose(centre, power_normalise(X).mean(axis=0), rtol=1e-5)
    Z = centred(X, centre)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-6)
    D = power_normalise(X) - centre
    np.testing.assert_allclose(Z, D / np.linalg.norm(D, axis=1, keepdims=True), rtol=1e-5)
