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
