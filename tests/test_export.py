"""`finegrain export`: one ONNX file that gives finegrain's own answers, run without finegrain."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import run_cli
from finegrain.backbones.base import Preprocess
from finegrain.data.images import load_rgb
from finegrain.export.onnx_model import onnx_probabilities
from finegrain.pipeline import Classifier

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "run_exported.py"


@pytest.fixture
def model(split_folder, tmp_path, capsys):
    code, _, err = run_cli(capsys, "fit", split_folder, "-o", tmp_path / "m", "--backbone", "tiny", "-q")
    assert code == 0, err
    return tmp_path / "m"


def test_export_matches_predict(model, split_folder, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    code, _, err = run_cli(capsys, "export", model, "-o", out, "-q")
    assert code == 0, err
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    clf = Classifier.load(model)
    assert json.loads(meta["classes"]) == clf.classes and float(meta["temperature"]) == clf.temperature
    photos = sorted((split_folder / "test").rglob("*.png"))
    pre = Preprocess.from_dict(json.loads(meta["preprocess"]))
    probs = onnx_probabilities(out, np.stack([pre.apply(load_rgb(p)) for p in photos]))
    preds = clf.predict(photos, top_k=len(clf.classes), progress=False)
    for p, row in zip(preds, probs):
        assert clf.classes[int(row.argmax())] == p.label
        assert np.abs(np.array([row[clf.classes.index(lab)] for lab in p.labels]) - p.probs).max() < 1e-4


def test_readme_example_runs_without_finegrain(model, split_folder, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert run_cli(capsys, "export", model, "-o", out, "-q")[0] == 0
    photo = sorted((split_folder / "test" / "blue_jay").iterdir())[0]
    probe = f"import sys; sys.modules['finegrain'] = None; sys.argv = {[str(EXAMPLE), str(out), str(photo)]!r}; " \
            f"exec(open({str(EXAMPLE)!r}).read())"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    label = Classifier.load(model).predict([photo], progress=False)[0].label
    assert proc.stdout.split()[1] == label


def test_int8_export_reports_its_accuracy(model, split_folder, tmp_path, capsys):
    code, out, err = run_cli(capsys, "export", model, "-o", tmp_path / "q.onnx", "--int8", "--check", split_folder, "-q")
    assert code == 0, err
    assert "top-1 on 12 test images" in out and "float32" in out and "points" in out


def test_heads_without_an_onnx_form_are_refused(split_folder, tmp_path, capsys):
    assert run_cli(capsys, "fit", split_folder, "-o", tmp_path / "knn", "--backbone", "tiny", "--head", "knn", "-q")[0] == 0
    code, _, err = run_cli(capsys, "export", tmp_path / "knn", "-o", tmp_path / "k.onnx")
    assert code == 2 and "knn head has no ONNX form" in err and not (tmp_path / "k.onnx").exists()


def test_readme_example_letterboxes_for_a_pad_model_as_finegrain_does(split_folder, tmp_path, capsys):
    from PIL import Image
    photo = tmp_path / "wide.png"  # a wide photo on a white border: pad and crop frame it differently
    arr = np.full((30, 90, 3), 250, dtype=np.uint8)
    arr[8:22, 10:50] = np.asarray(Image.open(sorted((split_folder / "test" / "blue_jay").iterdir())[0]))[:14]
    Image.fromarray(arr).save(photo)
    assert run_cli(capsys, "fit", split_folder, "-o", tmp_path / "m", "--backbone", "tiny@pad", "-q")[0] == 0
    out = tmp_path / "model.onnx"
    assert run_cli(capsys, "export", tmp_path / "m", "-o", out, "-q")[0] == 0
    assert "longer side" in {p.key: p.value for p in onnx.load(str(out)).metadata_props}["input"]
    probe = f"import sys; sys.modules['finegrain'] = None; sys.argv = {[str(EXAMPLE), str(out), str(photo)]!r}; " \
            f"exec(open({str(EXAMPLE)!r}).read())"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    pred = Classifier.load(tmp_path / "m").predict([photo], progress=False)[0]
    assert proc.stdout.split()[1:3] == [pred.label, f"{pred.probs[0]:.3f},"]
