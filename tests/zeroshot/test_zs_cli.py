"""`finegrain align / zeroshot / describe` end to end on tiny images, tiny backbones and tiny text models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from finegrain.cli.main import main
from finegrain.data.sources import collect_inputs
from finegrain.pipeline import Classifier

COLOURS = ("red_finch", "blue_jay", "green_warbler")  # the classes of the shared split_folder fixture
TEXT = {"red_finch": "red", "blue_jay": "blue", "green_warbler": "green"}


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def bird_files(tmp_path, split_folder):
    """split_folder + descriptions (3 seen classes and 1 without images) + a class list with all 4."""
    (tmp_path / "desc.csv").write_text("class,description,weight\n" + "".join(
        f"{c},{w} feathers,0.9\n{c},{w} wings,0.5\n" for c, w in TEXT.items()) + "white tern,white feathers,1\n")
    (tmp_path / "classes.txt").write_text("\n".join([*TEXT, "white_tern"]) + "\n")
    (split_folder / "test" / "red_finch" / "broken.jpg").write_bytes(b"not an image")
    return split_folder, tmp_path / "desc.csv", tmp_path / "classes.txt"


def test_align_then_eval_predict_describe(capsys, tmp_path, bird_files, tiny_text_encoder):
    data, desc, classes = bird_files
    model = tmp_path / "aligned"
    code, _, err = run(capsys, "align", data, "--descriptions", desc, "--classes", classes, "-o", model,
                       "--backbone", "tiny", "--text-encoder", tiny_text_encoder, "--templates", "birds")
    assert code == 0 and "aligned on 24 images of 3 seen classes" in err and "recognises 4 classes" in err
    assert "3 classes < 6: defaults used" in err  # too few classes to hide some while choosing settings
    clf = Classifier.load(model)
    assert clf.head.name == "zeroshot" and clf.classes == sorted([*TEXT, "white_tern"])
    # only the train split was read: the broken test image never reached alignment
    assert clf.info["zeroshot"]["alignment"]["n_train_images"] == 24
    assert clf.info["zeroshot"]["alignment"]["trained_on_classes"] == sorted(TEXT)

    code, out, _ = run(capsys, "eval", model, data, "--format", "json", "-q")
    rep = json.loads(out)
    assert code == 0 and rep["n"] == 12 and rep["n_unreadable"] == 1 and rep["top1"] > 0.5

    code, out, _ = run(capsys, "predict", model, data / "test" / "blue_jay", "--format", "jsonl", "-q")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 4 and all(abs(sum(t["prob"] for t in r["top_k"]) - 1) < 1e-3 for r in rows)

    code, out, _ = run(capsys, "describe", model, data / "test" / "green_warbler" / "00.png", "--format", "jsonl", "-q")
    why = json.loads(out)
    assert code == 0 and why["label"] in clf.classes and len(why["evidence"]) >= 1
    assert all(e["text"].split()[0] in {"red", "blue", "green", "white"} for e in why["evidence"])


def test_align_needs_descriptions(capsys, tmp_path, split_folder):
    code, _, err = run(capsys, "align", split_folder, "-o", tmp_path / "m", "--backbone", "tiny")
    assert code == 2 and "--descriptions" in err


def test_vocabulary_free_reuses_an_alignment(capsys, tmp_path, bird_files, tiny_text_encoder):
    data, desc, _ = bird_files
    code, _, _ = run(capsys, "align", data, "--descriptions", desc, "-o", tmp_path / "a", "--backbone", "tiny",
                     "--text-encoder", tiny_text_encoder, "-q")
    assert code == 0 and Classifier.load(tmp_path / "a").classes == sorted([*TEXT, "white tern"])
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*TEXT, "white tern", "black tit", "small bird", "large bird", "yellow bird"]) + "\n")
    code, _, err = run(capsys, "zeroshot", "--vocabulary", vocab, "--alignment", tmp_path / "a", "--shortlist", "3",
                       "--descriptions", desc, "-o", tmp_path / "open", "-q")
    assert code == 0, err
    clf = Classifier.load(tmp_path / "open")
    assert len(clf.classes) == 8 and clf.head.mapping == "linear" and clf.head.shortlist == 3
    code, out, _ = run(capsys, "predict", tmp_path / "open", data / "test" / "red_finch", "--top-k", "8",
                       "--format", "jsonl", "-q")
    for row in map(json.loads, out.splitlines()):
        if row["status"] == "ok":
            assert len(row["top_k"]) == 8 and sum(t["prob"] == 0.0 for t in row["top_k"]) >= 5  # only 3 re-scored


def test_hf_clip_backbone_and_text_tower(capsys, tmp_path, split_folder, tiny_clip_dir, isolated_cache):
    from finegrain.store import EmbeddingCache
    from finegrain.zeroshot.encoders import get_text_encoder

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(COLOURS) + "\n")
    backbone = f"hf_clip:{tiny_clip_dir}"
    code, _, err = run(capsys, "zeroshot", "--classes", classes, "--backbone", backbone, "--templates", "simple",
                       "-o", tmp_path / "clip")
    assert code == 0 and "identity" in err
    clf = Classifier.load(tmp_path / "clip")
    assert clf.backbone_id == backbone and clf.head.class_emb_.shape == (3, 8)
    key = get_text_encoder(backbone).cache_key
    with EmbeddingCache(isolated_cache) as cache:
        n_texts = cache.count(key)
    assert n_texts == 7 * 3  # every (template, class) prompt embedded once and cached
    code, out, _ = run(capsys, "predict", tmp_path / "clip", split_folder / "test", "--format", "jsonl", "-q")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 12 and {r["label"] for r in rows} <= set(COLOURS)
    run(capsys, "zeroshot", "--classes", classes, "--backbone", backbone, "--templates", "simple", "-o",
        tmp_path / "clip2", "-q")
    with EmbeddingCache(isolated_cache) as cache:
        assert cache.count(key) == n_texts  # the rebuild computed no new text embedding
    # the image tower is a backbone like any other: a linear head on it, in a fresh process state
    code, _, _ = run(capsys, "fit", split_folder, "--backbone", backbone, "-o", tmp_path / "linear", "-q")
    assert code == 0 and Classifier.load(tmp_path / "linear").head.n_features_in_ == 8


def test_conse_with_the_imagenet_head(capsys, tmp_path, split_folder, tiny_text_encoder):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(COLOURS) + "\n")
    code, _, err = run(capsys, "zeroshot", "--classes", classes, "--text-encoder", tiny_text_encoder,
                       "-o", tmp_path / "conse")
    assert code == 0 and "conse" in err
    clf = Classifier.load(tmp_path / "conse")
    assert clf.backbone_id == "efficientnet_lite0" and clf.head.conse_.weight.shape == (1000, 1280)
    probs = clf.head.predict_proba(clf.embed(collect_inputs([split_folder / "test" / "red_finch" / "00.png"])).X)
    assert probs.shape == (1, 3) and np.isclose(probs.sum(), 1.0, atol=1e-4)


def test_conse_refuses_a_backbone_without_imagenet_head(capsys, tmp_path, tiny_text_encoder):
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\n")
    code, _, err = run(capsys, "zeroshot", "--classes", classes, "--backbone", "tiny", "--text-encoder",
                       tiny_text_encoder, "-o", tmp_path / "m")
    assert code == 2 and "ImageNet" in err and "finegrain align" in err
