from __future__ import annotations

import csv
import io
import json

import finegrain.training
from finegrain.cli.main import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_with_shots_reads_only_k_images_per_class(capsys, split_folder, tmp_path, monkeypatch):
    seen = []
    real = finegrain.training.embed_with_views

    def spy(samples, *args, **kwargs):
        seen.extend(samples)
        return real(samples, *args, **kwargs)

    monkeypatch.setattr(finegrain.training, "embed_with_views", spy)
    model = tmp_path / "m"
    code, _, err = run(capsys, "fit", split_folder, "-o", model, "--backbone", "tiny", "--shots", "2", "--seed", "1")
    assert code == 0 and "fitted prototype head on 6 images of 3 classes" in err
    assert len(seen) == 6 and sorted(s.label for s in seen) == sorted(["blue_jay", "green_warbler", "red_finch"] * 2)
    assert all(s.split == "train" for s in seen)
    config = json.loads((model / "config.json").read_text())
    assert config["training"]["shots"] == 2 and config["head"]["head"] == "prototype"
    assert config["transductive"]["learned_on"]["source"]


def test_predict_transductive_is_order_free_and_needs_a_prototype_model(capsys, split_folder, tmp_path):
    model = tmp_path / "m"
    assert run(capsys, "fit", split_folder, "-o", model, "--backbone", "tiny", "--head", "prototype", "-q")[0] == 0
    files = sorted((split_folder / "test").rglob("*.png"))

    def labels(paths):
        code, out, _ = run(capsys, "predict", model, *paths, "--transductive", "--format", "csv", "--top-k", "1", "-q")
        assert code == 0
        return {r["path"]: r["label_1"] for r in csv.DictReader(io.StringIO(out))}

    forward, backward = labels(files), labels(files[::-1])
    assert forward == backward and len(forward) == 12
    assert sum(forward[str(f)] == f.parent.name for f in files) >= 11

    logistic = tmp_path / "lr"
    assert run(capsys, "fit", split_folder, "-o", logistic, "--backbone", "tiny", "-q")[0] == 0
    code, _, err = run(capsys, "predict", logistic, files[0], "--transductive", "-q")
    assert code == 2 and "prototype head" in err and "--head prototype" in err


def test_fewshot_eval_reports_methods_side_by_side(capsys, split_folder, tmp_path):
    out_json = tmp_path / "fs.json"
    code, out, _ = run(capsys, "fewshot-eval", split_folder, "--backbone", "tiny", "--ways", "3", "--shots", "1",
                       "--queries", "3", "--episodes", "5", "--seed", "0", "--methods", "prototype,em,unem",
                       "--output", out_json, "-q")
    assert code == 0 and "unem" in out and "±" in out
    rep = json.loads(out_json.read_text())
    assert set(rep["methods"]) == {"prototype", "em", "unem"} and rep["n_test_images"] == 12
    assert rep["setting"] == {"ways": 3, "shots": 1, "queries": 3, "episodes": 5, "seed": 0,
                              "query_distribution": "balanced"}

    code, _, err = run(capsys, "fewshot-eval", split_folder, "--backbone", "tiny", "--ways", "4", "-q")
    assert code == 1 and "lower --ways" in err
    code, _, err = run(capsys, "fewshot-eval", split_folder, "--backbone", "tiny", "--methods", "magic", "-q")
    assert code == 2 and "unknown few-shot method" in err
