"""Contract test over every registered backbone: shape, finiteness, normalisation, preprocessing saved."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.backbones import TUNED_FAMILY, VLM_FAMILIES, Preprocess, get_backbone, list_backbones

# CLIP-family ids need a model argument: their image towers are tested with a tiny CLIP in tests/zeroshot
PLAIN = [b for b in list_backbones() if b not in (*VLM_FAMILIES, TUNED_FAMILY)] + ["tiny:24", "tiny@48-whole",
                                                                                    "efficientnet_lite0@256"]
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


@pytest.mark.parametrize("backbone_id, size, crop_pct", [("tiny@48", 48, 1.0), ("efficientnet_lite0@320-whole", 320, 1.0),
                                                         ("efficientnet_lite0@288", 288, 0.875),
                                                         ("efficientnet_lite0@whole", 224, 1.0),
                                                         ("efficientnet_lite0@256-pad", 256, 1.0)])
def test_input_part_of_the_id_sets_size_and_crop_and_keys_the_cache_apart(backbone_id, size, crop_pct):
    bb, base = get_backbone(backbone_id), get_backbone(backbone_id.partition("@")[0])
    assert bb.id == backbone_id and (bb.preprocess.size, bb.preprocess.crop_pct) == (size, crop_pct)
    assert bb.weights_fingerprint() == base.weights_fingerprint() and bb.cache_key != base.cache_key
    assert bb.preprocess.mean == base.preprocess.mean and bb.features is base.features  # same network, one copy


def test_the_whole_image_keeps_the_margin_the_centre_crop_cuts():
    from PIL import Image
    arr = np.zeros((64, 64, 3), dtype=np.uint8)
    arr[:2] = 255  # a white top margin: inside 'whole', cut by the 87.5 % centre crop
    img = Image.fromarray(arr)
    assert get_backbone("efficientnet_lite0@64").preprocess.apply(img).max() == 0
    assert get_backbone("efficientnet_lite0@64-whole").preprocess.apply(img)[0].min() == 255


def test_pad_letterboxes_the_whole_image_on_its_border_colour_and_keys_apart_only_when_used():
    from PIL import Image
    arr = np.full((50, 100, 3), 240, dtype=np.uint8)  # a wide grey-white photo with a dark organism inside
    arr[10:40, 5:95] = 20
    pre = get_backbone("tiny@64-pad").preprocess
    out = pre.apply(Image.fromarray(arr))
    assert out.shape == (64, 64, 3) and pre.fit == "pad"
    assert (out[:16] == 240).all() and (out[-16:] == 240).all()  # padding above and below, in the border colour
    assert (out[32, 4:60] < 60).all()  # the organism spans the width: nothing cut, not stretched vertically
    assert Preprocess.from_dict(pre.to_dict()) == pre and pre.to_dict()["fit"] == "pad"
    assert "fit" not in get_backbone("tiny").preprocess.to_dict()  # cache keys written before 'pad' stay valid


def test_training_views_of_a_pad_backbone_are_letterboxed_not_stretched():
    from PIL import Image

    from finegrain.finetune.views import ViewRecipe, random_view
    arr = np.full((20, 100, 3), 255, dtype=np.uint8)
    arr[5:15, :] = 0
    pre = get_backbone("tiny@64-pad").preprocess
    view = random_view(Image.fromarray(arr), pre, ViewRecipe(scale_min=1.0, ratio=(5.0, 5.0), jitter=0.0),
                       np.random.default_rng(0))
    assert (view[:20] == 255).all() and (view[-20:] == 255).all() and (view[32] < 30).all()


@pytest.mark.parametrize("bad, message", [("tiny@big", "not understood"), ("tiny@320-centre", "not understood"),
                                          ("tiny@8", "out of range"), ("tiny@5000", "out of range"),
                                          ("@320", "not understood")])
def test_bad_input_parts_are_refused_with_the_forms_accepted(bad, message):
    with pytest.raises(ConfigError, match=message) as err:
        get_backbone(bad)
    assert "@SIZE-whole" in str(err.value) or "32–1024" in str(err.value)


def test_an_input_part_is_refused_on_a_backbone_with_a_fixed_input():
    from finegrain.backbones.base import Backbone
    from finegrain.backbones.inputs import InputSpec, with_input

    class Fixed(Backbone):
        id, embed_dim, preprocess = "fixed", 4, Preprocess(size=32)

        def _forward(self, batch):
            return np.ones((len(batch), 4))

        def weights_fingerprint(self):
            return "w"

    with pytest.raises(ConfigError, match="cannot take another input size"):
        with_input(Fixed(), InputSpec(64, False), "fixed@64")


def test_a_fine_tuned_id_is_never_read_as_an_input_part():
    from finegrain.backbones.inputs import split_input
    assert split_input("finetuned:efficientnet_lite0@320-whole.0123abcd") == (
        "finetuned:efficientnet_lite0@320-whole.0123abcd", None)


def test_cli_refuses_a_bad_input_part_with_a_usage_error_and_no_traceback(split_folder, tmp_path, capsys):
    from conftest import run_cli
    code, _, err = run_cli(capsys, "fit", split_folder, "-o", tmp_path / "m", "--backbone", "tiny@huge", "-q")
    assert code == 2 and "not understood" in err and "fix:" in err and "Traceback" not in err
