"""Backbones side by side ('a+b'): joined unit embeddings, members' cache entries reused, whole pipeline works."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from finegrain.backbones import get_backbone
from finegrain.data.sources import load_data
from finegrain.embed import embed_samples
from finegrain.errors import ConfigError, DataError
from finegrain.pipeline import Classifier
from finegrain.store import EmbeddingCache

PAIR = "tiny+tiny:24"


def test_joined_embedding_is_the_scaled_concatenation_of_the_members(split_folder, tmp_path):
    (split_folder / "train" / "red_finch" / "broken.png").write_bytes(b"not an image")
    samples = load_data(split_folder).samples
    with EmbeddingCache(tmp_path / "c") as cache:
        a = embed_samples(samples, "tiny", cache=cache, progress=False)
        joined = embed_samples(samples, PAIR, cache=cache, progress=False)
        b = embed_samples(samples, "tiny:24", cache=cache, progress=False)
        again = embed_samples(samples, PAIR, cache=cache, progress=False)
    assert joined.X.shape == (len(samples) - 1, 16 + 24) and joined.backbone_id == PAIR
    np.testing.assert_allclose(joined.X, np.hstack([a.X, b.X]) / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(joined.X, axis=1), 1.0, rtol=1e-5)
    assert [e.path for e in joined.errors] == [str(split_folder / "train" / "red_finch" / "broken.png")]
    n = len(samples) - 1
    assert (joined.n_computed, joined.n_cached) == (n, 0)  # only the second member had work to do...
    assert b.n_computed == 0 and (again.n_computed, again.n_cached) == (0, n)  # ...and cached it for everyone
    assert joined.cache_key not in (a.cache_key, b.cache_key)
    assert joined.preprocess == {"members": [a.preprocess, b.preprocess]}


@pytest.mark.parametrize("bad", ["tiny+tiny", "tiny+", "tiny:wide"])
def test_bad_combined_ids_are_refused(bad):
    with pytest.raises(ConfigError):
        get_backbone(bad)


def test_fit_predict_and_explain_with_a_combined_backbone(capsys, split_folder, tmp_path):
    model = tmp_path / "m"
    code, _, _ = run_cli(capsys, "fit", split_folder, "-o", model, "--backbone", PAIR, "-q")
    assert code == 0
    clf = Classifier.load(model)
    assert clf.backbone_id == PAIR and clf.head.n_features_in_ == 40
    code, out, _ = run_cli(capsys, "eval", model, split_folder, "--format", "json", "-q")
    assert code == 0 and json.loads(out)["top1"] > 0.9
    code, _, err = run_cli(capsys, "explain", model, split_folder / "test" / "blue_jay" / "00.png", "-o", tmp_path / "x")
    assert code == 2 and "no differentiable conv feature map" in err


def _two_block_data(seed=0, n=20):
    """Two members: block A separates classes 0/1 from 2, block B separates 0 from 1/2."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(["a", "b", "c"]), n)
    A = np.abs(np.where((y == "c")[:, None], 1.0, 0.2) + 0.3 * rng.normal(size=(len(y), 6)))
    B = np.abs(np.where((y == "a")[:, None], 1.0, 0.2) + 0.3 * rng.normal(size=(len(y), 4)))
    return np.hstack([A, B]).astype(np.float32), y


def test_logistic_blocks_average_the_members_logits(tmp_path):
    from finegrain.explain.gradients import numeric_score_gradient, score_direction, score_gradient
    from finegrain.heads import LogisticHead, head_from_state

    X, y = _two_block_data()
    head = LogisticHead(C=1.0, blocks=[6, 4]).fit(X, y)
    a = LogisticHead(C=1.0).fit(X[:, :6], y)
    b = LogisticHead(C=1.0).fit(X[:, 6:], y)
    mean = (a.decision_function(X[:, :6]) + b.decision_function(X[:, 6:])) / 2
    np.testing.assert_allclose(head.decision_function(X), mean, rtol=1e-4, atol=1e-5)
    target = np.array([0, 1, 2])
    numeric = numeric_score_gradient(head, X[:3], score_direction(3, target, None))
    np.testing.assert_allclose(score_gradient(head, X[:3], target), numeric, rtol=2e-2, atol=2e-2 * np.abs(numeric).max())
    assert (head.predict(X) == y).mean() > (a.predict(X[:, :6]) == y).mean()  # each member alone is confused
    loaded = head_from_state(*head.to_state())
    np.testing.assert_allclose(loaded.decision_function(X), head.decision_function(X), rtol=1e-5)
    with pytest.raises(DataError):
        LogisticHead(blocks=[5, 4]).fit(X, y)


def test_fit_on_a_combined_backbone_learns_one_logistic_model_per_member(capsys, split_folder, tmp_path):
    code, _, _ = run_cli(capsys, "fit", split_folder, "-o", tmp_path / "m", "--backbone", PAIR, "-q")
    head = Classifier.load(tmp_path / "m").head
    assert code == 0 and head.blocks == [16, 24] and [m.n_features_in_ for m in head.members_] == [16, 24]
    code, _, _ = run_cli(capsys, "fit", split_folder, "-o", tmp_path / "one", "--backbone", PAIR, "-q",
                         "--head-param", "blocks=null")
    assert code == 0 and Classifier.load(tmp_path / "one").head.blocks is None  # one model on the joined rows


def test_embed_once_then_fit_and_predict_with_a_combined_backbone(capsys, split_folder, tmp_path):
    emb = tmp_path / "emb"
    assert run_cli(capsys, "embed", split_folder, "-o", emb, "--backbone", PAIR, "-q")[0] == 0
    assert run_cli(capsys, "fit", emb, "-o", tmp_path / "m", "--backbone", PAIR, "-q")[0] == 0
    clf = Classifier.load(tmp_path / "m")
    assert clf.backbone_id == PAIR and clf.head.blocks == [16, 24]
    code, out, _ = run_cli(capsys, "predict", tmp_path / "m", split_folder / "test" / "red_finch", "--format", "jsonl", "-q")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 4 and all(r["label"] == "red_finch" for r in rows)
