"""Inductive few-shot baselines: each query is classified alone by a head fitted on the support set only.

They are the product's own heads (what `finegrain fit --shots K` trains), so the episodic numbers say what
a user gets, not what a re-implementation gets.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..heads import LogisticHead, PrototypeHead
from .episodes import Episode

FEW_SHOT_LOGISTIC_C = 0.1

EpisodeMethod = Callable[[np.ndarray, Sequence[Episode]], list[np.ndarray]]


def prototype_predictions(X: np.ndarray, episodes: Sequence[Episode], shrinkage: float = 0.0) -> list[np.ndarray]:
    """Nearest centred-cosine prototype (the `prototype` head) per episode."""
    return [PrototypeHead(centre=True, shrinkage=shrinkage).fit(X[e.support], e.support_labels).predict(X[e.query])
            for e in episodes]


def logistic_predictions(X: np.ndarray, episodes: Sequence[Episode], C: float = FEW_SHOT_LOGISTIC_C) -> list[np.ndarray]:
    """The `logistic` head with a fixed, strong regularisation (a 1-shot support has nothing to validate C on)."""
    return [LogisticHead(C=C).fit(X[e.support], e.support_labels).predict(X[e.query]) for e in episodes]
