"""Descriptor terms: the phrases several seen classes share ("brown wings") as explicit signature dimensions.

An aligned class signature is [unit bag of its descriptor terms ‖ text_weight · its sentence-embedding
vector]. The term half says exactly which traits a class has and how strongly (an attribute vector, read
from the descriptions' weights); the text half says what those traits mean, so a new class that
recombines known traits lands where it should. Terms come only from the seen classes' descriptions, and
only those at least two seen classes share: a trait of one class alone cannot be learnt as transferable
and is left to the text half. On cub100 (25 unseen species) the two halves together beat either alone.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .ensemble import class_vectors
from .head import DESCRIPTOR, TextRows


def shared_terms(rows: TextRows, classes: Sequence[int] | None = None, min_classes: int = 2) -> list[str]:
    """Sorted descriptor texts that at least `min_classes` of `classes` (default all) use with a positive weight."""
    keep = (rows.row_kind == DESCRIPTOR) & (rows.coef > 0)
    if classes is not None:
        keep &= np.isin(rows.row_class, np.asarray(list(classes), dtype=np.int64))
    users: dict[str, set[int]] = {}
    for i in np.flatnonzero(keep):
        users.setdefault(rows.texts[i], set()).add(int(rows.row_class[i]))
    return sorted(t for t, cls in users.items() if len(cls) >= min_classes)


def with_terms(rows: TextRows, vocabulary: Sequence[str], text_weight: float) -> TextRows:
    """Text-space rows → signature-space rows [terms ‖ text_weight · text], rescaled so that every class
    vector Σ coef·row is still exact and unit length (explanations keep splitting scores per row)."""
    index = {t: i for i, t in enumerate(vocabulary)}
    term = np.asarray([index.get(t, -1) if k == DESCRIPTOR else -1 for t, k in zip(rows.texts, rows.row_kind)],
                      dtype=np.int64)
    n_classes = int(rows.row_class.max()) + 1
    has = term >= 0
    bag = np.zeros((n_classes, len(vocabulary)))
    np.add.at(bag, (rows.row_class[has], term[has]), rows.coef[has])
    bag_norm = np.linalg.norm(bag, axis=1)[rows.row_class]
    placed = has & (bag_norm > 0)
    term_part = np.zeros((len(term), len(vocabulary)), dtype=np.float32)
    term_part[placed, term[placed]] = 1.0 / bag_norm[placed]
    emb = np.hstack([term_part, float(text_weight) * rows.row_emb]).astype(np.float32)
    norm = np.linalg.norm(class_vectors(emb, rows.row_class, rows.coef, n_classes), axis=1)
    coef = (rows.coef / np.maximum(norm, 1e-12)[rows.row_class]).astype(np.float32)
    return TextRows(list(rows.texts), rows.row_class, rows.row_kind, emb, coef, rows.coarse)
