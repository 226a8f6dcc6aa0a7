"""Seeded N-way K-shot episodes over a labelled pool, with balanced or Dirichlet-imbalanced query sets.

Episodes are index arrays into the pool, so the same episodes can be scored by every method. Imbalanced
query sets follow the "realistic transductive few-shot" protocol (class proportions drawn from a symmetric
Dirichlet, alpha = 2 by default) because a transductive method that assumes balance can look good on
balanced episodes and fail in the field, where a query folder is rarely balanced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data.samples import Sample
from ..errors import ConfigError, DataError

DEFAULT_DIRICHLET_ALPHA = 2.0


@dataclass(frozen=True)
class Episode:
    """Indices into the pool; labels are episode-local ids 0..ways-1 (`classes[i]` is the pool's class id)."""

    classes: np.ndarray
    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray


def _positive_int(value: int, name: str, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise ConfigError(f"{name} must be an integer ≥ {minimum}", expected=f"{name} ≥ {minimum}",
                          found=str(value), fix=f"pass e.g. {name} {max(minimum, 5)}")
    return int(value)


def eligible_classes(y: np.ndarray, per_class: int) -> np.ndarray:
    """Class ids with at least `per_class` images: only those can give `shots + queries` distinct images."""
    ids, counts = np.unique(y, return_counts=True)
    return ids[counts >= per_class]


def dirichlet_counts(rng: np.random.Generator, ways: int, total: int, capacity: np.ndarray,
                     alpha: float) -> np.ndarray:
    """Query counts per class summing to `total`, proportions ~ Dirichlet(alpha), never above `capacity`.

    Counts over a class's capacity go to the classes with room, largest proportion first, so the
    total (and hence the batch shape) stays fixed.
    """
    p = rng.dirichlet(np.full(ways, float(alpha)))
    raw = p * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    overflow = int(np.maximum(counts - capacity, 0).sum())
    counts = np.minimum(counts, capacity)
    for i in np.argsort(-p, kind="stable"):
        take = min(overflow, int(capacity[i] - counts[i]))
        counts[i] += take
        overflow -= take
    return counts


def sample_episodes(y: Sequence[int] | np.ndarray, *, ways: int, shots: int, queries: int, episodes: int,
                    seed: int = 0, imbalance_alpha: float | None = None) -> list[Episode]:
    """`episodes` seeded episodes: `ways` classes, `shots` support images and about `queries` query images
    per class (exactly `queries` when balanced; `ways * queries` in total, Dirichlet-split, when
    `imbalance_alpha` is given). Only classes with at least `shots + queries` images are drawn."""
    ways, shots = _positive_int(ways, "--ways", 2), _positive_int(shots, "--shots")
    queries, episodes = _positive_int(queries, "--queries"), _positive_int(episodes, "--episodes")
    if imbalance_alpha is not None and not imbalance_alpha > 0:
        raise ConfigError("the Dirichlet concentration must be positive", expected="alpha > 0 (2 is usual)",
                          found=str(imbalance_alpha), fix="pass e.g. --dirichlet-alpha 2")
    y = np.asarray(y)
    pool = eligible_classes(y, shots + queries)
    if len(pool) < ways:
        raise DataError(f"only {len(pool)} classes have the {shots + queries} images a {ways}-way {shots}-shot "
                        f"episode with {queries} queries per class needs",
                        expected=f"at least {ways} such classes", found=f"{len(pool)}",
                        fix="lower --ways, --shots or --queries, or add images")
    by_class = {c: np.flatnonzero(y == c) for c in pool}
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        classes = rng.choice(pool, size=ways, replace=False)
        if imbalance_alpha is None:
            n_query = np.full(ways, queries)
        else:
            capacity = np.array([len(by_class[c]) - shots for c in classes])
            n_query = dirichlet_counts(rng, ways, ways * queries, capacity, imbalance_alpha)
        sup, sup_y, qry, qry_y = [], [], [], []
        for i, c in enumerate(classes):
            idx = rng.permutation(by_class[c])[: shots + n_query[i]]
            sup.append(idx[:shots])
            qry.append(idx[shots:])
            sup_y.append(np.full(shots, i))
            qry_y.append(np.full(n_query[i], i))
        order = rng.permutation(int(n_query.sum()))
        out.append(Episode(classes=classes, support=np.concatenate(sup), support_labels=np.concatenate(sup_y),
                           query=np.concatenate(qry)[order], query_labels=np.concatenate(qry_y)[order]))
    return out


def select_shots(samples: Sequence[Sample], shots: int, seed: int = 0) -> list[Sample]:
    """At most `shots` labelled samples per class, drawn with a seed; unlabelled samples are dropped.

    Chosen from the file list, before any image is read, so a K-shot fit decodes only K images per class.
    """
    shots = _positive_int(shots, "--shots")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.label is not None:
            by_label.setdefault(s.label, []).append(i)
    keep: set[int] = set()
    for label in sorted(by_label):
        keep.update(int(i) for i in rng.permutation(by_label[label])[:shots])
    return [s for i, s in enumerate(samples) if i in keep]
