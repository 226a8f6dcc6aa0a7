"""The zero-shot head and the alignment: persistence, restriction, explanations, and no unseen-class leakage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finegrain.data.samples import Sample
from finegrain.embed import Embeddings
from finegrain.errors import ConfigError
from finegrain.pipeline import Classifier
from finegrain.zeroshot import head as head_module
from finegrain.zeroshot.alignment import AlignmentParams, RefineParams, centred, image_centre
from finegrain.zeroshot.build import train_alignment
from finegrain.zeroshot.encoders import get_text_encoder
from finegrain.zeroshot.texts import ClassDescriptions, Descriptor

SEEN = ["blue_jay", "green_warbler", "red_finch"]
UNSEEN = ["black_tit", "white_tern"]
TRAIT = {"blue_jay": "blue", "green_warbler": "green", "red_finch": "red", "black_tit": "black", "white_tern": "white"}


def descriptions(unseen_words=("black", "white")) -> ClassDescriptions:
    out = {c.replace("_", " "): [Descriptor(f"{TRAIT[c]} feathers", 0.9), Descriptor(f"{TRAIT[c]} wings", 0.6)]
           for c in SEEN}
    for c, w in zip(UNSEEN, unseen_words):
        out[c.replace("_", " ")] = [Descriptor(f"{w} feathers"), Descriptor(f"{w} tail", 0.5)]
    return ClassDescriptions(out)


def embeddings(classes, n=6, dim=16, seed=0, split="train") -> Embeddings:
    """Synthetic image embeddings: one cluster per class."""
    rng = np.random.default_rng(seed)
    centres = {c: np.random.default_rng(sum(map(ord, c))).normal(size=dim) for c in classes}
    X, samples = [], []
    for c in classes:
        for i in range(n):
            X.append(centres[c] + 0.3 * rng.normal(size=dim))
            samples.append(Sample(Path(f"/img/{split}/{c}/{i}.png"), c, split, None))
    X = np.asarray(X, dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return Embeddings(X, samples, [f"{split}-{s.label}-{i}" for i, s in enumerate(samples)], "tiny", "key", {})


def test_alignment_sees_only_seen_images_and_seen_texts(monkeypatch, tiny_text_encoder):
    seen_emb = embeddings(SEEN)
    calls = []
    real = head_module.fit_projection

    def spy(X, y, class_emb, params, gram=None):
        calls.append((np.array(X), np.array(y), np.array(class_emb)))
        return real(X, y, class_emb, params, gram)

    monkeypatch.setattr(head_module, "fit_projection", spy)
    clf = train_alignment(seen_emb, descriptions(), classes=UNSEEN, text_encoder=tiny_text_encoder)
    (X, y, class_emb), = calls
    np.testing.assert_allclose(clf.head.centre_, image_centre(seen_emb.X), rtol=1e-6)  # centred on seen images only
    np.testing.assert_allclose(X, centred(seen_emb.X, clf.head.centre_), rtol=1e-6)  # exactly the seen images
    assert sorted(set(y.tolist())) == [0, 1, 2] and class_emb.shape[0] == len(SEEN)
    # the class vectors it trained against are those of the seen classes' texts alone
    only_seen = ClassDescriptions({k: v for k, v in descriptions().by_class.items() if k.replace(" ", "_") in SEEN})
    ref = train_alignment(seen_emb, only_seen, classes=SEEN, text_encoder=tiny_text_encoder)
    np.testing.assert_allclose(class_emb, ref.head.class_emb_, rtol=1e-5)
    assert clf.info["zeroshot"]["alignment"]["trained_on_classes"] == SEEN
    assert clf.classes == UNSEEN
    assert set(clf.info["train_sha256"]) == set(seen_emb.shas)


MANY_SEEN = ["small_finch", "large_jay", "long_tail_warbler", "short_bill_finch", "yellow_bill_jay"]
MANY_TRAITS = {"small_finch": "small", "large_jay": "large", "long_tail_warbler": "long", "short_bill_finch": "short",
               "yellow_bill_jay": "yellow"}


def many_descriptions(unseen_words=("black", "white")) -> ClassDescriptions:
    """Eight seen classes (enough to hide some while choosing settings) sharing the trait 'feathers'."""
    out = descriptions(unseen_words).by_class
    for c in MANY_SEEN:
        out[c.replace("_", " ")] = [Descriptor(f"{MANY_TRAITS[c]} feathers", 0.8), Descriptor("small bill", 0.3)]
    return ClassDescriptions(out)


@pytest.mark.parametrize("seen", [SEEN, SEEN + MANY_SEEN], ids=["fixed-settings", "settings-chosen-on-seen"])
def test_unseen_descriptions_do_not_change_the_learned_projection(seen, tiny_text_encoder):
    seen_emb = embeddings(seen)
    a = train_alignment(seen_emb, many_descriptions(("black", "white")), classes=UNSEEN, text_encoder=tiny_text_encoder)
    b = train_alignment(seen_emb, many_descriptions(("yellow", "large")), classes=UNSEEN, text_encoder=tiny_text_encoder)
    np.testing.assert_array_equal(a.head.projection_, b.head.projection_)
    assert a.head.vocabulary_ == b.head.vocabulary_ and "black feathers" not in a.head.vocabulary_
    assert a.info["zeroshot"]["alignment"] == b.info["zeroshot"]["alignment"]  # same settings chosen
    assert not np.allclose(a.head.class_emb_, b.head.class_emb_)  # the unseen classes' texts did change
    chosen = a.info["zeroshot"]["alignment"]["chosen_on_held_out_seen_classes"]
    assert ("skipped" in chosen) == (len(seen) < 6)


def test_seen_classes_among_the_targets_get_a_penalty_chosen_and_saved(tmp_path, tiny_text_encoder):
    seen = SEEN + MANY_SEEN
    clf = train_alignment(embeddings(seen), many_descriptions(), classes=seen + UNSEEN, text_encoder=tiny_text_encoder)
    info = clf.info["zeroshot"]["alignment"]
    assert info["seen_penalty_choice"] is not None and clf.head.seen_penalty_ == info["seen_penalty"]
    assert clf.head.seen_mask().sum() == len(seen)
    loaded = Classifier.load(clf.save(tmp_path / "m"))
    assert loaded.head.seen_penalty_ == clf.head.seen_penalty_
    only_new = train_alignment(embeddings(seen), many_descriptions(), classes=UNSEEN, text_encoder=tiny_text_encoder)
    assert not only_new.head.seen_mask().any()  # the penalty is kept for later reuse but touches no class here
    np.testing.assert_allclose(only_new.head.similarities(embeddings(UNSEEN).X),
                               only_new.head.to_text_space(embeddings(UNSEEN).X) @ only_new.head.class_emb_.T, rtol=1e-6)


def test_given_settings_are_used_as_given(tiny_text_encoder):
    params = AlignmentParams(gamma=3.0, lam=0.2, text_weight=0.5)
    clf = train_alignment(embeddings(SEEN + MANY_SEEN), many_descriptions(), classes=UNSEEN,
                          text_encoder=tiny_text_encoder, params=params)
    info = clf.info["zeroshot"]["alignment"]
    assert info["params"] == params.__dict__ and info["chosen_on_held_out_seen_classes"] is None
    assert clf.head.text_weight_ == 0.5 and clf.head.vocabulary_ == ["small bill"]  # the one shared phrase


def test_seen_descriptions_do_change_the_projection(tiny_text_encoder):
    """The counterpart of the leakage test: it would notice if texts did not reach training at all."""
    seen_emb = embeddings(SEEN)
    a = train_alignment(seen_emb, descriptions(), classes=UNSEEN, text_encoder=tiny_text_encoder)
    other = descriptions()
    other.by_class["red finch"] = [Descriptor("small yellow bill")]
    b = train_alignment(seen_emb, other, classes=UNSEEN, text_encoder=tiny_text_encoder)
    assert not np.allclose(a.head.projection_, b.head.projection_)


def test_saved_model_predicts_the_same_and_restricts(tmp_path, tiny_text_encoder):
    seen_emb, test_emb = embeddings(SEEN), embeddings(SEEN, seed=1, split="test")
    clf = train_alignment(seen_emb, descriptions(), classes=SEEN + UNSEEN, text_encoder=tiny_text_encoder,
                          params=AlignmentParams(gamma=1.0, lam=1e-3))
    assert clf.classes == sorted(SEEN + UNSEEN) and clf.head.name == "zeroshot"
    loaded = Classifier.load(clf.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.head.predict_proba(test_emb.X), clf.head.predict_proba(test_emb.X), rtol=1e-5)
    assert (loaded.head.predict(test_emb.X) == np.asarray(test_emb.labels, dtype=object)).mean() > 0.9
    sub = loaded.head.restrict(["red_finch", "blue_jay"])
    np.testing.assert_allclose(sub.decision_function(test_emb.X),
                               loaded.head.decision_function(test_emb.X)[:, [1, 3]], rtol=1e-5)  # blue_jay, red_finch
    why = loaded.head.explain(test_emb.X[:1], k=2)[0]
    assert why["label"] == "blue_jay" and len(why["evidence"]) == 2
    assert {e["text"] for e in why["evidence"]} <= {"blue feathers", "blue wings"}


def test_label_free_adaptation_and_prompt_weights_are_recorded(tiny_text_encoder):
    seen_emb, unl = embeddings(SEEN), embeddings(SEEN, seed=2, split="test")
    base = train_alignment(seen_emb, descriptions(), classes=SEEN, text_encoder=tiny_text_encoder)
    adapted = train_alignment(seen_emb, descriptions(), classes=SEEN, text_encoder=tiny_text_encoder,
                              templates=["a photo of a {}.", "a {} bird", "the {}"], unlabelled=unl.X,
                              refine=RefineParams(temperature=20.0, step=0.5, rounds=3))
    z = adapted.info["zeroshot"]
    assert z["n_unlabelled"] == len(unl.X) and len(z["template_weights"]) == 3
    assert sum(z["template_weights"]) == pytest.approx(1.0)
    assert not np.allclose(adapted.head.class_emb_, base.head.class_emb_)
    np.testing.assert_allclose(np.linalg.norm(adapted.head.class_emb_, axis=1), 1.0, rtol=1e-4)


def test_text_embeddings_are_cached(tmp_path, tiny_text_encoder):
    from finegrain.store import EmbeddingCache

    enc = get_text_encoder(tiny_text_encoder)
    with EmbeddingCache(tmp_path / "c") as cache:
        first = enc.encode(["red wings", "blue tail", "red wings"], cache=cache)
        assert cache.count(enc.cache_key) == 2
        enc._encode = lambda texts: (_ for _ in ()).throw(AssertionError(f"re-encoded {texts}"))
        try:
            np.testing.assert_array_equal(enc.encode(["blue tail", "red wings"], cache=cache), first[[1, 0]])
        finally:
            del enc._encode
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)


def test_zero_shot_head_cannot_fit_without_texts():
    from finegrain.heads import make_head

    with pytest.raises(ConfigError, match="class texts"):
        make_head("zeroshot").fit(np.zeros((4, 3)), np.array(["a", "a", "b", "b"]))
