"""fit calibrates and saves a detector; predict --unknown; discover writes clusters, a summary and a gallery."""
from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from finegrain.cli.main import main
from finegrain.data.sources import load_data
from finegrain.pipeline import Classifier

from conftest import COLOURS, make_image, make_split_folder
from conftest import run_cli as run


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
    """train/ and test/ folders, 3 classes, 8 train + 4 test images each: built once for this module."""
    return make_split_folder(tmp_path_factory.mktemp("ow") / "birds")


@pytest.fixture(scope="module")
def model(split_folder):
    """One calibrated model for the module (fitting it is the slow part), with its own embedding cache."""
    path = split_folder.parent / "model"
    code = main(["fit", str(split_folder), "-o", str(path), "--backbone", "tiny", "--head", "prototype",
                 "--cache-dir", str(split_folder.parent / "cache")])
    assert code == 0
    return path


def test_fit_reports_calibration(capsys, split_folder, tmp_path):
    code, _, err = run(capsys, "fit", split_folder, "-o", tmp_path / "m", "--backbone", "tiny", "--head", "prototype")
    assert code == 0 and "6 held-out images" in err
    cal = json.loads((tmp_path / "m" / "config.json").read_text())["calibration"]
    assert ("calibrated on" in err) == cal["applied"] and ("kept the head's own" in err) != cal["applied"]


def test_fit_saves_temperature_detector_and_reliability_diagram(model, split_folder):
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["temperature"] > 0 and cfg["ood"]["params"]["method"] == "msp"
    assert cfg["calibration"]["held_out"] == "20% of train" and cfg["calibration"]["n"] == 6
    assert (model / "ood.safetensors").is_file()
    assert (model / "reliability.png").read_bytes()[:4] == b"\x89PNG" and (model / "reliability.svg").is_file()
    clf = Classifier.load(model)
    assert clf.temperature == cfg["temperature"] and clf.detector.threshold_ == cfg["ood"]["threshold"]


def test_temperature_changes_confidence_but_not_the_answer(model, split_folder):
    clf = Classifier.load(model)
    emb = clf.embed(load_data(split_folder).select(["test"]))
    calibrated = clf.predict_proba_embeddings(emb)
    clf.temperature = 1.0
    raw = clf.predict_proba_embeddings(emb)
    assert (calibrated.argmax(1) == raw.argmax(1)).all()


def test_predict_unknown_threshold_and_auto(capsys, model, split_folder):
    code, out, _ = run(capsys, "predict", model, split_folder / "test" / "blue_jay", "--unknown", "1.01",
                       "--format", "csv", "-q")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 4
    assert all(r["answer"] == "unknown" and float(r["known_score"]) <= 1.0 for r in rows)
    assert all(r["label_1"] == "blue_jay" for r in rows)  # the nearest known class is still shown

    code, out, _ = run(capsys, "predict", model, split_folder / "test", "--unknown", "auto", "--format", "jsonl", "-q")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 12 and all(isinstance(r["unknown"], bool) for r in rows)
    assert all((r["label"] == "unknown") == r["unknown"] for r in rows)

    code, out, _ = run(capsys, "predict", model, split_folder / "test" / "blue_jay", "--unknown", "auto", "-q")
    assert "answer" in out.splitlines()[0] and "known_score" in out.splitlines()[0]


def test_predict_without_unknown_keeps_the_old_columns(capsys, model, split_folder):
    code, out, _ = run(capsys, "predict", model, split_folder / "test" / "blue_jay", "--format", "csv", "-q")
    assert "answer" not in out.splitlines()[0]


def test_unknown_needs_a_detector(capsys, split_folder, tmp_path):
    path = tmp_path / "plain"
    assert run(capsys, "fit", split_folder, "-o", path, "--backbone", "tiny", "--no-calibrate", "-q")[0] == 0
    assert not (path / "ood.safetensors").exists()
    code, _, err = run(capsys, "predict", path, split_folder / "test", "--unknown", "auto", "-q")
    assert code == 2 and "no OOD detector" in err and "fix:" in err


def test_bad_unknown_value_is_a_usage_error(capsys, model, split_folder):
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(model), str(split_folder / "test"), "--unknown", "sometimes"])
    assert exc.value.code == 2


def test_discover_writes_clusters_summary_and_gallery(capsys, split_folder, tmp_path):
    known = tmp_path / "known"
    for name in ("red_finch", "blue_jay"):
        shutil.copytree(split_folder / "train" / name, known / "train" / name)
    model = tmp_path / "model2"
    assert run(capsys, "fit", known, "-o", model, "--backbone", "tiny", "--head", "prototype", "-q")[0] == 0
    (tmp_path / "unl").mkdir()
    for p in (split_folder / "test").rglob("*.png"):
        shutil.copy(p, tmp_path / "unl" / f"{p.parent.name}_{p.name}")
    (tmp_path / "unl" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "disc"
    code, _, err = run(capsys, "discover", model, tmp_path / "unl", "-o", out)
    assert code == 0 and "new cluster" in err
    rows = list(csv.DictReader((out / "clusters.csv").open()))
    assert len(rows) == 13 and [r["status"] for r in rows].count("error") == 1
    ok = [r for r in rows if r["status"] == "ok"]
    red_blue = [r for r in ok if not r["path"].split("/")[-1].startswith("green")]
    assert all(r["known_class"] == r["path"].split("/")[-1].rsplit("_", 1)[0] for r in red_blue)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["known_classes"] == 2 and summary["n_unreadable"] == 1
    assert summary["estimated_classes"] == 2 + summary["new_clusters"]
    assert "<html>" in (out / "gallery.html").read_text()


def test_discover_needs_labelled_data(capsys, model, tmp_path):
    code, _, err = run(capsys, "discover", model, tmp_path, "-o", tmp_path / "d", "--labelled", tmp_path / "nope")
    assert code == 1 and "--labelled" in err


def test_too_few_images_to_calibrate_still_fits(tmp_path, caplog):
    import finegrain

    for k, (name, colour) in enumerate(list(COLOURS.items())[:2]):
        for i in range(2):
            make_image(tmp_path / "few" / name / f"{i}.png", colour, 50 + 10 * k + i)
    clf = finegrain.fit(tmp_path / "few", backbone="tiny", head="prototype")
    assert clf.detector is None and clf.temperature == 1.0 and "calibration" not in clf.info
    assert "too few images to hold out" in caplog.text
