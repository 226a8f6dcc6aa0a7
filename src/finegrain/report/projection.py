"""2-D map of embeddings for the report: PCA to at most 50 dimensions, then t-SNE (seeded, so reproducible).

t-SNE runs on one OpenMP thread: on a shared 2-core machine its spinning worker threads made a 12-point map
take 18 s instead of 0.2 s, and 500 iterations are enough for a picture (about 15 s for 3,000 points).
"""
from __future__ import annotations

import numpy as np

PCA_DIMS = 50
TSNE_ITERATIONS = 500


def embedding_map(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) → (N, 2). t-SNE keeps neighbourhoods, which is what "are these classes separable?" asks;
    with fewer than 5 points there are no neighbourhoods to keep, so the first two principal axes are used."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    if n < 5:
        out = np.zeros((n, 2), dtype=np.float32)
        if n > 1:
            k = min(2, n - 1, X.shape[1])
            out[:, :k] = PCA(n_components=k, random_state=seed).fit_transform(X)
        return out
    reduced = PCA(n_components=min(PCA_DIMS, n - 1, X.shape[1]), random_state=seed).fit_transform(X)
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto",
                max_iter=TSNE_ITERATIONS)
    from ..progress import phase

    with threadpool_limits(1), phase(f"t-SNE map of {n} embeddings"):
        return tsne.fit_transform(reduced).astype(np.float32)
