"""Test-time views (`index --tta flip`): mirror-averaged embeddings through the cache, recorded in the index and
applied to every query, refused when they would mix with plain embeddings."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_split_folder, run_cli
from PIL import Image

from finegrain.data.sources import collect_inputs
from finegrain.embed import embed_samples, embed_with_views
from finegrain.errors import ConfigError, DataError
from finegrain.retrieval import build_index, eval_retrieval, search, update_index
from finegrain.store import EmbeddingCache
from finegrain.views import average_views


@pytest.fixture
def birds(tmp_path):
    return make_split_folder(tmp_path / "birds")


def test_views_are_cached_under_their_own_key_and_averaged(tmp_path, birds):
    samples = collect_inputs([birds / "train" / "red_finch"])
    with EmbeddingCache(tmp_path / "cache") as cache:
        plain = embed_samples(samples, "tiny", cache=cache, progress=False)
        both = embed_with_views(samples, "tiny", ("flip",), cache=cache, progress=False)
        assert cache.count() == 2 * len(samples)  # plain entries untouched, one flip entry per image
        mirrored = embed_samples(samples, "tiny", cache=cache, progress=False, view="flip")
        again = embed_with_views(samples, "tiny", ("flip",), cache=cache, progress=False)
    assert both.n_computed == len(samples) and again.n_computed == 0 and again.n_cached == 2 * len(samples)
    assert both.shas == plain.shas and both.views == ("flip",)
    assert not np.allclose(mirrored.X, plain.X, atol=1e-3)  # the tiny network is not mirror-invariant
    np.testing.assert_allclose(both.X, average_views([plain.X, mirrored.X]), atol=1e-6)
    np.testing.assert_allclose(again.X, both.X, atol=1e-6)


def test_flip_index_finds_a_mirror_image_at_distance_zero(tmp_path, birds):
    original = birds / "train" / "blue_jay" / "00.png"
    mirror = tmp_path / "mirror.png"
    Image.open(original).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirror)
    kw = {"backbone": "tiny", "splits": ["train"], "transform": "sqrt", "cache_dir": tmp_path / "cache"}
    build_index(birds, tmp_path / "plain", **kw)
    idx = build_index(birds, tmp_path / "flip", tta="flip", **kw)
    assert json.loads((tmp_path / "flip" / "index.json").read_text())["tta"] == "flip" and idx.tta == "flip"
    _, (plain_hits,) = search(tmp_path / "plain", [mirror], k=1, cache_dir=tmp_path / "cache")
    emb, (flip_hits,) = search(tmp_path / "flip", [mirror], k=1, cache_dir=tmp_path / "cache")
    assert emb.views == ("flip",)
    assert flip_hits[0].path == str(original) and flip_hits[0].distance < 1e-4
    assert plain_hits[0].distance > 10 * max(flip_hits[0].distance, 1e-5)
    report = eval_retrieval(tmp_path / "flip", birds, split="test", cache_dir=tmp_path / "cache")
    assert report["index_settings"]["tta"] == "flip" and report["metrics"]["recall@1"] > 0.8
    idx, added, _ = update_index(tmp_path / "flip", birds, splits=["test"], cache_dir=tmp_path / "cache")
    assert added == 12 and idx.tta == "flip"


def test_plain_queries_on_a_flip_index_and_stored_embeddings_are_refused(tmp_path, birds):
    idx = build_index(birds, tmp_path / "flip", backbone="tiny", splits=["train"], tta="flip",
                      cache_dir=tmp_path / "cache")
    plain = embed_samples(collect_inputs([birds / "test"]), "tiny", progress=False)
    with pytest.raises(DataError) as err:
        idx.search(plain, 3)
    assert "test-time views" in str(err.value) and "expected" in str(err.value) and "fix" in str(err.value)
    with pytest.raises(ConfigError, match="unknown test-time augmentation"):
        build_index(birds, tmp_path / "x", backbone="tiny", tta="rotate")


def test_cli_tta_flip_and_no_tta_change_on_add(capsys, tmp_path, birds):
    out = tmp_path / "idx"
    code, _, err = run_cli(capsys, "index", birds, "-o", out, "--backbone", "tiny", "--split", "train", "--tta",
                           "flip", "--cache-dir", tmp_path / "cache")
    assert code == 0 and "tta flip" in err
    code, stdout, _ = run_cli(capsys, "eval-retrieval", out, birds, "--format", "json", "-q",
                              "--cache-dir", tmp_path / "cache")
    assert code == 0 and json.loads(stdout)["index_settings"]["tta"] == "flip"
    code, _, err = run_cli(capsys, "index", birds, "-o", out, "--add", "--tta", "none")
    assert code == 2 and "--tta" in err and "Traceback" not in err
    emb_dir = tmp_path / "emb"
    assert run_cli(capsys, "embed", birds, "-o", emb_dir, "--backbone", "tiny", "-q",
                   "--cache-dir", tmp_path / "cache")[0] == 0
    code, _, err = run_cli(capsys, "index", emb_dir, "-o", tmp_path / "idx2", "--tta", "flip", "-q")
    assert code == 2 and "plain crop only" in err and "Traceback" not in err


def test_whole_image_views_skip_the_margin_cut_and_mirror_it():
    from finegrain.backbones import Preprocess
    from finegrain.views import view_crop

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    pre = Preprocess(size=32, crop_pct=0.5, interpolation="bilinear")
    plain, whole = view_crop(pre, img, None), view_crop(pre, img, "whole")
    np.testing.assert_array_equal(plain, pre.apply(img))
    np.testing.assert_array_equal(whole, Preprocess(size=32, crop_pct=1.0, interpolation="bilinear").apply(img))
    assert plain.shape == whole.shape == (32, 32, 3) and not np.array_equal(plain, whole)
    np.testing.assert_array_equal(view_crop(pre, img, "whole-flip"), whole[:, ::-1])
    np.testing.assert_array_equal(view_crop(pre, img, "flip"), plain[:, ::-1])
    with pytest.raises(ConfigError, match="unknown view"):
        view_crop(pre, img, "rotate")


def test_whole_plus_flip_caches_three_views_per_image(tmp_path, birds):
    samples = collect_inputs([birds / "train" / "blue_jay"])
    with EmbeddingCache(tmp_path / "cache") as cache:
        emb = embed_with_views(samples, "tiny", ("flip", "whole", "whole-flip"), cache=cache, progress=False)
        assert cache.count() == 4 * len(samples) and emb.n_computed == 4 * len(samples)
    idx = build_index(birds, tmp_path / "idx", backbone="tiny", splits=["train"], tta="whole+flip",
                      cache_dir=tmp_path / "cache")
    assert idx.tta == "whole+flip" and search(idx, [samples[0].path], k=1, cache_dir=tmp_path / "cache")[0].views \
        == ("flip", "whole", "whole-flip")
