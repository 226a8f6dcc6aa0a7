"""`fit --tta flip|rot4|d4`: every embedding of the model averages the image with its mirror image (or its turns
and mirrors) — in the head's training, in `predict`, `explain`, the exported ONNX graph, the server and on Ray
actors — and stored plain embeddings are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from finegrain.backbones.base import Preprocess
from finegrain.data.images import load_rgb
from finegrain.data.samples import Sample
from finegrain.errors import DataError
from finegrain.export.onnx_model import onnx_probabilities
from finegrain.pipeline import Classifier
from finegrain.views import average_views


# each view written out by hand, independently of finegrain.tta.TURNS (crops are (N, S, S, 3))
BY_HAND = {"flip": lambda c: c[:, :, ::-1], "vflip": lambda c: c[:, ::-1],
           "rot90": lambda c: c.transpose(0, 2, 1, 3)[:, ::-1], "rot180": lambda c: c[:, ::-1, ::-1],
           "rot270": lambda c: c[:, ::-1].transpose(0, 2, 1, 3),
           "transpose": lambda c: c.transpose(0, 2, 1, 3),
           "antitranspose": lambda c: c[:, ::-1, ::-1].transpose(0, 2, 1, 3)}


@pytest.fixture(params=["flip", "d4"])
def flip_model(request, split_folder, tmp_path, capsys):
    """A tiny model fitted with --tta flip, then with --tta d4 (every turn and mirror)."""
    code, _, err = run_cli(capsys, "fit", split_folder, "-o", tmp_path / "tta", "--backbone", "tiny",
                           "--tta", request.param, "--runtime", "torch", "--C", "0.001", "--no-calibrate",
                           "-q")  # soft probabilities
    assert code == 0, err
    return tmp_path / "tta"


def _photos(split_folder):
    return sorted((split_folder / "test").rglob("*.png"))


def _lopsided(folder, n=3):
    """Images unlike their mirror image (a colour ramp, one half tinted): there the flip view changes answers."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = np.zeros((40, 40, 3), dtype=np.uint8)
        img[:, :, i % 3] = np.linspace(0, 255, 40, dtype=np.uint8)[None, :]
        img[:, :20, (i + 2) % 3] = 200
        paths.append(folder / f"lopsided{i}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


def _plain_answers(model, photos):
    """The same head on the plain crop alone: what a path that forgot the mirror would answer."""
    clf = Classifier.load(model)
    clf.info.pop("tta")
    return clf.predict(photos, top_k=len(clf.classes), runtime="torch")


def _max_gap(a, b):
    return max(abs(x - y) for p, q in zip(a, b) for x, y in zip(sorted(p.probs), sorted(q.probs)))


def test_a_flip_model_embeds_and_answers_with_the_mirror_image_averaged_in(flip_model, split_folder):
    clf = Classifier.load(flip_model)
    assert clf.provenance()["tta"] == clf.tta and clf.views == {"flip": ("flip",), "d4": tuple(BY_HAND)}[clf.tta]
    photos = _photos(split_folder)
    bb = clf.backbone()
    crops = np.stack([bb.preprocess.apply(load_rgb(p)) for p in photos])
    plain = bb.embed(crops)
    views = [bb.embed(np.ascontiguousarray(BY_HAND[v](crops))) for v in clf.views]
    assert min(np.abs(plain - v).max() for v in views) > 1e-3  # each view really is another view for this network
    expected = average_views([plain, *views])
    emb = clf.embed([Sample(p) for p in photos], runtime="torch")
    assert emb.views == clf.views
    np.testing.assert_allclose(emb.X, expected, atol=1e-5)
    preds = clf.predict(photos, top_k=len(clf.classes), runtime="torch")
    probs = clf._calibrated(clf.head.decision_function(expected))
    for p, row in zip(preds, probs):
        assert p.probs == pytest.approx([row[clf.classes.index(lab)] for lab in p.labels], abs=1e-5)


def test_plain_embeddings_are_refused_by_a_flip_model_and_by_fit_tta(flip_model, split_folder, tmp_path, capsys):
    clf = Classifier.load(flip_model)
    photos = _photos(split_folder)
    plain = Classifier.load(flip_model)
    plain.info = {k: v for k, v in plain.info.items() if k != "tta"}
    with pytest.raises(DataError, match="other test-time views"):
        clf.predict_proba_embeddings(plain.embed([Sample(p) for p in photos]))
    code, _, err = run_cli(capsys, "embed", split_folder, "-o", tmp_path / "emb", "--backbone", "tiny", "-q")
    assert code == 0, err
    code, _, err = run_cli(capsys, "fit", tmp_path / "emb", "-o", tmp_path / "m", "--backbone", "tiny",
                           "--tta", "flip", "-q")
    assert code == 2 and "needs the images themselves" in err and "Traceback" not in err


def test_the_exported_graph_averages_the_mirror_as_predict_does(flip_model, split_folder, tmp_path, capsys):
    import onnx

    out = tmp_path / "model.onnx"
    code, _, err = run_cli(capsys, "export", flip_model, "-o", out, "-q")
    assert code == 0, err
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["tta"] == Classifier.load(flip_model).tta
    clf = Classifier.load(flip_model)
    photos = _photos(split_folder) + _lopsided(tmp_path / "lopsided")
    pre = Preprocess.from_dict(json.loads(meta["preprocess"]))
    probs = onnx_probabilities(out, np.stack([pre.apply(load_rgb(p)) for p in photos]))
    preds = clf.predict(photos, top_k=len(clf.classes), runtime="torch")
    assert _max_gap(preds, _plain_answers(flip_model, photos)) > 1e-3
    for p, row in zip(preds, probs):
        assert np.abs(np.array([row[clf.classes.index(lab)] for lab in p.labels]) - p.probs).max() < 1e-4


def test_a_ray_predictor_actor_answers_a_flip_model_as_predict_does(flip_model, split_folder, tmp_path):
    pytest.importorskip("pyarrow")
    from finegrain.embed import member_preprocesses
    from finegrain.scale.jobs import folder_files
    from finegrain.scale.stages import Predictor, decode_and_crop, read_and_hash

    photos = _photos(split_folder) + _lopsided(tmp_path / "lopsided")
    clf = Classifier.load(flip_model)
    column = np.empty(len(photos), dtype=object)
    column[:] = [str(p) for p in photos]
    batch = read_and_hash({"path": column, "label": np.full(len(photos), ""), "split": np.full(len(photos), "")},
                          frozenset())
    batch = decode_and_crop(batch, member_preprocesses(clf.backbone()))
    table = Predictor(folder_files(flip_model), {}, "torch", 1, len(clf.classes), None)(batch).to_pylist()
    local = clf.predict(photos, top_k=len(clf.classes), runtime="torch")
    assert _max_gap(local, _plain_answers(flip_model, photos)) > 1e-3
    assert [r["labels"] for r in table] == [p.labels for p in local]
    np.testing.assert_allclose([r["probs"] for r in table], [p.probs for p in local], atol=1e-5)


def test_explain_reports_the_flip_model_s_own_answer(flip_model, split_folder, tmp_path, capsys):
    photo = _lopsided(tmp_path / "lopsided", 1)[0]
    code, _, err = run_cli(capsys, "explain", flip_model, photo, "-o", tmp_path / "why", "-q")
    assert code == 0, err
    (expl,) = json.loads((tmp_path / "why" / "explanations.json").read_text())["explanations"]
    clf = Classifier.load(flip_model)
    (pred,) = clf.predict([photo], runtime="torch")
    assert expl["predicted"] == pred.label and expl["confidence"] == pytest.approx(pred.probs[0], abs=1e-6)
    assert _max_gap([pred], _plain_answers(flip_model, [photo])) > 1e-3


def test_explain_maps_sum_every_view_so_a_turned_image_gets_the_turned_map(flip_model, tmp_path):
    """The views of a mirrored (d4: turned) crop are the views of the crop, so the model's answer is the same and
    its explanation must be the mirrored (turned) one; the plain crop's map alone is not (the tiny network is
    not equivariant), which is what this checks first."""
    from finegrain.explain import activation_maps, conv_maps, explain_crops
    from finegrain.tta import turned_crops

    clf = Classifier.load(flip_model)
    crops = np.stack([clf.backbone().preprocess.apply(load_rgb(p)) for p in _lopsided(tmp_path / "lopsided", 2)])
    turn = clf.views[-1]  # flip, or d4's antitranspose
    plain = activation_maps(conv_maps(clf.backbone(), clf.head, crops), clf.head, np.zeros(2, dtype=int))["gradcam"]
    turned = activation_maps(conv_maps(clf.backbone(), clf.head, turned_crops(crops, turn)), clf.head,
                             np.zeros(2, dtype=int))["gradcam"]
    assert not np.allclose(turned_crops(plain[..., None], turn)[..., 0], turned, atol=1e-3)
    names = ["a", "b"]
    before = explain_crops(clf, names, list(crops), target=clf.classes[0], versus=clf.classes[1])
    after = explain_crops(clf, names, list(turned_crops(crops, turn)), target=clf.classes[0], versus=clf.classes[1])
    for b, a in zip(before, after):
        assert a.target_prob == pytest.approx(b.target_prob, abs=1e-5)
        for m in ("gradcam", "gradcam++"):
            np.testing.assert_allclose(a.maps[m], turned_crops(b.maps[m][None, ..., None], turn)[0, ..., 0], atol=1e-4)
        np.testing.assert_allclose(a.contrast, turned_crops(b.contrast[None, ..., None], turn)[0, ..., 0], atol=1e-4)
