"""A temperature is fitted only with enough held-out images per class; otherwise T=1 and a warning."""
from __future__ import annotations

import json
import logging

import numpy as np

from finegrain.heads import make_head
from finegrain.openworld.fitting import MIN_HELD_OUT_PER_CLASS, calibrate_and_detect


def blobs(n_per_class: int, n_classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_classes, 8))
    y = np.repeat(np.arange(n_classes), n_per_class)
    return (centres[y] + rng.normal(0, 0.8, (len(y), 8))).astype(np.float32), y.astype(str)


def test_too_few_held_out_images_per_class_keep_t1_with_a_warning(caplog):
    X, y = blobs(3)  # a 20 % hold-out leaves 1 image per class
    head = make_head("logistic", C=1.0).fit(X, y)
    with caplog.at_level(logging.WARNING, logger="finegrain"):
        temperature, summary, detector = calibrate_and_detect(head, X, y, val_split=0.2)
    assert temperature == 1.0 and summary["applied"] is False and detector is not None
    assert summary["skipped"].startswith("only 4 held-out images for 4 classes")
    assert f"at least {MIN_HELD_OUT_PER_CLASS} per class" in caplog.text


def test_enough_held_out_images_fit_a_temperature():
    X, y = blobs(30)
    head = make_head("logistic", C=1.0).fit(X, y)
    temperature, summary, _ = calibrate_and_detect(head, X, y, val_split=0.2)
    assert "skipped" not in summary and summary["temperature"] != 1.0


def test_fit_cli_warns_and_saves_t1(cli, make_classes, tmp_path):
    root = make_classes(tmp_path / "birds", 3)
    code, _, err = cli("fit", root, "-o", tmp_path / "m", "--backbone", "tiny", "--head", "logistic", "--C", "1")
    assert code == 0 and "held-out images for 3 classes" in err and "confidences keep T=1" in err
    assert "kept the head's own probabilities" not in err
    assert json.loads((tmp_path / "m" / "config.json").read_text())["temperature"] == 1.0
