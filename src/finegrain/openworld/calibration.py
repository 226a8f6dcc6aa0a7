"""Temperature scaling (Guo et al. 2017): one scalar T fitted on held-out images so that softmax(z / T) means
what it says. Dividing every logit by the same T > 0 never changes which class ranks first, so top-1 stays put.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError, NotFittedError
from ..heads.base import softmax
from ..heads.prototype import fit_temperature
from ..metrics import expected_calibration_error, reliability_bins


class TemperatureScaler:
    """`fit(logits, y)` learns `temperature_` by likelihood; `transform` divides logits by it."""

    def fit(self, logits: np.ndarray, y: np.ndarray) -> "TemperatureScaler":
        z, t = _check(logits, y)
        self.temperature_ = 1.0 / fit_temperature(z, t)
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        if not hasattr(self, "temperature_"):
            raise NotFittedError("temperature scaler is not fitted", expected="a fitted scaler",
                                 found="an unfitted one", fix="call fit(logits, y) on validation logits first")
        return np.asarray(logits, dtype=np.float64) / self.temperature_

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        return softmax(self.transform(logits))


def _check(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z, t = np.asarray(logits, dtype=np.float64), np.asarray(y)
    if z.ndim != 2 or t.shape != (len(z),) or len(z) < 2:
        raise DataError("calibration needs logits (N, C) and N integer labels, N ≥ 2",
                        expected="matching shapes", found=f"logits {z.shape}, labels {t.shape}",
                        fix="calibrate on a validation split with at least 2 images")
    return z, t.astype(np.int64)


def calibration_summary(logits: np.ndarray, y: np.ndarray, temperature: float, n_bins: int = 15) -> dict[str, Any]:
    """ECE, NLL and reliability bins before and after scaling: JSON-ready, enough to redraw the diagram."""
    z, t = _check(logits, y)
    out: dict[str, Any] = {"temperature": float(temperature), "n": int(len(t)), "n_bins": n_bins}
    for name, T in (("before", 1.0), ("after", float(temperature))):
        p = softmax(z / T)
        bins = reliability_bins(t, p, n_bins)
        out[name] = {"ece": expected_calibration_error(t, p, n_bins),
                     "nll": float(-np.log(np.maximum(p[np.arange(len(t)), t], 1e-12)).mean()),
                     "top1": float((p.argmax(1) == t).mean()),
                     "bins": {k: [None if np.isnan(v) else float(v) for v in arr] for k, arr in bins.items()}}
    return out
