"""Transductive few-shot inference: EM over the whole query set, its hyper-parameters learned by unrolling.

The model (UNEM-style, for vision features): each class is an isotropic Gaussian around a mean that starts at
the support mean; a query set is explained by soft assignments u (E-step) and class means + proportions pi
(M-step, support images kept as labelled evidence). The E-step logits are

    -beta_t * ||z - mu_k||^2 + gamma_t * log pi_k

where beta_t (sharpness / temperature) and gamma_t (class-balance strength: > 0 lets frequent classes grow,
< 0 pushes towards balance) and the weight w_t of the support in the M-step are per-step hyper-parameters.
Instead of grid-searching them, the T steps are unrolled into a differentiable network and the 3T numbers are
fitted by gradient descent on validation episodes (cross-entropy of the last step's assignments), half with
balanced and half with Dirichlet-imbalanced query sets, so they are not tuned to an assumed class balance.

Every step is a sum over queries, so the result does not depend on the order of the query set.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .episodes import DEFAULT_DIRICHLET_ALPHA, Episode, sample_episodes

DEFAULT_STEPS = 10
INITIAL = {"beta": 10.0, "gamma": 1.0, "support_weight": 1.0}


@dataclass
class EMParams:
    """Per-step hyper-parameters of the unrolled EM, plus a record of where they were learned."""

    log_beta: list[float]
    gamma: list[float]
    log_support_weight: list[float]
    learned_on: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def initial(cls, steps: int = DEFAULT_STEPS) -> "EMParams":
        """Plain EM (balance strength 1, support counted once): the starting point of learning."""
        return cls([math.log(INITIAL["beta"])] * steps, [INITIAL["gamma"]] * steps,
                   [math.log(INITIAL["support_weight"])] * steps, {"source": "initial (not learned)"})

    @property
    def steps(self) -> int:
        return len(self.gamma)

    def to_dict(self) -> dict[str, Any]:
        return {"log_beta": list(map(float, self.log_beta)), "gamma": list(map(float, self.gamma)),
                "log_support_weight": list(map(float, self.log_support_weight)), "learned_on": self.learned_on}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EMParams":
        try:
            lists = [list(map(float, d[k])) for k in ("log_beta", "gamma", "log_support_weight")]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError("transductive hyper-parameters are malformed",
                            expected="log_beta, gamma and log_support_weight lists of numbers",
                            found=repr(exc), fix="refit the model with this finegrain version") from exc
        if len({len(v) for v in lists}) != 1 or not lists[0]:
            raise DataError("transductive hyper-parameters have inconsistent lengths",
                            expected="one value per EM step in each list", found=str([len(v) for v in lists]),
                            fix="refit the model with this finegrain version")
        return cls(*lists, learned_on=dict(d.get("learned_on", {})))

    def tensors(self, requires_grad: bool = False):
        import torch
        return [torch.tensor(v, dtype=torch.float32, requires_grad=requires_grad)
                for v in (self.log_beta, self.gamma, self.log_support_weight)]


# Defaults for models whose own data is too small to learn from (e.g. `fit --shots 1`): learned by
# `python benchmarks/fewshot.py` on cub100 train-split episodes (efficientnet_lite0, 5-way 1-shot,
# 15 queries per class, half balanced and half Dirichlet(2)); see benchmarks/results/fewshot.json.
DEFAULT_PARAMS = EMParams(
    log_beta=[1.2148, 2.1353, 2.1728, 2.5621, 2.6016, 2.6812, 2.5024, 2.0329, 1.8340, 2.3155],
    gamma=[0.7787, 0.1200, 0.5424, 0.7709, 0.7934, 0.6854, 0.5066, 0.4668, 0.2564, 0.2353],
    log_support_weight=[-0.9488, -0.4976, 0.1400, 0.3804, 0.1031, 0.0170, 0.1259, 0.2227, 1.1684, 0.0000],
    learned_on={"source": "shipped defaults: unrolled on cub100 train-split episodes (benchmarks/fewshot.py)",
                "backbone": "efficientnet_lite0", "ways": 5, "shots": 1, "queries": 15, "imbalance_alpha": 2.0,
                "episodes": 3200, "steps": 10})


@contextmanager
def one_torch_thread():
    """EM works on small matrices, where handing work between threads costs more than it saves (on a
    loaded 2-core machine, several times more); the caller's thread setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def normalise_episode(support, query, centre=None):
    """Centre on the support mean (or on `centre`), then L2-normalise: the prototype head's feature map.

    Centring removes the direction every image of a domain shares, which otherwise dominates cosine
    similarity. It uses the support only, exactly as the inductive prototype head does, so the transductive
    method differs from it by the EM steps alone, and a saved prototype head's centre can be reused.
    """
    if centre is None:
        centre = support.mean(dim=-2, keepdim=True)
    zs, zq = support - centre, query - centre
    return (zs / zs.norm(dim=-1, keepdim=True).clamp_min(1e-12),
            zq / zq.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def class_sums(z_support, support_labels, n_classes: int):
    """(B, C, D) sums and (B, C) counts of the support features per class: all EM needs of the support."""
    import torch

    onehot = torch.nn.functional.one_hot(support_labels, n_classes).to(z_support.dtype)
    return onehot.transpose(-1, -2) @ z_support, onehot.sum(dim=-2)


def unrolled_em(sums, counts, z_query, log_beta, gamma, log_support_weight):
    """Last E-step logits (B, N, C) after len(gamma) EM steps; differentiable in the hyper-parameters."""
    import torch

    n_classes, n_query = sums.shape[-2], z_query.shape[-2]
    means = sums / counts.clamp_min(1e-12).unsqueeze(-1)
    log_pi = torch.full(counts.shape, -math.log(n_classes), dtype=z_query.dtype)
    q_sq = (z_query ** 2).sum(-1, keepdim=True)
    logits = None
    for t in range(len(gamma)):
        dist = q_sq - 2 * z_query @ means.transpose(-1, -2) + (means ** 2).sum(-1).unsqueeze(-2)
        logits = -torch.exp(log_beta[t]) * dist + gamma[t] * log_pi.unsqueeze(-2)
        u = torch.softmax(logits, dim=-1)
        mass = u.sum(dim=-2)
        w = torch.exp(log_support_weight[t])
        means = (w * sums + u.transpose(-1, -2) @ z_query) / (w * counts + mass).clamp_min(1e-12).unsqueeze(-1)
        log_pi = torch.log(mass / n_query + 1e-8)
    return logits


def episode_batch(X: np.ndarray, episodes: Sequence[Episode]):
    """Stack same-shaped episodes into tensors (support, support labels, query, query labels)."""
    import torch

    def stack(attr: str, source=None):
        arrays = [getattr(e, attr) for e in episodes]
        return torch.from_numpy(np.stack([source[a] for a in arrays]) if source is not None else np.stack(arrays))

    return (stack("support", X).float(), stack("support_labels").long(), stack("query", X).float(),
            stack("query_labels").long())


def em_logits(support, support_labels, query, n_classes: int, params: EMParams, centre=None):
    """Batched transductive logits (B, N, C) for tensors support (B, S, D), labels (B, S), query (B, N, D)."""
    zs, zq = normalise_episode(support, query, centre)
    sums, counts = class_sums(zs, support_labels, n_classes)
    return unrolled_em(sums, counts, zq, *params.tensors())


def predict_episodes(X: np.ndarray, episodes: Sequence[Episode], params: EMParams, batch: int = 100) -> list[np.ndarray]:
    """Predicted episode-local labels for each episode's queries."""
    import torch

    out = []
    with torch.no_grad(), one_torch_thread():
        for start in range(0, len(episodes), batch):
            chunk = episodes[start:start + batch]
            groups: dict[tuple, list[int]] = {}
            for i, e in enumerate(chunk):
                groups.setdefault((len(e.classes), len(e.support), len(e.query)), []).append(i)
            preds: dict[int, np.ndarray] = {}
            for (ways, _, _), idx in groups.items():
                s, sy, q, _ = episode_batch(X, [chunk[i] for i in idx])
                labels = em_logits(s, sy, q, ways, params).argmax(-1).numpy()
                preds.update(zip(idx, labels))
            out += [preds[i] for i in range(len(chunk))]
    return out


def transductive_proba(support: np.ndarray, support_labels: np.ndarray, query: np.ndarray, n_classes: int,
                       params: EMParams) -> np.ndarray:
    """Class probabilities (N, C) for one unlabelled query set, given labelled support embeddings."""
    import torch

    support, query = np.asarray(support, dtype=np.float32), np.asarray(query, dtype=np.float32)
    if len(query) == 0:
        return np.zeros((0, n_classes), dtype=np.float32)
    with torch.no_grad(), one_torch_thread():
        logits = em_logits(torch.from_numpy(support)[None], torch.from_numpy(np.asarray(support_labels))[None].long(),
                           torch.from_numpy(query)[None], n_classes, params)
        return torch.softmax(logits[0].double(), dim=-1).float().numpy()


def learn_params(X: np.ndarray, y: np.ndarray, *, ways: int, shots: int, queries: int, steps: int = DEFAULT_STEPS,
                 iterations: int = 150, batch: int | None = None, lr: float = 0.05, seed: int = 0,
                 imbalance_alpha: float = DEFAULT_DIRICHLET_ALPHA) -> EMParams:
    """Fit the per-step hyper-parameters by unrolled gradient descent on fresh validation episodes of (X, y).

    Each iteration draws `batch` episodes (default: about 2,400 query images' worth, 4 to 32 episodes),
    half with balanced and half with Dirichlet-imbalanced queries, and takes one Adam step on the
    cross-entropy of the last EM step's assignments.
    """
    import torch

    if batch is None:
        batch = int(np.clip(2400 // (ways * queries), 4, 32))
    if iterations < 1 or batch < 2:
        raise ConfigError("unrolled learning needs at least 1 iteration and 2 episodes per batch",
                          expected="iterations ≥ 1, batch ≥ 2", found=f"iterations {iterations}, batch {batch}",
                          fix="use the defaults")
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    params = EMParams.initial(steps)
    tensors = params.tensors(requires_grad=True)
    opt = torch.optim.Adam(tensors, lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    with one_torch_thread():
        for _ in range(iterations):
            losses.append(_learning_step(X, y, tensors, opt, rng, ways, shots, queries, batch, imbalance_alpha))
    log_beta, gamma, log_w = (t.detach().numpy().tolist() for t in tensors)
    tail = losses[-max(1, iterations // 10):]
    return EMParams(log_beta, gamma, log_w, learned_on={
        "source": "unrolled on validation episodes", "ways": ways, "shots": shots, "queries": queries,
        "episodes": iterations * batch, "imbalance_alpha": imbalance_alpha, "seed": seed, "steps": steps,
        "final_loss": float(np.mean(tail)), "initial_loss": losses[0]})


def _learning_step(X, y, tensors, opt, rng, ways, shots, queries, batch, imbalance_alpha) -> float:
    """One Adam step on a fresh batch of half balanced, half imbalanced validation episodes."""
    import torch

    half = batch // 2
    eps = (sample_episodes(y, ways=ways, shots=shots, queries=queries, episodes=half, seed=int(rng.integers(2**31)))
           + sample_episodes(y, ways=ways, shots=shots, queries=queries, episodes=batch - half,
                             seed=int(rng.integers(2**31)), imbalance_alpha=imbalance_alpha))
    s, sy, q, qy = episode_batch(X, eps)
    zs, zq = normalise_episode(s, q)
    sums, counts = class_sums(zs, sy, ways)
    logits = unrolled_em(sums, counts, zq, *tensors)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, ways), qy.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def shipped_params(why: str) -> EMParams:
    """DEFAULT_PARAMS, saying why a model uses them instead of parameters learned on its own images."""
    return EMParams(DEFAULT_PARAMS.log_beta, DEFAULT_PARAMS.gamma, DEFAULT_PARAMS.log_support_weight,
                    {**DEFAULT_PARAMS.learned_on, "why": why})


def params_for_training_set(X: np.ndarray, y: np.ndarray, *, seed: int = 0, iterations: int = 50,
                            batch: int = 16) -> EMParams:
    """Hyper-parameters for a model's `predict --transductive`: learned on episodes of its own training images
    when there are enough of them (a few per class beyond the shots), else the shipped DEFAULT_PARAMS.

    The episodes mimic the model's regime: shots about a quarter of the typical class size (1 to 5), up to
    15 queries per class, and as many classes as the model has, up to 50 (parameters learned on 5-way
    episodes made 100-class cub100 predictions worse than inductive; 50-way ones were on par); 50 steps
    of 16 episodes take seconds on a few-shot training set (about 80 s on all 2,903 cub100 training images,
    which is why `fit` learns them only for --shots models).
    """
    _, counts = np.unique(np.asarray(y), return_counts=True)
    typical = int(np.median(counts))
    shots = max(1, min(5, typical // 4))
    queries = min(15, typical - shots)
    ways = min(50, int((counts >= shots + queries).sum()))
    if queries < 1 or ways < 2:
        return shipped_params(f"too few training images per class ({typical}) to learn from: shipped defaults used")
    return learn_params(X, y, ways=ways, shots=shots, queries=queries, iterations=iterations, batch=batch, seed=seed)


def require_prototype_statistics(head) -> None:
    """EM starts from, and keeps, the support's per-class sums: only prototype heads store them."""
    if getattr(head, "name", None) != "prototype" or getattr(head, "class_sums_", None) is None:
        raise ConfigError("transductive prediction needs a prototype head that kept its class statistics",
                          expected="a model fitted with --head prototype (or --shots K) by this version",
                          found=f"a '{getattr(head, 'name', type(head).__name__)}' head",
                          fix="refit with `finegrain fit DATA -o MODEL --head prototype`")


class TransductivePrototypes:
    """A fitted prototype head whose scores treat all rows passed at once as ONE unlabelled query set.

    The support enters EM through the head's per-class sums and counts (in its centred, normalised feature
    space), so the model directory needs no copy of the training images. Nothing here is saved: it is a
    view of a saved prototype head plus the hyper-parameters stored in the model's config.
    """

    name = "prototype+transductive"

    def __init__(self, head, params: EMParams) -> None:
        require_prototype_statistics(head)
        self.head, self.params = head, params
        self.classes_, self.n_features_in_ = head.classes_, head.n_features_in_

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        import torch

        X = self.head._check_predict_input(X)
        if len(X) == 0:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        with torch.no_grad(), one_torch_thread():
            centre = torch.from_numpy(np.asarray(self.head.centre_, dtype=np.float32))
            zq = torch.from_numpy(X) - centre
            zq = zq / zq.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            sums = torch.from_numpy(np.asarray(self.head.class_sums_, dtype=np.float32))
            counts = torch.from_numpy(np.asarray(self.head.class_counts_, dtype=np.float32))
            return unrolled_em(sums[None], counts[None], zq[None], *self.params.tensors())[0].numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        from ..heads.base import softmax
        return softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]


def with_transductive(clf):
    """The classifier, scoring each predict call's images together by EM with the model's stored hyper-parameters."""
    require_prototype_statistics(clf.head)
    stored = clf.info.get("transductive")
    if stored is None:
        raise ConfigError("this model has no transductive hyper-parameters", expected="a model fitted with "
                          "--head prototype (or --shots K) by this finegrain version", found="none in config.json",
                          fix="refit with `finegrain fit DATA -o MODEL --head prototype`")
    clf.head = TransductivePrototypes(clf.head, EMParams.from_dict(stored))
    return clf
