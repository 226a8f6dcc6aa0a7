"""Grad-CAM through the tiny torch backbone: maps find known evidence, and explaining leaves the model as it was."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from finegrain.backbones import get_backbone
from finegrain.cli.main import main
from finegrain.errors import ConfigError
from finegrain.explain import activation_maps, conv_maps, explain_images, normalise_maps, reference_embeddings, upsample_maps
from finegrain.heads import make_head
from finegrain.training import fit

SIZE = 32


def _image(rng, quadrant=None, patch=10):
    """Grey noise; with a quadrant, a red square somewhere inside that quadrant — the only class evidence."""
    img = np.clip(rng.normal(120, 20, (SIZE, SIZE, 3)), 0, 255)
    if quadrant is not None:
        r, c = divmod(quadrant, 2)
        y0 = r * SIZE // 2 + rng.integers(1, SIZE // 2 - patch)
        x0 = c * SIZE // 2 + rng.integers(1, SIZE // 2 - patch)
        img[y0:y0 + patch, x0:x0 + patch] = (230, 30, 30)
    return img.astype(np.uint8)


def _quadrant_mask(q):
    r, c = divmod(q, 2)
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[r * SIZE // 2:(r + 1) * SIZE // 2, c * SIZE // 2:(c + 1) * SIZE // 2] = True
    return mask


@pytest.fixture(scope="module")
def patch_data():
    rng = np.random.default_rng(0)
    bb = get_backbone("tiny")
    imgs = np.stack([_image(rng, q % 4) for q in range(40)] + [_image(rng) for _ in range(40)])
    y = np.array(["patch"] * 40 + ["plain"] * 40)
    test = np.stack([_image(rng, q) for q in range(4) for _ in range(5)])
    return bb, bb.embed(imgs), y, test, np.repeat(np.arange(4), 5)


@pytest.mark.parametrize("head_name", ["logistic", "prototype", "knn"])
def test_map_peaks_in_the_quadrant_that_holds_the_evidence(patch_data, head_name):
    bb, X, y, test, quadrants = patch_data
    head = make_head(head_name).fit(X, y)
    maps = conv_maps(bb, head, test)
    cams = activation_maps(maps, head, np.zeros(len(test), dtype=int), methods=("gradcam", "gradcam++"))
    for method, cam in cams.items():
        up = normalise_maps(upsample_maps(cam, SIZE, SIZE))
        for m, q in zip(up, quadrants):
            mask = _quadrant_mask(q)
            assert m[mask].mean() > 1.5 * m[~mask].mean(), (method, q)
            if method == "gradcam":
                assert mask[np.unravel_index(m.argmax(), m.shape)], q


def _snapshot(module):
    return ({k: v.clone() for k, v in module.state_dict().items()}, [p.requires_grad for p in module.parameters()],
            [m.training for m in module.modules()])


def _hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in module.modules())


def test_explaining_leaves_the_backbone_unchanged_and_hook_free(split_folder):
    clf = fit(split_folder, backbone="tiny", head="prototype")
    net = get_backbone("tiny").features
    before, hooks = _snapshot(net), _hooks(net)
    grad_mode = torch.is_grad_enabled()
    with torch.no_grad():  # an outer no_grad must not stop the explanation
        res = explain_images(clf, [split_folder / "test" / "red_finch"])
    assert all(r.maps["gradcam"].max() == pytest.approx(1.0) for r in res)
    after = _snapshot(net)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:] and not any(after[1])
    assert _hooks(net) == hooks == 0 and torch.is_grad_enabled() == grad_mode
    assert all(p.grad is None for p in net.parameters())


def test_explain_images_returns_maps_contrast_neighbours_and_error_rows(split_folder, tmp_path):
    clf = fit(split_folder, backbone="tiny", head="prototype")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    ref = reference_embeddings(clf)
    res = explain_images(clf, [split_folder / "test" / "blue_jay" / "00.png", broken], reference=ref, n_neighbours=3)
    ok, bad = res
    assert bad.error and bad.image is None and not bad.maps
    assert ok.image.shape == (SIZE, SIZE, 3) and ok.predicted == ok.target == "blue_jay"
    for cam in (*ok.maps.values(), ok.contrast):
        assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32 and 0.0 <= cam.min() and cam.max() <= 1.0
    assert set(ok.maps) == {"gradcam", "gradcam++"} and ok.versus != ok.target
    assert len(ok.neighbours) == 3 and all(n.label == "blue_jay" for n in ok.neighbours)
    assert [n.similarity for n in ok.neighbours] == sorted((n.similarity for n in ok.neighbours), reverse=True)

    forced = explain_images(clf, [split_folder / "test" / "blue_jay" / "00.png"], target="red_finch",
                            versus="green_warbler", methods=("gradcam++",))[0]
    assert forced.target == "red_finch" and forced.versus == "green_warbler" and set(forced.maps) == {"gradcam++"}
    with pytest.raises(ConfigError, match="did you mean red_finch"):
        explain_images(clf, [split_folder / "test"], target="red_fnch")


def test_explain_cli_writes_a_panel_per_image_and_json(split_folder, tmp_path, capsys):
    model, out = tmp_path / "model", tmp_path / "why"
    assert main(["fit", str(split_folder), "-o", str(model), "--backbone", "tiny", "--head", "prototype", "-q"]) == 0
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    code = main(["explain", str(model), str(split_folder / "test" / "green_warbler"), str(broken), "-o", str(out),
                 "--neighbours", "2", "-q"])
    stdout = capsys.readouterr().out
    assert code == 0 and "green_warbler (" in stdout and "rather than" in stdout
    rows = json.loads((out / "explanations.json").read_text())["explanations"]
    assert len(rows) == 5 and rows[-1]["status"] == "error"
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 4 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert all(len(r["neighbours"]) == 2 for r in rows[:4])
    assert main(["explain", str(model), str(broken), "-o", str(out), "--class", "nope", "-q"]) == 2
