"""Contract test over every registered backbone: shape, finiteness, normalisation, preprocessing saved."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.backbones import TUNED_FAMILY, VLM_FAMILIES, Preprocess, get_backbone, list_backbones

# CLIP-family ids need a model argument: their image towers are tested with a tiny CLIP in tests/zeroshot
PLAIN = [b for b in list_backbones() if b not in (*VLM_FAMILIES, TUNED_FAMILY)] + ["tiny:24"]
from finegrain.errors import ConfigError


@pytest.mark.parametrize("backbone_id", PLAIN)
def test_backbone_contract(backbone_id):
    bb = get_backbone(backbone_id)
    size = bb.preprocess.size
    batch = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    emb = bb.embed(batch)
    assert emb.shape == (2, bb.embed_dim) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert Preprocess.from_dict(bb.preprocess.to_dict()) == bb.preprocess
    assert bb.cache_key == get_backbone(backbone_id).cache_key
    np.testing.assert_allclose(bb.embed(batch[:1]), emb[:1], atol=1e-5)  # batch composition does not matter


def test_preprocess_resizes_shorter_side_then_centre_crops():
    from PIL import Image
    pre = Preprocess(size=8, crop_pct=0.5, interpolation="nearest")
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, 20:] = 255  # right half white
    out = pre.apply(Image.fromarray(arr))
    assert out.shape == (8, 8, 3)
    assert out[:, :4].max() == 0 and out[:, 4:].min() == 255


def test_unknown_backbone_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'efficientnet_lite0'"):
        get_backbone("efficientnet-lite0")
