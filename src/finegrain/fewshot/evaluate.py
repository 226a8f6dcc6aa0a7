"""Episodic few-shot evaluation: inductive and transductive methods side by side on the same seeded episodes.

Protocol: the images are split into a validation pool and a test pool that share no image (the data's
test split is the test pool when it has one, otherwise a seeded stratified half). The transductive
hyper-parameters are learned by unrolled EM on episodes of the validation pool only; every method is then
scored on the same test episodes, and each reports the mean accuracy over episodes with a 95 % confidence
interval (1.96 standard errors).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.images import DEFAULT_MAX_PIXELS
from ..errors import DataError
from ..heads.base import stratified_holdout
from .episodes import DEFAULT_DIRICHLET_ALPHA, Episode, sample_episodes
from .inductive import logistic_predictions, prototype_predictions
from .transductive import EMParams, learn_params, predict_episodes

METHODS = ("prototype", "logistic", "em", "unem")
METHOD_NAMES = {"prototype": "inductive prototypes (centred cosine)",
                "logistic": "inductive logistic (C=0.1)",
                "em": "transductive EM, hand-set hyper-parameters",
                "unem": "transductive EM, hyper-parameters learned by unrolling (UNEM)"}


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95 % confidence interval."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()) if len(v) else float("nan"), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(len(v)))


def episode_accuracies(predictions: Sequence[np.ndarray], episodes: Sequence[Episode]) -> np.ndarray:
    return np.array([float(np.mean(np.asarray(p) == e.query_labels)) for p, e in zip(predictions, episodes)])


def validation_test_pools(y: np.ndarray, splits: Sequence[str | None], seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(validation indices, test indices, how): the test split when there is one, else a seeded half per class."""
    splits = np.asarray([s or "" for s in splits])
    if (splits == "test").any() and (splits != "test").any():
        return np.flatnonzero(splits != "test"), np.flatnonzero(splits == "test"), \
            "validation episodes from the non-test splits, test episodes from the test split"
    val, test = stratified_holdout(y, 0.5, seed)
    return val, test, f"seeded stratified halves (seed {seed}): validation episodes from one, test episodes from the other"


def evaluate_on_embeddings(X: np.ndarray, labels: Sequence[str], splits: Sequence[str | None], *, ways: int, shots: int,
                           queries: int, episodes: int, seed: int = 0, imbalance_alpha: float | None = None,
                           methods: Sequence[str] = METHODS, learn_iterations: int = 150,
                           params: EMParams | None = None) -> dict[str, Any]:
    """Score `methods` on `episodes` seeded test episodes; learn the UNEM hyper-parameters on the validation
    pool first (balanced + imbalanced episodes), unless `params` are given."""
    X = np.asarray(X, dtype=np.float32)
    classes, y = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    val_idx, test_idx, how = validation_test_pools(y, splits, seed)
    t0 = time.perf_counter()
    test_eps = sample_episodes(y[test_idx], ways=ways, shots=shots, queries=queries, episodes=episodes, seed=seed,
                               imbalance_alpha=imbalance_alpha)
    X_test = X[test_idx]
    report: dict[str, Any] = {
        "setting": {"ways": ways, "shots": shots, "queries": queries, "episodes": episodes, "seed": seed,
                    "query_distribution": "balanced" if imbalance_alpha is None else f"dirichlet(alpha={imbalance_alpha})"},
        "protocol": how, "n_images": len(X), "n_classes": len(classes),
        "n_validation_images": len(val_idx), "n_test_images": len(test_idx), "methods": {}}
    if "unem" in methods and params is None:
        t = time.perf_counter()
        params = learn_params(X[val_idx], y[val_idx], ways=ways, shots=shots, queries=queries,
                              iterations=learn_iterations, seed=seed)
        report["learn_seconds"] = round(time.perf_counter() - t, 1)
    run = {"prototype": lambda: prototype_predictions(X_test, test_eps),
           "logistic": lambda: logistic_predictions(X_test, test_eps),
           "em": lambda: predict_episodes(X_test, test_eps, EMParams.initial()),
           "unem": lambda: predict_episodes(X_test, test_eps, params)}
    for name in methods:
        t = time.perf_counter()
        acc, ci = mean_ci95(episode_accuracies(run[name](), test_eps))
        report["methods"][name] = {"description": METHOD_NAMES[name], "accuracy": acc, "ci95": ci,
                                   "seconds": round(time.perf_counter() - t, 1)}
    if params is not None and "unem" in methods:
        report["unem_params"] = params.to_dict()
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def fewshot_eval(data: str | Path, *, backbone: str, ways: int, shots: int, queries: int, episodes: int,
                 seed: int = 0, imbalance_alpha: float | None = None, methods: Sequence[str] = METHODS,
                 cache_dir: str | Path | None = None, batch_size: int = 32, workers: int = 2,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = False) -> dict[str, Any]:
    """Episodic evaluation of DATA (images, a manifest, or a `finegrain embed` folder) with `backbone`."""
    from ..backbones import get_backbone
    from ..data.sources import load_data
    from ..embed import embed_samples, is_embeddings_dir, load_embeddings
    from ..store import EmbeddingCache

    if is_embeddings_dir(data):
        emb = load_embeddings(data)
        if emb.backbone_id != backbone:
            raise DataError(f"embeddings in {data} were made with '{emb.backbone_id}'",
                            expected=f"embeddings of --backbone {backbone}", found=emb.backbone_id,
                            fix=f"pass --backbone {emb.backbone_id}, or re-embed with --backbone {backbone}")
    else:
        samples = [s for s in load_data(data).samples if s.label is not None]
        with EmbeddingCache(cache_dir) as cache:
            emb = embed_samples(samples, get_backbone(backbone), cache=cache, batch_size=batch_size,
                                workers=workers, max_pixels=max_pixels, progress=progress)
    emb = emb.subset([s.label is not None for s in emb.samples])
    if not len(emb.samples):
        raise DataError(f"no labelled images in {data}", expected="images in class folders or a label column",
                        found="none", fix="point fewshot-eval at labelled data")
    report = evaluate_on_embeddings(emb.X, emb.labels, [s.split for s in emb.samples], ways=ways, shots=shots,
                                    queries=queries, episodes=episodes, seed=seed, imbalance_alpha=imbalance_alpha,
                                    methods=methods)
    report.update({"data": str(data), "backbone": emb.backbone_id, "n_unreadable": len(emb.errors)})
    return report


__all__ = ["METHODS", "mean_ci95", "episode_accuracies", "validation_test_pools", "evaluate_on_embeddings",
           "fewshot_eval", "DEFAULT_DIRICHLET_ALPHA"]
