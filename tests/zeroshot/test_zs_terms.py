"""Descriptor terms in class signatures, and choosing the alignment's settings on held-out seen classes."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.heads.base import l2_normalise
from finegrain.zeroshot.alignment import AlignmentParams
from finegrain.zeroshot.build import text_rows
from finegrain.zeroshot.ensemble import class_vectors
from finegrain.zeroshot.head import NAME, ZeroShotHead
from finegrain.zeroshot.selection import (ALIGNMENT_GRID, choose_alignment_params, choose_seen_penalty,
                                          held_out_class_folds)
from finegrain.zeroshot.terms import shared_terms, with_terms
from finegrain.zeroshot.texts import Descriptor

N_TERMS, DIM = 8, 24


def attribute_world(n_classes: int, seed: int = 0, text_informative: bool = False):
    """Classes = random sets of 3 of N_TERMS traits; images = a fixed linear map of the traits + noise.
    Descriptor texts embed at random per (class, trait) unless `text_informative`, so only the terms
    (shared phrases) tell what a trait is."""
    rng = np.random.default_rng(seed)
    traits = [sorted(rng.choice(N_TERMS, 3, replace=False).tolist()) for _ in range(n_classes)]
    W = np.abs(rng.normal(size=(N_TERMS, DIM)))
    phrase_emb = l2_normalise(rng.normal(size=(N_TERMS, 12)))
    y = np.repeat(np.arange(n_classes), 12)
    A = np.zeros((n_classes, N_TERMS))
    for c, t in enumerate(traits):
        A[c, t] = 1.0
    X = np.abs(A[y] @ W + 0.1 * rng.normal(size=(len(y), DIM)))  # non-negative, like pooled CNN features
    descriptors = [[Descriptor(f"trait {t}", 1.0) for t in ts] for ts in traits]
    D = np.concatenate([phrase_emb[ts] if text_informative else l2_normalise(rng.normal(size=(3, 12)))
                        for ts in traits])
    classes = [f"class {c:02d}" for c in range(n_classes)]
    E = l2_normalise(rng.normal(size=(n_classes, 12)))[None]
    rows = text_rows(classes, E, np.ones(1), descriptors, D, name_weight=0.0)
    return classes, rows, X.astype(np.float32), y


def test_shared_terms_are_the_phrases_of_two_or_more_given_classes():
    classes, rows, _, _ = attribute_world(12)
    counts = {}
    for c in range(12):
        for t in {rows.texts[i] for i in np.flatnonzero((rows.row_class == c) & (rows.row_kind != NAME))}:
            counts[t] = counts.get(t, 0) + 1
    assert shared_terms(rows) == sorted(t for t, n in counts.items() if n >= 2)
    only = [0, 1]
    in_both = set.intersection(*({rows.texts[i] for i in np.flatnonzero(rows.row_class == c)} for c in only))
    assert shared_terms(rows, only) == sorted(in_both - {"class 00", "class 01"})


def test_with_terms_class_vectors_are_unit_bags_beside_weighted_text():
    classes, rows, _, _ = attribute_world(10)
    vocab = shared_terms(rows)
    beta = 2.0
    out = with_terms(rows, vocab, beta)
    C = class_vectors(out.row_emb, out.row_class, out.coef, 10)
    np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1.0, rtol=1e-5)
    text = class_vectors(rows.row_emb, rows.row_class, rows.coef, 10)
    for c in range(10):
        bag = np.zeros(len(vocab))
        for i in np.flatnonzero(rows.row_class == c):
            if rows.texts[i] in vocab:
                bag[vocab.index(rows.texts[i])] += rows.coef[i]
        expected = np.concatenate([bag / np.linalg.norm(bag), beta * text[c]])
        np.testing.assert_allclose(C[c], expected / np.linalg.norm(expected), rtol=1e-4, atol=1e-6)


def test_empty_vocabulary_leaves_the_text_class_vectors_unchanged():
    _, rows, _, _ = attribute_world(6)
    out = with_terms(rows, [], 3.0)
    np.testing.assert_allclose(class_vectors(out.row_emb, out.row_class, out.coef, 6),
                               class_vectors(rows.row_emb, rows.row_class, rows.coef, 6), rtol=1e-5, atol=1e-6)


def aligned_head(classes, rows, X, y, seen, vocabulary, params=AlignmentParams(gamma=1.0, lam=0.1)):
    head = ZeroShotHead(mapping="linear")
    head.vocabulary_, head.text_weight_ = vocabulary, params.text_weight
    head.set_texts(classes, with_terms(rows, vocabulary, params.text_weight), X.shape[1])
    mask = np.isin(y, seen)
    return head.fit(X[mask], np.asarray(classes, dtype=object)[y[mask]], params=params)


def test_terms_let_unseen_classes_be_recognised_when_the_text_says_nothing():
    classes, rows, X, y = attribute_world(30, seed=3)
    seen, unseen = np.arange(22), np.arange(22, 30)
    names = np.asarray(classes, dtype=object)
    on_unseen = np.isin(y, unseen)

    def unseen_accuracy(vocabulary):
        head = aligned_head(classes, rows, X, y, seen, vocabulary).restrict(list(names[unseen]))
        return float((head.predict(X[on_unseen]) == names[y[on_unseen]]).mean())

    with_terms_acc = unseen_accuracy(shared_terms(rows, seen))
    text_only_acc = unseen_accuracy([])
    assert with_terms_acc > 0.8 and text_only_acc < 0.4, (with_terms_acc, text_only_acc)


def test_text_part_is_the_unit_sentence_half():
    classes, rows, X, y = attribute_world(8)
    vocab = shared_terms(rows)
    head = aligned_head(classes, rows, X, y, np.arange(8), vocab)
    U = head.to_text_space(X[:5])
    assert U.shape[1] == len(vocab) + rows.row_emb.shape[1]
    np.testing.assert_allclose(head.text_part(U), l2_normalise(U[:, len(vocab):]), rtol=1e-6)


@pytest.mark.parametrize("n", [4, 6, 40])
def test_held_out_folds_hide_at_least_two_and_keep_at_least_two(n):
    folds = held_out_class_folds(n, 3, 0.2, seed=0)
    assert len(folds) == 3
    for hidden in folds:
        assert len(set(hidden.tolist())) == len(hidden) >= 2 and n - len(hidden) >= 2
    assert [f.tolist() for f in folds] == [f.tolist() for f in held_out_class_folds(n, 3, 0.2, seed=0)]


def test_choice_covers_the_grid_and_is_deterministic():
    _, rows, X, y = attribute_world(15, seed=1, text_informative=True)
    grid = {"gamma": (0.1, 10.0), "lam": (0.1,)}
    params, report = choose_alignment_params(X, y, rows, grid)
    again, _ = choose_alignment_params(X, y, rows, grid)
    assert params == again
    assert len(report["candidates"]) == len(ALIGNMENT_GRID["text_weight"]) * 2
    best = max(report["candidates"], key=lambda c: c["held_out_top1"])
    assert (params.gamma, params.lam, params.text_weight) == (best["gamma"], best["lam"], best["text_weight"])
    assert report["held_out_top1"] == best["held_out_top1"] > 0.5  # 3 hidden classes: chance is 1/3


def test_too_few_classes_to_hide_any_falls_back_to_defaults(caplog):
    _, rows, X, y = attribute_world(4)
    params, report = choose_alignment_params(X, y, rows)
    assert params == AlignmentParams() and "skipped" in report
    assert "too few" in caplog.text


def test_seen_penalty_is_subtracted_from_the_seen_classes_only():
    classes, rows, X, y = attribute_world(8)
    head = aligned_head(classes, rows, X, y, np.arange(5), shared_terms(rows, np.arange(5)))
    assert list(head.seen_mask()) == [True] * 5 + [False] * 3
    before = head.similarities(X[:6])
    head.seen_penalty_ = 0.07
    np.testing.assert_allclose(before - head.similarities(X[:6]), np.tile([0.07] * 5 + [0.0] * 3, (6, 1)), atol=1e-6)


def test_seen_penalty_is_chosen_by_held_out_harmonic_mean():
    _, rows, X, y = attribute_world(20, seed=2, text_informative=True)
    penalty, report = choose_seen_penalty(X, y, rows, AlignmentParams(gamma=1.0, lam=0.1), penalties=(0.0, 0.05, 0.1))
    scores = {c["seen_penalty"]: c["held_out_harmonic_mean"] for c in report["candidates"]}
    assert set(scores) == {0.0, 0.05, 0.1} and scores[penalty] == max(scores.values()) == report["held_out_harmonic_mean"]
    assert choose_seen_penalty(X[y < 4], y[y < 4], with_classes(rows, 4), AlignmentParams())[0] == 0.0  # too few


def with_classes(rows, n):
    """The rows of the first n classes only."""
    from finegrain.zeroshot.head import TextRows
    keep = rows.row_class < n
    return TextRows([t for t, k in zip(rows.texts, keep) if k], rows.row_class[keep], rows.row_kind[keep],
                    rows.row_emb[keep], rows.coef[keep])
