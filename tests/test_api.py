"""The Python API (#14): `progress=` on long calls, and what `Classifier.save` writes."""
from __future__ import annotations

import logging

import finegrain

PHASE = "fitting the logistic head on 24 embeddings"


def test_progress_true_shows_phases_even_without_logging_set_up(capsys, caplog, split_folder):
    caplog.set_level(logging.WARNING, logger="finegrain")  # a script that never configured logging
    finegrain.fit(split_folder, backbone="tiny", runtime="torch", progress=True)
    err = capsys.readouterr().err
    assert f"finegrain: {PHASE} …" in err and "calibrating and fitting the unknown detector: done in" in err


def test_progress_false_silences_phases_even_with_logging_at_info(capsys, caplog, split_folder):
    caplog.set_level(logging.INFO, logger="finegrain")
    finegrain.fit(split_folder, backbone="tiny", progress=False)  # runtime auto: the ONNX export note too
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]
    assert capsys.readouterr().err == ""


def test_progress_by_default_follows_the_logging_configuration(capsys, caplog, split_folder):
    caplog.set_level(logging.INFO, logger="finegrain")
    finegrain.fit(split_folder, backbone="tiny", runtime="torch")
    assert any(PHASE in r.getMessage() for r in caplog.records)
    assert "%" not in capsys.readouterr().err  # no progress bar by default


def test_saving_a_calibrated_model_draws_its_reliability_diagram(split_folder, tmp_path):
    clf = finegrain.fit(split_folder, backbone="tiny", runtime="torch")
    folder = clf.save(tmp_path / "m")
    assert (folder / "reliability.png").read_bytes()[:4] == b"\x89PNG" and (folder / "reliability.svg").is_file()
    uncalibrated = finegrain.fit(split_folder, backbone="tiny", runtime="torch", calibrate=False)
    assert not (uncalibrated.save(tmp_path / "u") / "reliability.png").exists()
    assert finegrain.Classifier.load(folder).classes == clf.classes


def test_progress_false_is_silent_and_true_shows_bars_for_evaluate_predict_discover(capsys, caplog, monkeypatch,
                                                                                    split_folder):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # an earlier in-process `-q` run may have set it
    caplog.set_level(logging.WARNING, logger="finegrain")  # whatever logging an earlier test set up
    clf = finegrain.fit(split_folder, backbone="tiny", runtime="torch", progress=False)
    capsys.readouterr()
    test_dir = split_folder / "test"
    finegrain.evaluate(clf, split_folder, progress=False)
    clf.predict([test_dir], progress=False)
    finegrain.discover(clf, test_dir, runtime="torch", progress=False)
    assert capsys.readouterr().err == ""
    finegrain.embed_samples(finegrain.load_data(test_dir / "blue_jay").samples, "tiny", progress=True, desc="mine")
    assert "mine" in capsys.readouterr().err
    finegrain.discover(clf, test_dir, runtime="torch", progress=True)
    assert "clustering 12 unlabelled images with 24 labelled ones: done in" in capsys.readouterr().err
