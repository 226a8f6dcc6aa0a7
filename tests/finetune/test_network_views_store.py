"""The pieces of fine-tuning: stage splits compute what the backbone computes, views are seeded, the activation
store commits whole chunks only and refuses to start without disk space."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from finegrain.backbones import get_backbone
from finegrain.backbones.onnx_runtime import check_images
from finegrain.errors import ConfigError, DataError
from finegrain.finetune.network import agreement_with, staged_copy, tuned_backbone, weights_hash
from finegrain.finetune.store import ActivationStore, check_disk_space, store_key
from finegrain.finetune.views import ViewRecipe, image_views


@pytest.mark.parametrize("name", ["tiny", "efficientnet_lite0"])
def test_staged_copy_computes_the_backbone(name):
    bb = get_backbone(name)
    staged = staged_copy(bb)
    assert agreement_with(staged, bb, check_images(bb.preprocess.size)) > 0.99999
    assert staged.split_index(0) == len(staged.stages) and staged.split_index("all") == 0


def test_lite0_split_index_trains_blocks_and_final_conv():
    staged = staged_copy(get_backbone("efficientnet_lite0"))
    assert staged.n_blocks == 16 and len(staged.stages) == 18  # stem, 16 blocks, final conv
    assert staged.split_index(5) == 12
    with pytest.raises(ConfigError, match="out of range"):
        staged.split_index(17)


def test_staged_copy_leaves_the_stock_backbone_untouched():
    bb = get_backbone("tiny")
    before = {k: v.clone() for k, v in bb.features.state_dict().items()}
    staged = staged_copy(bb)
    for p in staged.parameters():
        p.data.add_(1.0)
    assert all((before[k] == v).all() for k, v in bb.features.state_dict().items())
    tuned = tuned_backbone(bb, staged)
    assert tuned.id.startswith("finetuned:tiny.") and tuned.cache_key != bb.cache_key
    assert tuned.weights_fingerprint() == weights_hash(staged)


def test_views_are_seeded_and_view0_is_the_eval_preprocessing():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    pre = get_backbone("tiny").preprocess
    recipe = ViewRecipe(n_views=4, seed=3)
    a, b = image_views(img, "abc", pre, recipe, 4), image_views(img, "abc", pre, recipe, 4)
    assert a.shape == (4, 32, 32, 3) and (a == b).all()
    assert (a[0] == pre.apply(img)).all()
    assert not (a[1] == a[2]).all()
    other = image_views(img, "abc", pre, ViewRecipe(n_views=4, seed=4), 4)
    assert not (other[1] == a[1]).all()
    assert (image_views(img, "abc", pre, recipe, 2) == a[:2]).all()  # view v does not depend on K


def test_bad_view_recipe_is_a_usage_error():
    with pytest.raises(ConfigError, match="--views"):
        ViewRecipe(n_views=0)
    with pytest.raises(ConfigError, match="--crop-scale"):
        ViewRecipe(scale_min=2.0)


def test_store_round_trip_and_growth(tmp_path):
    store = ActivationStore(tmp_path / "s")
    acts = np.random.default_rng(0).normal(size=(2, 3, 4, 2, 2)).astype(np.float32)
    store.add(["a", "b"], acts)
    assert store.missing(["a", "b", "c"], 3) == ["c"] and store.missing(["a"], 4) == ["a"]
    got = store.gather(["b", "a"], [2, 0])
    np.testing.assert_allclose(got, np.stack([acts[1, 2], acts[0, 0]]), rtol=1e-3, atol=1e-3)
    reopened = ActivationStore(tmp_path / "s")
    assert reopened.views_of("a") == 3 and reopened.bytes_per_view() == 4 * 2 * 2 * 2


def test_store_ignores_an_uncommitted_chunk(tmp_path):
    store = ActivationStore(tmp_path / "s")
    store.add(["a"], np.zeros((1, 1, 1, 1, 1), dtype=np.float32))
    np.save(tmp_path / "s" / "chunk-9-1.npy", np.zeros((1, 1, 1, 1, 1), dtype=np.float16))  # killed before its index
    (tmp_path / "s" / ".chunk-9-2.json.tmp").write_text(json.dumps({"shas": ["b"], "n_views": 1}))
    (tmp_path / "s" / "chunk-9-3.json").write_text("{not json")  # truncated index: recomputed, never trusted
    reopened = ActivationStore(tmp_path / "s")
    assert reopened.missing(["a", "b"], 1) == ["b"]


def test_store_key_ignores_view_count_but_not_recipe():
    assert store_key("k", 12, ViewRecipe(n_views=2)) == store_key("k", 12, ViewRecipe(n_views=8))
    assert store_key("k", 12, ViewRecipe(jitter=0.0)) != store_key("k", 12, ViewRecipe())
    assert store_key("k", 12, ViewRecipe()) != store_key("k", 13, ViewRecipe())


def test_disk_space_is_checked_before_computing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DataError) as err:
        check_disk_space(tmp_path, n_views_total=100, bytes_per_view=44_000)
    assert str(tmp_path) in str(err.value) and "GiB" in str(err.value) and "--views" in str(err.value)
    assert not os.listdir(tmp_path)
