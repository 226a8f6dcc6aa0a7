"""Calibration and the unknown threshold, fitted on images the head did not learn from.

The final head learns from every labelled image, so its own logits on those images are over-confident. A twin
head with the same hyper-parameters is fitted on the training part only; its logits on the held-out part (the
validation split, or a stratified `val_split` fraction) set the temperature and the threshold, which are then
used with the final head.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..heads import Head, make_head
from ..heads.base import stratified_holdout
from .calibration import TemperatureScaler, calibration_summary
from .detector import DEFAULT_METHOD, OODDetector

log = logging.getLogger("finegrain")
MIN_HELD_OUT = 2  # fewer held-out images cannot fit a temperature
# A temperature fitted on fewer held-out images per class (on average) follows noise: T=1 is kept instead.
MIN_HELD_OUT_PER_CLASS = 2


def _twin(head: Head) -> Head:
    """An unfitted head with the fitted one's parameters; a hyper-parameter chosen at fit (C_) is kept fixed.
    A head that brings a network trained elsewhere (fine-tuning's RBI) makes its own twin around it."""
    if hasattr(head, "unfitted_twin"):
        return head.unfitted_twin()
    params = head.get_params()
    if "C" in params and hasattr(head, "C_"):
        params["C"] = head.C_
    return make_head(head.name, **params)


def keeps_temperature(summary: dict[str, Any]) -> bool:
    """A temperature is fitted by likelihood; it is kept only if it also lowers the held-out ECE, so calibration
    never makes the confidences users see worse (prototype and kNN heads are often already well calibrated)."""
    return summary["after"]["ece"] < summary["before"]["ece"]


def too_few_per_class(n_held: int, n_classes: int) -> str | None:
    """Why a temperature should not be fitted on `n_held` images of `n_classes` classes, or None if it may."""
    if n_held >= MIN_HELD_OUT_PER_CLASS * n_classes:
        return None
    return (f"only {n_held} held-out images for {n_classes} classes (at least {MIN_HELD_OUT_PER_CLASS} per class "
            "on average are needed to fit a temperature)")


def held_out_split(y: np.ndarray, y_val: np.ndarray | None, val_split: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit part, held-out part) into concat(train, val): the val split when there is one."""
    if y_val is not None and len(y_val):
        return np.arange(len(y)), np.arange(len(y), len(y) + len(y_val))
    return stratified_holdout(np.asarray(y), val_split, seed)


def calibrate_and_detect(head: Head, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
                         y_val: np.ndarray | None = None, *, val_split: float = 0.2, seed: int = 0,
                         ood_method: str = DEFAULT_METHOD, target_tpr: float = 0.95
                         ) -> tuple[float, dict[str, Any], OODDetector] | None:
    """(temperature, calibration summary, OOD detector with threshold) for the fitted `head`; None when too
    few images can be held out (e.g. one or two per class)."""
    X_all = X if X_val is None or not len(X_val) else np.concatenate([X, X_val])
    y_all = np.asarray(y) if y_val is None or not len(y_val) else np.concatenate([y, y_val])
    fit_idx, held_idx = held_out_split(y, y_val, val_split, seed)
    if len(held_idx) < MIN_HELD_OUT:
        return None
    twin = _twin(head).fit(X_all[fit_idx], y_all[fit_idx])
    logits = twin.decision_function(X_all[held_idx])
    y_held = twin.encode_labels(y_all[held_idx])
    skipped = too_few_per_class(len(held_idx), len(twin.classes_))
    fitted = 1.0 if skipped else TemperatureScaler().fit(logits, y_held).temperature_
    summary = calibration_summary(logits, y_held, fitted)
    summary["applied"] = skipped is None and keeps_temperature(summary)
    if skipped:
        summary["skipped"] = skipped
        log.warning("%s: confidences keep T=1 (add images or a val split to calibrate them)", skipped)
    temperature = fitted if summary["applied"] else 1.0
    summary["held_out"] = "val split" if y_val is not None and len(y_val) else f"{val_split:.0%} of train"
    params = {"method": ood_method, "temperature": temperature, "target_tpr": target_tpr}
    twin_detector = OODDetector(**params).fit(X_all[fit_idx], twin.encode_labels(y_all[fit_idx]))
    twin_detector.fit_threshold(X_all[held_idx], logits)
    detector = OODDetector(**params).fit(X_all, head.encode_labels(y_all))
    detector.threshold_ = twin_detector.threshold_
    return temperature, summary, detector
