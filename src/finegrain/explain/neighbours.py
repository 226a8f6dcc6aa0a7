"""Nearest training examples by cosine similarity on cached embeddings: "which training images is this like?"."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embed import Embeddings, is_embeddings_dir, load_embeddings
from ..heads.base import l2_normalise
from ..store import EmbeddingCache

log = logging.getLogger("finegrain")


@dataclass(frozen=True)
class Neighbour:
    path: str
    label: str | None
    similarity: float


def cosine_top_k(queries: np.ndarray, memory: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), each (N, k'), k' = min(k, len(memory)); most similar first, ties to lower index."""
    k = min(k, len(memory))
    if k < 1 or len(queries) == 0:
        return np.zeros((len(queries), 0), dtype=np.float32), np.zeros((len(queries), 0), dtype=np.int64)
    sims = l2_normalise(np.asarray(queries, dtype=np.float32)) @ l2_normalise(np.asarray(memory, dtype=np.float32)).T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, axis=1), idx


def nearest_examples(queries: np.ndarray, reference: Embeddings, k: int) -> list[list[Neighbour]]:
    """For each query embedding, the k most similar reference images with their labels."""
    sims, idx = cosine_top_k(queries, reference.X, k)
    return [[Neighbour(str(reference.samples[j].path), reference.samples[j].label, float(s))
             for s, j in zip(row_s, row_i)] for row_s, row_i in zip(sims, idx)]


def reference_embeddings(clf: Any, data: str | Path | None = None, *, cache_dir: str | Path | None = None,
                         **embed_kw: Any) -> Embeddings | None:
    """Embeddings of the training images (DATA, or the data the model was fitted on) to draw neighbours from.

    Returns None, with a warning, when that data is gone: explanations still work without neighbours.
    """
    from ..data.sources import load_data
    from ..training import training_samples

    source = data if data is not None else clf.info.get("training", {}).get("data")
    if not source or not Path(source).exists():
        log.warning("no nearest training examples: the training data %s is not available "
                    "(pass --train DATA to point at it)", source or "(not recorded in the model)")
        return None
    if is_embeddings_dir(source):
        emb = load_embeddings(source)
        clf.check_embeddings(emb)
        has_splits = any(s.split for s in emb.samples)
        return emb.subset([s.label is not None and (not has_splits or s.split in ("train", "val"))
                           for s in emb.samples])
    train, val = training_samples(load_data(source))
    with EmbeddingCache(cache_dir) as cache:
        emb = clf.embed(train + val, cache=cache, **embed_kw)
    return emb.subset([s.label is not None for s in emb.samples])
