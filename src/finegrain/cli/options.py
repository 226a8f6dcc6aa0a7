"""argparse `type=` validators: an out-of-range option is a usage error (exit 2) that says what is allowed,
caught before any work starts instead of surfacing later as a traceback deep in the library."""
from __future__ import annotations

import argparse
import math
from typing import Callable


def positive_int(text: str) -> int:
    """An integer ≥ 1 (batch sizes, worker counts, k, top-k, shots, pixel limits)."""
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer ≥ 0 (counts where 0 means 'none')."""
    value = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (e.g. the inverse regularisation --C)."""
    value = _number(text, float, "a number")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number ≥ 0 (ages in days, where 0 means 'now')."""
    value = _number(text, float, "a number")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text}")
    return value


def fraction(low_open: bool, high_open: bool) -> Callable[[str], float]:
    """A number in the interval between 0 and 1, each end included unless `*_open`."""
    def parse(text: str) -> float:
        value = _number(text, float, "a number")
        too_low = value <= 0 if low_open else value < 0
        too_high = value >= 1 if high_open else value > 1
        if not math.isfinite(value) or too_low or too_high:
            interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value
    parse.__name__ = "fraction"  # argparse names the type in its 'invalid ... value' messages
    return parse


def _number(text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


OOD_SCORES = ["msp", "maxlogit", "energy", "mahalanobis", "knn"]


def add_calibration_options(p: argparse.ArgumentParser) -> None:
    """--calibrate / --ood-score: what every command that fits a head does with its held-out images."""
    p.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                   help="fit a temperature and the 'unknown' detector on held-out images (default on)")
    p.add_argument("--ood-score", default="msp", choices=OOD_SCORES,
                   help="score behind `predict --unknown` (default msp: max softmax of the calibrated head)")


def add_tta_option(p: argparse.ArgumentParser, default: str | None = "none", default_says: str | None = None) -> None:
    """--tta: the test-time views a fitted head learns on and its model predicts with (`finegrain.tta`)."""
    from ..tta import CLASSIFIER_TTA

    p.add_argument("--tta", default=default, choices=list(CLASSIFIER_TTA),
                   help="every embedding of the model (training, calibration, each prediction) averages the image "
                        "with views of it, one network pass each: flip its mirror image (photos of upright "
                        "subjects), rot4 its three quarter turns (subjects in any orientation: plankton, cells, "
                        f"pollen), d4 every turn and mirror (7 views) (default {default_says or default})")
