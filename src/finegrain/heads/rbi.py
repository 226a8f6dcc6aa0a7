"""Relationship Batch Integration (RBI = RRA + RPE) as a head on frozen embeddings.

Paper #1 ("Enhancing Fine-grained Image Classification through Attentive Batch Training"): a Residual
Relationship Attention module (RRA) lets each image's feature vector attend to the other images of its
training batch; a Relationship Position Encoding (RPE) biases the attention logits so each image keeps track
of which relationship is its own. No code was published; the design follows `docs/papers.md` §4:

- pre-norm residual multi-head attention over the batch's projected embeddings (plus an optional MLP), a
  linear classifier shared by the refined and the unrefined features, cross-entropy on the refined logits
  plus `aux_weight` × cross-entropy on the unrefined ones;
- RPE `self` (a learned per-head bias on the self pair — permutation-equivariant), `relative` (a learned
  per-head bias on the clipped index offset i − j — order-dependent, the paper's "positions") or `none`;
  inside fine-tuning (finegrain.finetune) also `psnr` and `cosine`: a learned per-head scale × a similarity
  of the two images' stored trunk activations (papers.md §4.0: PSNR-derived pairwise image similarities);
- batches drawn at random or class-balanced (P classes × K images);
- inference modes, because at test time there is no training batch:
  `single`: each image attends to itself only — a prediction never depends on other inputs (deployable);
  `plain`: the attention block is skipped — the classifier reads the unrefined features, which the auxiliary
  loss trained (papers.md §4.2 A1 (i): batch attention as a training-time regulariser; deployable);
  `bank`: each image attends to itself plus a fixed memory saved in the model (class prototypes or training
  embeddings) — deterministic and works for one image;
  `transductive`: attention over batches of the test images themselves, shuffled with a seed. Only an
  evaluation protocol: predictions depend on batch-mates, so it is reported apart, with its flip rate.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .base import Head, stratified_holdout

MODES = ("single", "bank", "transductive", "plain")
RPES = ("self", "relative", "none")
SIMILARITY_RPES = ("psnr", "cosine")  # need the images' trunk activations: fine-tuning only
SAMPLERS = ("random", "pk")
BANKS = ("prototypes", "samples")
MAX_OFFSET = 8  # relative RPE: offsets beyond ±8 share one bias


def _choice(name: str, value: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ConfigError(f"rbi head: unknown {name} '{value}'", expected=f"one of {', '.join(options)}",
                          found=str(value), fix=f"use --head-param {name}={options[0]}")
    return value


def _torch():
    import torch
    return torch


def build_network(n_features: int, n_classes: int, width: int, heads: int, layers: int, rpe: str, mlp: bool,
                  dropout: float, on_features: bool = False):
    """The torch module: input projection → `layers` RRA blocks → LayerNorm + linear classifier.

    `on_features` (fine-tuning's RBI): no projection — the blocks refine the features themselves (attention of
    inner width `width`) and start as the identity (zero output layers), and the classifier reads the features
    as a linear probe does, so training starts exactly from the probe's solution (LP-FT) and the attention
    adds to it only what helps."""
    torch = _torch()
    nn = torch.nn
    stream = n_features if on_features else width

    class RRABlock(nn.Module):
        """x + W_o·Attn(LN(x); logits + RPE bias), then x + MLP(LN(x)); keys are the query itself + `others`."""

        def __init__(self) -> None:
            super().__init__()
            self.heads, self.dh = heads, width // heads
            self.norm = nn.LayerNorm(stream)
            self.qkv = nn.Linear(stream, 3 * width)
            self.out = nn.Linear(width, stream)
            self.self_bias = nn.Parameter(torch.zeros(heads)) if rpe == "self" else None
            self.offset_bias = nn.Parameter(torch.zeros(heads, 2 * MAX_OFFSET + 1)) if rpe == "relative" else None
            self.similarity_scale = nn.Parameter(torch.zeros(heads)) if rpe in SIMILARITY_RPES else None
            if self.similarity_scale is not None:  # pairs of unknown similarity (bank entries) get the training mean
                self.register_buffer("similarity_fill", torch.zeros(()))
            self.mlp = nn.Sequential(nn.LayerNorm(stream), nn.Linear(stream, 2 * width), nn.GELU(),
                                     nn.Dropout(dropout), nn.Linear(2 * width, stream)) if mlp else None
            self.drop = nn.Dropout(dropout)
            # on unit-norm embeddings, the branches (LayerNorm-scaled, values ~1) are brought to the stream's scale
            self.branch_scale = stream ** -0.5 if on_features else 1.0
            if on_features:  # the residual branches start at zero: refined == unrefined features
                for layer in (self.out, self.mlp[-1] if self.mlp is not None else None):
                    if layer is not None:
                        nn.init.zeros_(layer.weight)
                        nn.init.zeros_(layer.bias)

        def _split(self, t):
            return t.reshape(t.shape[0], self.heads, self.dh).transpose(0, 1)  # (H, N, dh)

        def weights(self, x, others, offsets, exclude, similarity=None):
            """Attention of each query on itself (H, B, 1) and on `others` (H, B, M), plus their values;
            `similarity` (B, M) feeds a similarity RPE (self-similarity is 1)."""
            q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
            q, k, v = self._split(q) / self.dh ** 0.5, self._split(k), self._split(v)
            own = (q * k).sum(-1, keepdim=True)  # each image with itself
            if self.self_bias is not None:
                own = own + self.self_bias[:, None, None]
            if self.offset_bias is not None:
                own = own + self.offset_bias[:, MAX_OFFSET][:, None, None]
            if self.similarity_scale is not None:
                own = own + self.similarity_scale[:, None, None]
            if others is None:
                return torch.ones_like(own), None, v, None
            ko, vo = (self._split(t) for t in self.qkv(self.norm(others)).chunk(3, dim=-1)[1:])
            cross = q @ ko.transpose(1, 2)
            if self.offset_bias is not None:
                cross = cross + self.offset_bias[:, offsets.clamp(-MAX_OFFSET, MAX_OFFSET) + MAX_OFFSET]
            if self.similarity_scale is not None:
                cross = cross + self.similarity_scale[:, None, None] * self._pair_similarity(similarity, exclude)
            cross = cross.masked_fill(exclude[None], float("-inf"))
            weights = torch.softmax(torch.cat([own, cross], dim=-1), dim=-1)
            return weights[..., :1], weights[..., 1:], v, vo

        def _pair_similarity(self, similarity, exclude):
            """The (B, M) similarities of query/key pairs; while training, their mean is kept as the fill value for
            pairs seen without activations."""
            if similarity is None:
                return self.similarity_fill.expand(exclude.shape)
            if self.training:
                with torch.no_grad():
                    mean = similarity[~exclude].float().mean()
                    self.similarity_fill.mul_(0.99).add_(0.01 * mean)
            return similarity

        def forward(self, x, others, offsets, exclude, similarity=None):
            """x (B, d) queries; others (M, d) extra keys/values; offsets (B, M) i − j; exclude (B, M) bool;
            similarity (B, M) image similarities for a similarity RPE (None: the training mean)."""
            w_own, w_other, v, vo = self.weights(x, others, offsets, exclude, similarity)
            attended = w_own * v if vo is None else w_own * v + w_other @ vo
            x = x + self.branch_scale * self.drop(self.out(attended.transpose(0, 1).reshape(x.shape[0], -1)))
            if self.mlp is not None:
                x = x + self.branch_scale * self.drop(self.mlp(x))
            return x

    class RBINet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Dropout(dropout) if on_features else nn.Sequential(nn.Dropout(dropout),
                                                                            nn.Linear(n_features, width))
            self.blocks = nn.ModuleList(RRABlock() for _ in range(layers))
            self.norm = nn.Identity() if on_features else nn.LayerNorm(width)
            self.classifier = nn.Linear(stream, n_classes)

        def project(self, x):
            return self.inp(x)

        def refine(self, h, context: str, memory=None, similarity=None):
            """RRA over `context`: 'batch' (the rows of h), 'single' (itself only), 'bank' (itself + memory) or
            'plain' (none: h as it is);
            `similarity`: the batch's (B, B) image similarities, for a similarity RPE."""
            n = h.shape[0]
            if context == "plain":
                return h
            if context == "batch":
                idx = torch.arange(n)
                offsets = idx[:, None] - idx[None, :]
                exclude = torch.eye(n, dtype=torch.bool)
            elif context == "bank":
                m = memory.shape[0]
                offsets = -torch.arange(1, m + 1)[None, :].expand(n, m)
                exclude = torch.zeros(n, m, dtype=torch.bool)
            else:
                offsets = exclude = None
            for block in self.blocks:
                if context == "bank":  # the memory goes through the block too, each entry attending to itself
                    h, memory = block(h, memory, offsets, exclude), block(memory, None, None, None)
                else:
                    h = block(h, h if context == "batch" else None, offsets, exclude, similarity)
            return h

        def logits(self, h):
            return self.classifier(self.norm(h))

    return RBINet()


