from __future__ import annotations

import json

import numpy as np
import pytest

import finegrain
from finegrain.data.sources import load_data
from finegrain.embed import embed_samples, save_embeddings
from finegrain.errors import DataError

from conftest import make_image


@pytest.fixture
def fitted(split_folder):
    return finegrain.fit(split_folder, backbone="tiny", head="logistic")


def test_fit_learns_and_never_reads_test_split(split_folder, monkeypatch):
    import finegrain.embed as embed_mod
    opened = []
    real = embed_mod.load_sample_rgb
    monkeypatch.setattr(embed_mod, "load_sample_rgb", lambda s, **kw: opened.append(str(s.path)) or real(s, **kw))
    hashed = []
    real_hash = embed_mod.file_sha256
    monkeypatch.setattr(embed_mod, "file_sha256", lambda p: hashed.append(str(p)) or real_hash(p))
    clf = finegrain.fit(split_folder, backbone="tiny")
    assert opened and hashed
    assert not any("/test/" in p for p in opened + hashed)
    assert clf.info["training"]["n_train"] == 24
    assert clf.info["training"]["train_accuracy"] > 0.9


def test_save_load_predict_same_answers(fitted, split_folder, tmp_path):
    fitted.save(tmp_path / "model")
    files = sorted((tmp_path / "model").iterdir())
    assert [f.name for f in files] == ["config.json", "head.safetensors", "ood.safetensors",  # ood: unknown detector
                                       "reliability.png", "reliability.svg"]  # the calibration's diagram
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    for key in ("finegrain_version", "backbone", "preprocess", "class_list_hash", "command_line", "packages"):
        assert key in config["provenance"]
    loaded = finegrain.Classifier.load(tmp_path / "model")
    a = fitted.predict(split_folder / "test", top_k=2)
    b = loaded.predict(split_folder / "test", top_k=2)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    correct = [p.label == p.path.split("/")[-2] for p in b]
    assert np.mean(correct) > 0.9
    assert all(len(p.labels) == 2 and p.probs[0] >= p.probs[1] for p in b)


def test_predict_reports_unreadable_files_as_rows(fitted, tmp_path):
    good = make_image(tmp_path / "in" / "a.png", (200, 40, 40), 7)
    bad = tmp_path / "in" / "b.jpg"
    bad.write_bytes(b"")
    preds = fitted.predict([good, bad, tmp_path / "in" / "gone.png"])
    assert [p.error is None for p in preds] == [True, False, False]
    assert "empty file" in preds[1].error and preds[1].labels == []
    assert preds[0].label == "red_finch"


def test_model_refuses_embeddings_of_another_backbone(fitted, split_folder):
    emb = embed_samples(load_data(split_folder).samples[:3], "efficientnet_lite0", progress=False)
    with pytest.raises(DataError, match="another backbone") as e:
        fitted.predict_proba_embeddings(emb)
    assert "tiny" in str(e.value) and "efficientnet_lite0" in str(e.value)


def test_evaluate_defaults_to_test_split(fitted, split_folder):
    rep = finegrain.evaluate(fitted, split_folder)
    assert rep["split"] == "test" and rep["n"] == 12
    assert rep["top1"] > 0.9 and rep["n_leaked_from_training"] == 0
    assert len(rep["confusion_matrix"]) == 3 and rep["provenance"]["backbone"] == "tiny"


def test_evaluate_flags_test_images_copied_from_train(fitted, split_folder):
    src = next((split_folder / "train" / "blue_jay").iterdir())
    (split_folder / "test" / "blue_jay" / "copy.png").write_bytes(src.read_bytes())
    assert finegrain.evaluate(fitted, split_folder)["n_leaked_from_training"] == 1


def test_fit_from_embeddings_folder_matches_fit_from_images(split_folder, tmp_path):
    emb = embed_samples(load_data(split_folder).samples, "tiny", progress=False)
    save_embeddings(emb, tmp_path / "emb", {})
    a = finegrain.fit(tmp_path / "emb", backbone="tiny")
    b = finegrain.fit(split_folder, backbone="tiny")
    assert a.info["training"]["n_train"] == b.info["training"]["n_train"] == 24
    np.testing.assert_allclose(a.head.coef_, b.head.coef_, rtol=1e-4, atol=1e-5)
    with pytest.raises(DataError, match="made with 'tiny'"):
        finegrain.fit(tmp_path / "emb", backbone="efficientnet_lite0")


def test_too_many_unreadable_training_images_fail_clearly(class_folder):
    for f in list((class_folder / "blue_jay").iterdir()):
        f.write_bytes(b"garbage")
    with pytest.raises(DataError, match="could not be read") as e:
        finegrain.fit(class_folder, backbone="tiny")
    assert "--max-error-rate" in str(e.value)
    clf = finegrain.fit(class_folder, backbone="tiny", max_error_rate=0.5)
    assert clf.info["training"]["n_unreadable"] == 6 and "blue_jay" not in clf.classes
