"""Temperature scaling: recovers a known temperature, lowers ECE, never changes the top-1 class."""
from __future__ import annotations

import numpy as np
import pytest

from finegrain.errors import NotFittedError
from finegrain.heads.base import softmax
from finegrain.metrics import expected_calibration_error
from finegrain.openworld.calibration import TemperatureScaler, calibration_summary


def sampled(T_true: float, n: int = 3000, seed: int = 0):
    """Logits whose labels are drawn from softmax(z / T_true): the right temperature is T_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, (n, 5))
    p = softmax(z / T_true).astype(np.float64)
    y = np.array([rng.choice(5, p=row / row.sum()) for row in p])
    return z, y


@pytest.mark.parametrize("T_true", [0.5, 2.5])
def test_recovers_temperature_and_lowers_ece(T_true):
    z, y = sampled(T_true)
    scaler = TemperatureScaler().fit(z, y)
    assert scaler.temperature_ == pytest.approx(T_true, rel=0.1)
    after = scaler.predict_proba(z)
    assert expected_calibration_error(y, after) < expected_calibration_error(y, softmax(z))
    assert (after.argmax(1) == z.argmax(1)).all()


def test_summary_reports_before_and_after():
    z, y = sampled(2.0, n=500)
    s = calibration_summary(z, y, 2.0)
    assert s["after"]["ece"] < s["before"]["ece"]
    assert s["before"]["top1"] == s["after"]["top1"]
    assert sum(s["after"]["bins"]["count"]) == 500


def test_unfitted_scaler_says_so():
    with pytest.raises(NotFittedError):
        TemperatureScaler().transform(np.zeros((2, 3)))


def test_reliability_diagram_png_and_svg(tmp_path):
    from finegrain.openworld.plots import save_reliability_diagram

    z, y = sampled(2.0, n=300)
    paths = save_reliability_diagram(calibration_summary(z, y, 2.0), [tmp_path / "r.png", tmp_path / "r.svg"])
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "r.svg").read_text()
    assert len(paths) == 2


def test_temperature_is_kept_only_when_it_lowers_held_out_ece():
    from finegrain.openworld.fitting import keeps_temperature
    assert keeps_temperature({"before": {"ece": 0.20}, "after": {"ece": 0.03}})
    assert not keeps_temperature({"before": {"ece": 0.04}, "after": {"ece": 0.05}})


def test_rejected_temperature_leaves_probabilities_unscaled(monkeypatch):
    import finegrain.openworld.fitting as fitting
    from finegrain.heads import make_head
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.0, (20, 8)) for c in (-1, 0, 1)]).astype(np.float32)
    y = np.repeat(np.array(["a", "b", "c"], dtype=object), 20)
    head = make_head("prototype").fit(X, y)
    T, summary, _ = fitting.calibrate_and_detect(head, X, y, seed=0)
    assert summary["applied"] and T == summary["temperature"]
    monkeypatch.setattr(fitting, "keeps_temperature", lambda s: False)
    T, summary, detector = fitting.calibrate_and_detect(head, X, y, seed=0)
    assert T == 1.0 and not summary["applied"] and summary["temperature"] != 1.0
    assert detector.temperature == 1.0