def smoothed(curve: list[float]) -> np.ndarray:
    """Centred 3-epoch moving average (2 at the ends): a validation curve of a few hundred images is too noisy
    for its single best epoch to be a good stopping point."""
    c = np.asarray(curve, dtype=float)
    padded = np.concatenate([[np.nan], c, [np.nan]])
    return np.nanmean(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


class RBIHead(Head):
    """RRA + RPE + a linear classifier, trained on cached embeddings; see the module docstring."""

    name = "rbi"
    allowed_rpes = RPES  # the encodings a head can compute from embeddings alone

    def __init__(self, mode: str = "single", rpe: str = "self", batch_size: int = 64, sampler: str = "random",
                 k_per_class: int = 4, width: int = 128, heads: int = 4, layers: int = 1, mlp: bool = True,
                 batch_attention: bool = True, aux_weight: float = 0.5, dropout: float = 0.5,
                 lr: float = 1e-3, weight_decay: float = 0.05, label_smoothing: float = 0.1,
                 max_epochs: int = 30, patience: int = 10, val_fraction: float = 0.2, refit: bool = True,
                 bank: str = "prototypes", bank_size: int = 256, eval_batch_size: int | None = None,
                 shuffle: bool = True, shuffle_seed: int = 0, seed: int = 0, threads: int = 1,
                 on_features: bool = False) -> None:
        self.mode, self.rpe, self.sampler, self.bank = mode, rpe, sampler, bank
        self.batch_size, self.k_per_class, self.width, self.heads, self.layers = (
            batch_size, k_per_class, width, heads, layers)
        self.mlp, self.batch_attention, self.aux_weight, self.dropout = mlp, batch_attention, aux_weight, dropout
        self.lr, self.weight_decay, self.label_smoothing = lr, weight_decay, label_smoothing
        self.max_epochs, self.patience, self.val_fraction, self.refit = max_epochs, patience, val_fraction, refit
        self.bank_size, self.eval_batch_size, self.shuffle, self.shuffle_seed = (
            bank_size, eval_batch_size, shuffle, shuffle_seed)
        self.seed, self.threads = seed, threads
        self.on_features = on_features  # the network refines the embeddings themselves (fine-tuning's RBI)

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "mode", "rpe", "batch_size", "sampler", "k_per_class", "width", "heads", "layers", "mlp",
            "batch_attention", "aux_weight", "dropout", "lr", "weight_decay", "label_smoothing", "max_epochs",
            "patience", "val_fraction", "refit", "bank", "bank_size", "eval_batch_size", "shuffle",
            "shuffle_seed", "seed", "threads", "on_features")}

    def _check_params(self) -> None:
        _choice("mode", self.mode, MODES)
        _choice("rpe", self.rpe, self.allowed_rpes)
        _choice("sampler", self.sampler, SAMPLERS)
        _choice("bank", self.bank, BANKS)
        if self.width % self.heads:
            raise ConfigError("rbi head: width must be a multiple of heads", expected="width % heads == 0",
                              found=f"width {self.width}, heads {self.heads}", fix="e.g. width=256 heads=4")
        if self.batch_size < 2:
            raise ConfigError("rbi head: batch attention needs batches of 2 or more", expected="batch_size ≥ 2",
                              found=str(self.batch_size), fix="use e.g. --head-param batch_size=64")

    def with_mode(self, mode: str) -> "RBIHead":
        """A copy of this fitted head that predicts in another inference mode (shares the trained weights)."""
        _choice("mode", mode, MODES)
        other = copy.copy(self)
        other.mode = mode
        return other

    # --- training ------------------------------------------------------------------------------------
    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    def _batches(self, y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch of training batches: a shuffled pass, or P classes × K images (class-balanced)."""
        n, b = len(y), min(self.batch_size, len(y))
        if self.sampler == "random":
            order = rng.permutation(n)
            return [order[i:i + b] for i in range(0, n - b + 1, b)]  # drop the partial last batch
        k = max(1, min(self.k_per_class, b))
        p = max(1, b // k)
        by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
        batches = []
        for _ in range(max(1, n // b)):
            chosen = rng.choice(len(by_class), size=min(p, len(by_class)), replace=False)
            batches.append(np.concatenate([rng.choice(by_class[c], size=k, replace=len(by_class[c]) < k)
                                           for c in chosen]))
        return batches

    def _train(self, X: np.ndarray, y: np.ndarray, epochs: int, X_val=None, y_val=None):
        """Train a fresh network; with validation data, stop early and keep the best epoch's weights."""
        torch = _torch()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        net = build_network(X.shape[1], len(self.classes_), self.width, self.heads, self.layers, self.rpe,
                            self.mlp, self.dropout)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_epochs)  # same schedule on refit
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
        context = "batch" if self.batch_attention else "single"
        history, snapshots, best_epoch = [], [], 0
        for epoch in range(1, epochs + 1):
            net.train()
            for idx in self._batches(y, rng):
                bi = torch.from_numpy(idx)
                h = net.project(Xt[bi])
                loss = loss_fn(net.logits(net.refine(h, context)), yt[bi])
                if self.aux_weight:
                    loss = loss + self.aux_weight * loss_fn(net.logits(h), yt[bi])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            if X_val is None:
                continue
            self.net_ = net
            history.append(round(float((self._logits(X_val).argmax(1) == y_val).mean()), 5))
            snapshots.append(copy.deepcopy(net.state_dict()))
            best_epoch = int(np.argmax(smoothed(history))) + 1
            if epoch - best_epoch >= self.patience:
                break
        if X_val is not None:
            net.load_state_dict(snapshots[best_epoch - 1])
        return net, best_epoch, history

    def fit(self, X, y, X_val=None, y_val=None) -> "RBIHead":
        self._check_params()
        torch = _torch()
        X, yi = self._check_fit_input(X, y)
        if X_val is not None and len(X_val):
            Xv, yv = np.asarray(X_val, dtype=np.float32), self.encode_labels(np.asarray(y_val))
            X_tr, y_tr, X_all, y_all = X, yi, np.concatenate([X, Xv]), np.concatenate([yi, yv])
        else:
            tr, va = stratified_holdout(yi, self.val_fraction, self.seed)
            X_tr, y_tr, Xv, yv, X_all, y_all = X[tr], yi[tr], X[va], yi[va], X, yi
        if len(yv) == 0:
            raise DataError("rbi head needs validation images to stop training", expected="a validation split",
                            found="none (too few images per class)", fix="add images, or raise val_fraction")
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, min(self.threads, threads)))
        try:
            self.mean_, self.scale_ = X_tr.mean(axis=0), X_tr.std(axis=0) + 1e-6
            self.bank_ = self._make_bank(self._standardise(X_tr), y_tr)
            net, self.epochs_, self.validation_ = self._train(self._standardise(X_tr), y_tr, self.max_epochs,
                                                              self._standardise(Xv), yv)
            self.net_ = net
            self.val_accuracy_ = self.validation_[self.epochs_ - 1]
            if self.refit:
                self.mean_, self.scale_ = X_all.mean(axis=0), X_all.std(axis=0) + 1e-6
                Z = self._standardise(X_all)
                self.bank_ = self._make_bank(Z, y_all)
                self.net_, _, _ = self._train(Z, y_all, self.epochs_)
            self.net_.eval()
        finally:
            torch.set_num_threads(threads)
        return self

    def _make_bank(self, Z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The `bank` memory, in standardised input space: class means, or a class-stratified sample of rows."""
        if self.bank == "prototypes":
            return np.stack([Z[y == c].mean(axis=0) for c in range(len(self.classes_))]).astype(np.float32)
        rng = np.random.default_rng(self.seed)
        fraction = min(1.0, self.bank_size / len(y))
        keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:max(1, round(fraction * (y == c).sum()))]
                               for c in np.unique(y)])
        return Z[np.sort(keep)[: max(self.bank_size, len(np.unique(y)))]].astype(np.float32)

    # --- inference -----------------------------------------------------------------------------------
    def _logits(self, Z: np.ndarray) -> np.ndarray:
        """Logits of standardised rows in the current mode (the network in eval mode, no gradients)."""
        torch = _torch()
        net = self.net_
        was_training = net.training
        net.eval()
        with torch.no_grad():
            if self.mode == "transductive":
                out = self._transductive_logits(net, Z)
            else:
                h = net.project(torch.from_numpy(Z))
                memory = net.project(torch.from_numpy(self.bank_)) if self.mode == "bank" else None
                out = net.logits(net.refine(h, self.mode, memory)).numpy()
        net.train(was_training)
        return out

    def _transductive_logits(self, net, Z: np.ndarray) -> np.ndarray:
        """Batches of test rows attend to each other; rows are put in a content order, then shuffled by seed,
        so the result depends on the set of inputs and `shuffle_seed`, never on the order they came in."""
        torch = _torch()
        n, b = len(Z), self.eval_batch_size or self.batch_size
        if self.shuffle:
            content = np.argsort(Z @ np.random.default_rng(0).normal(size=Z.shape[1]), kind="stable")
            order = content[np.random.default_rng(self.shuffle_seed).permutation(n)]
        else:
            order = np.arange(n)
            self._refuse_sorted(net, Z)
        out = np.zeros((n, len(self.classes_)), dtype=np.float32)
        for i in range(0, n, b):
            idx = order[i:i + b]
            out[idx] = net.logits(net.refine(net.project(torch.from_numpy(Z[idx])), "batch")).numpy()
        return out

    def _refuse_sorted(self, net, Z: np.ndarray) -> None:
        """Unshuffled input whose neighbours mostly share a predicted class would leak labels through the batch."""
        torch = _torch()
        if len(Z) < 4:
            return
        pred = net.logits(net.refine(net.project(torch.from_numpy(Z)), "single")).argmax(1).numpy()
        same = float((pred[1:] == pred[:-1]).mean())
        freq = np.bincount(pred) / len(pred)
        chance = float((freq ** 2).sum())
        if same > max(0.5, 3 * chance):
            raise DataError("transductive batches would be made of images sorted by class",
                            expected=f"an order where neighbours share a class about {chance:.0%} of the time",
                            found=f"{same:.0%} of neighbouring images predicted as the same class",
                            fix="leave shuffle=true (the default) or shuffle the inputs with a seed")

    def decision_function(self, X):
        X = self._check_predict_input(X)
        return self._logits(self._standardise(X))

    def flip_rate(self, X: np.ndarray, seeds: tuple[int, ...] = (0, 1, 2)) -> float:
        """Transductive only: the fraction of images whose prediction changes across shuffles of the batches."""
        preds = np.stack([self.with_mode("transductive")._with_seed(s).predict(X) for s in seeds])
        return float((preds != preds[:1]).any(axis=0).mean())

    def attention_profile(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, float]:
        """Where the first RRA block looks on random labelled batches of `batch_size`: the mean attention an image
        pays itself, each same-class batch-mate and each other-class batch-mate, the entropy of its attention
        as a fraction of the uniform one's (1: spread evenly, inert), and the size of the attention branch
        relative to the features it is added to. Tells whether batch integration carries anything."""
        torch = _torch()
        X, yi = self._check_predict_input(X), self.encode_labels(np.asarray(y))
        Z, block = torch.from_numpy(self._standardise(X)), self.net_.blocks[0]
        sums = {key: [0.0, 0] for key in ("self", "same_class_mate", "other_class_mate", "attention_entropy",
                                          "branch_norm_ratio")}
        with torch.no_grad():
            for idx in self._batches(yi, np.random.default_rng(seed)):
                h = self.net_.project(Z[idx])
                n = len(idx)
                w_own, w_other, v, vo = block.weights(h, h, torch.arange(n)[:, None] - torch.arange(n)[None, :],
                                                      torch.eye(n, dtype=torch.bool))
                same = torch.from_numpy(yi[idx][:, None] == yi[idx][None, :]) & ~torch.eye(n, dtype=torch.bool)
                other = ~same & ~torch.eye(n, dtype=torch.bool)
                branch = block.branch_scale * block.out((w_own * v + w_other @ vo).transpose(0, 1).reshape(n, -1))
                w = torch.cat([w_own, w_other], dim=-1).clamp_min(1e-12)
                entropy = -(w * w.log()).sum(-1) / np.log(n)
                for key, value, count in (("self", w_own.sum(), w_own.numel()),
                                          ("same_class_mate", (w_other * same).sum(), same.sum() * w_other.shape[0]),
                                          ("other_class_mate", (w_other * other).sum(), other.sum() * w_other.shape[0]),
                                          ("attention_entropy", entropy.sum(), entropy.numel()),
                                          ("branch_norm_ratio", (branch.norm(dim=1) / h.norm(dim=1)).sum(), n)):
                    sums[key][0] += float(value)
                    sums[key][1] += int(count)
        return {k: (s / c if c else float("nan")) for k, (s, c) in sums.items()}

    def _with_seed(self, seed: int) -> "RBIHead":
        other = copy.copy(self)
        other.shuffle_seed = seed
        return other

    # --- persistence ---------------------------------------------------------------------------------
    def _state(self):
        arrays = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
        arrays.update({"mean": self.mean_.astype(np.float32), "scale": self.scale_.astype(np.float32),
                       "bank": self.bank_})
        return {"epochs_": self.epochs_, "validation_": self.validation_, "val_accuracy_": self.val_accuracy_}, arrays

    def _load_state(self, values, arrays):
        torch = _torch()
        self.epochs_, self.validation_ = int(values["epochs_"]), list(values["validation_"])
        self.val_accuracy_ = float(values["val_accuracy_"])
        self.mean_, self.scale_, self.bank_ = arrays["mean"], arrays["scale"], arrays["bank"]
        self.net_ = build_network(self.n_features_in_, len(self.classes_), self.width, self.heads, self.layers,
                                  self.rpe, self.mlp, self.dropout, self.on_features)
        self.net_.load_state_dict({k[4:]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                                   if k.startswith("net.")})
        self.net_.eval()


class TunedRBIHead(RBIHead):
    """An `rbi` head whose network was trained inside fine-tuning (`finegrain finetune --rbi`) together with the
    backbone whose embeddings it reads. `fit` keeps that network: it only checks the classes, builds the bank
    from the final embeddings and measures the held-out accuracy. Saved and loaded as an ordinary `rbi` head.
    The network reads the embeddings as they are, so its standardisation is the identity."""

    allowed_rpes = RPES + SIMILARITY_RPES  # similarity encodings were computed from activations while training

    def __init__(self, network, classes, epochs: int, **params: Any) -> None:
        super().__init__(**params)
        self._network, self._classes, self._epochs = network, np.asarray(classes), epochs

    def unfitted_twin(self) -> "TunedRBIHead":
        """The same trained network, not yet fitted (calibration refits a twin on part of the data: only the bank
        and the classes depend on it here)."""
        return TunedRBIHead(self._network, self._classes, self._epochs, **self.get_params())

    def fit(self, X, y, X_val=None, y_val=None) -> "TunedRBIHead":
        self._check_params()
        X, yi = self._check_fit_input(X, y)
        if list(self.classes_) != list(self._classes):
            raise DataError("the fine-tuned RBI network was trained on other classes than these embeddings have",
                            expected=f"{len(self._classes)} classes: {', '.join(map(str, self._classes[:5]))}…",
                            found=f"{len(self.classes_)} classes", fix="fit on the data the network was tuned on")
        self.net_ = self._network.eval()
        self.mean_ = np.zeros(self.n_features_in_, np.float32)
        self.scale_ = np.ones(self.n_features_in_, np.float32)
        self.epochs_ = int(self._epochs)
        Z, y_all = self._standardise(X), yi
        if X_val is not None and len(X_val):
            Zv, yv = self._standardise(np.asarray(X_val, dtype=np.float32)), self.encode_labels(np.asarray(y_val))
            scored = self.mode if self.mode == "plain" else "single"  # what the kept epoch was chosen by
            self.val_accuracy_ = float((self.with_mode(scored)._logits(Zv).argmax(1) == yv).mean())
            Z, y_all = np.concatenate([Z, Zv]), np.concatenate([yi, yv])
        else:
            self.val_accuracy_ = float("nan")
        self.bank_ = self._make_bank(Z, y_all)  # like RBIHead's refit: the bank of train + val
        self.validation_ = [self.val_accuracy_]
        return self
