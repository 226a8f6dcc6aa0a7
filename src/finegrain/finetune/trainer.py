"""Train the upper stages of a network and a classifier on stored trunk activations.

One epoch shows every training image once, through one of its stored views chosen at random (and flipped
at random, at the activation level). The classifier starts from a linear probe on the frozen features
(LP-FT: a random head would first tear the pretrained features apart), each stage learns at a rate that
shrinks with depth (layer-wise decay), and an exponential moving average (EMA) of the weights is what is
evaluated and kept. Batch-norm statistics stay frozen: with ~30 images per class and small batches, batch
statistics are noise. The randomness of epoch e comes from (seed, e) alone, so a run resumed from the
checkpoint of epoch e-1 ends where an uninterrupted one would.

On several processes (`rank` of `world`, data-parallel: finegrain.scale.train) every rank draws the same
epoch order and takes its share of each global batch, so the batch size and the number of steps are those of
one process; rank 0 alone keeps the EMA, validates and writes the checkpoints.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..heads.rbi import SIMILARITY_RPES
from ..progress import note, progress_scope
from .settings import TrainSettings
from .store import ActivationStore

log = logging.getLogger("finegrain")
CHECKPOINT = "checkpoint.json"
FINISHED = "finished.json"  # a run that ended: its kept weights alone, so an identical run later reuses them


def pick_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but PyTorch sees no CUDA GPU", expected="a CUDA build and a GPU",
                          found=f"torch {torch.__version__}, cuda available: False", fix="use --device auto or cpu")
    return torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16: the CPUs on which bfloat16 matrix products run natively (measured 1.3x on AMX)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return device.type == "cuda" or cpu_has_bf16()


class TopNetwork(nn.Module):
    """The trainable stages, global average pooling, then dropout and a linear classifier — or, with `rbi`
    settings, RBI: the L2-normalised pooled features go through the RBI network of heads/rbi.py (residual
    attention across the batch on the features, then the classifier), exactly as an `rbi` head reads
    embeddings, so the trained network becomes the model's head."""

    def __init__(self, stages: Sequence[nn.Module], width: int, n_classes: int, dropout: float,
                 rbi: TrainSettings | None = None) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.width, self.n_classes = width, n_classes
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, n_classes) if rbi is None else None
        self.rbi = None
        if rbi is not None:
            from ..heads.rbi import build_network

            self.rbi = build_network(width, n_classes, rbi.rbi_width, rbi.rbi_heads, rbi.rbi_layers, rbi.rbi_rpe,
                                     True, dropout, on_features=True)
            # what validation scores (the epoch kept): the deployed mode, or `single` for batch-dependent ones
            self.rbi_context = "plain" if rbi.rbi_mode == "plain" else "single"

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    @staticmethod
    def embedding(feats: torch.Tensor) -> torch.Tensor:
        """What the RBI network reads: the embedding the tuned backbone gives (L2-normalised pooled features).
        Not centred or standardised: a probe on those measured 0.76-0.84 on cub100, against 0.87."""
        return nn.functional.normalize(feats.float(), dim=1)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits of pooled features one image at a time: the linear classifier, or RBI in `single` (or `plain`)
        mode."""
        if self.rbi is None:
            return self.fc(self.dropout(feats))
        return self.rbi.logits(self.rbi.refine(self.rbi.project(self.embedding(feats)), self.rbi_context))

    def batch_logits(self, feats: torch.Tensor, similarity: torch.Tensor | None = None) -> torch.Tensor:
        """RBI training: (2, B, C) logits of the features refined across the batch, and of the unrefined ones."""
        h = self.rbi.project(self.embedding(feats))
        return torch.stack([self.rbi.logits(self.rbi.refine(h, "batch", similarity=similarity)), self.rbi.logits(h)])

    @torch.no_grad()
    def class_activation(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CAM of each image's class, at the resolution of the input activations x (B×H×W, ≥ 0)."""
        fmap = self.feature_map(x).float()
        cam = torch.relu(torch.einsum("bchw,bc->bhw", fmap, self.fc.weight[y].float()))
        return nn.functional.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]

    def forward(self, x: torch.Tensor, similarity: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C) logits; with RBI in training mode, (2, B, C): refined across the batch, and unrefined."""
        if self.rbi is not None and self.training:
            return self.batch_logits(self.features(x), similarity)
        return self.classify(self.features(x))

    def train_mode(self) -> "TopNetwork":
        """Train, with batch-norm statistics frozen (their affine weights still learn)."""
        self.train()
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def parameter_groups(top: TopNetwork, s: TrainSettings) -> list[dict[str, Any]]:
    """The classifier (or RBI network) at `lr`; stage k from the top at backbone_lr × layer_decay^k; no decay on
    norms/biases."""
    head = top.fc if top.rbi is None else top.rbi
    groups = [{"params": list(head.parameters()), "lr": s.lr, "weight_decay": s.weight_decay}]
    for depth, stage in enumerate(reversed(top.stages)):
        lr = s.backbone_lr * s.layer_decay ** depth
        decay = [p for p in stage.parameters() if p.ndim > 1]
        plain = [p for p in stage.parameters() if p.ndim <= 1]
        groups += [{"params": decay, "lr": lr, "weight_decay": s.weight_decay},
                   {"params": plain, "lr": lr, "weight_decay": 0.0}]
    for g in groups:
        g["base_lr"] = g["lr"]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class EMA:
    """Exponential moving average of a module's weights (and copies of its buffers); warms up over early steps."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_v, v in zip(self.module.state_dict().values(), module.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                ema_v.copy_(v)


@dataclass
class Batches:
    """Training rows: image shas, class indices, the number of stored views of each image."""

    shas: list[str]
    y: np.ndarray
    n_views: int


MIXES = ("mixup", "cutmix", "salmix")


def epoch_order(y: np.ndarray, s: TrainSettings, rng: np.random.Generator) -> np.ndarray:
    """The epoch's image order, cut into batches of `batch_size` by the trainer: a permutation, or (RBI with the
    pk sampler) batches of P classes × K images each, so batch-mates share classes (images of classes with
    fewer than K are repeated); one image per step on average either way."""
    n = len(y)
    if not (s.rbi and s.rbi_sampler == "pk"):
        return rng.permutation(n)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    k = max(1, min(s.rbi_k, s.batch_size))
    p = min(len(by_class), max(1, s.batch_size // k))
    batches = []
    for _ in range(math.ceil(n / s.batch_size)):
        chosen = rng.choice(len(by_class), size=p, replace=False)
        batches += [rng.choice(by_class[c], size=k, replace=len(by_class[c]) < k) for c in chosen]
    return np.concatenate(batches)


def pair_similarity(x: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, B) similarity of the images' activation maps for a similarity RPE, 1 on the diagonal.
    psnr: the maps scaled to [0, 1] by the batch's range like pixels, PSNR of each pair in dB / 50, clipped to
    [0, 1] (papers.md §4.0: normalised PSNR-derived similarities); cosine: cosine of the flattened maps."""
    a = x.detach().flatten(1).float()
    if kind == "cosine":
        a = nn.functional.normalize(a, dim=1)
        return (a @ a.T).clamp(-1, 1).fill_diagonal_(1.0)
    a = (a - a.min()) / (a.max() - a.min()).clamp_min(1e-6)
    sq = (a * a).sum(1)
    mse = (sq[:, None] + sq[None, :] - 2 * a @ a.T).clamp_min(1e-10) / a.shape[1]
    return (10 * torch.log10(1 / mse) / 50).clamp(0, 1).fill_diagonal_(1.0)


def _mix(x: torch.Tensor, y: torch.Tensor, s: TrainSettings, rng: np.random.Generator,
         saliency: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
    """MixUp, CutMix or saliency-guided CutMix on activations (one of those switched on, drawn per batch);
    returns x, y_a, y_b, λ (the weight of y_a)."""
    kinds = [k for k in MIXES if getattr(s, k) > 0]
    if not kinds:
        return x, y, y, 1.0
    kind = kinds[int(rng.integers(len(kinds)))]
    alpha = getattr(s, kind)
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if kind == "mixup":
        return lam * x + (1 - lam) * x[perm], y, y[perm], lam
    h, w = x.shape[2:]
    ch, cw = int(round(h * math.sqrt(1 - lam))), int(round(w * math.sqrt(1 - lam)))
    source = x[perm]
    if kind == "salmix" and saliency is not None and ch and cw:
        tops, lefts = most_salient_boxes(saliency(source, y[perm]), ch, cw)
    else:
        tops = torch.full((len(x),), int(rng.integers(0, h - ch + 1)))
        lefts = torch.full((len(x),), int(rng.integers(0, w - cw + 1)))
    x = x.clone()
    for i, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist())):
        x[i, :, top:top + ch, left:left + cw] = source[i, :, top:top + ch, left:left + cw]
    return x, y, y[perm], 1 - (ch * cw) / (h * w)


def outlier_mixtures(x: torch.Tensor, y: torch.Tensor, n_classes: int, rng: np.random.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """MixOE (Zhang et al.) with synthetic outliers, on half a batch of activations: each image i is mixed with
    an outlier o — a blend a·x_i + (1−a)·x_j of it and an image of another class, a ~ U(0.3, 0.7), a point
    between known species where a novel one of the group would land — as λ·x_i + (1−λ)·o, λ ~ Beta(1, 1),
    with the soft target λ·onehot(y_i) + (1−λ)·uniform: confidence decays as an input leaves its class.
    None when no pair of the batch has two classes."""
    n = max(1, len(x) // 2)
    partner = torch.from_numpy(rng.permutation(len(x))[:n]).to(x.device)
    differ = (y[:n] != y[partner]).nonzero().flatten()
    if not len(differ):
        return None
    xi, xj = x[:n][differ], x[partner][differ]
    shape = (len(differ),) + (1,) * (x.dim() - 1)
    a = torch.from_numpy(rng.uniform(0.3, 0.7, len(differ)).astype(np.float32)).to(x.device)
    lam = torch.from_numpy(rng.beta(1.0, 1.0, len(differ)).astype(np.float32)).to(x.device)
    outlier = a.view(shape) * xi + (1 - a.view(shape)) * xj
    mixed = lam.view(shape) * xi + (1 - lam.view(shape)) * outlier
    target = lam[:, None] * nn.functional.one_hot(y[:n][differ], n_classes).float() + (1 - lam[:, None]) / n_classes
    return mixed.to(x.dtype), target


def most_salient_boxes(saliency: torch.Tensor, ch: int, cw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (B×H×W saliency), the top-left corner of the ch×cw box holding the most saliency (SMMix's idea:
    paste the part of the source image that shows its class, not a random patch of background)."""
    pooled = nn.functional.avg_pool2d(saliency[:, None].float(), (ch, cw), stride=1)[:, 0]
    flat = pooled.flatten(1).argmax(1)
    return flat // pooled.shape[2], flat % pooled.shape[2]


class Trainer:
    """Owns the top network, its optimiser, EMA and checkpoints in `run_dir`."""

    bars = True  # progress bars with `progress`; off where stderr is a log (Ray workers): the epoch lines stay

    def __init__(self, top: TopNetwork, store: ActivationStore, settings: TrainSettings, run_dir: Path,
                 progress: bool = True, rank: int = 0, world: int = 1) -> None:
        self.s, self.store, self.run_dir, self.progress = settings, store, Path(run_dir), progress
        self.rank, self.world = rank, world
        self.device = pick_device(settings.device)
        self.bf16 = use_bf16(settings.precision, self.device)
        self.top = top.to(self.device)
        self.forward_module: nn.Module = self.top  # what training steps run: a DistributedDataParallel on ranks
        self.opt = torch.optim.AdamW(parameter_groups(self.top, settings), lr=settings.lr)
        self.ema = EMA(self.top, settings.ema_decay) if settings.ema_decay > 0 and rank == 0 else None
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": None, "val_accuracy": -1.0}
        self.best_state: dict[str, torch.Tensor] | None = None

    # --- tensors -------------------------------------------------------------------------------------
    def _activations(self, shas: Sequence[str], views: Sequence[int], flips: np.ndarray | None = None) -> torch.Tensor:
        x = torch.from_numpy(self.store.gather(shas, views))
        if flips is not None and flips.any():
            idx = torch.from_numpy(np.flatnonzero(flips))
            x[idx] = x[idx].flip(-1)
        return x.to(self.device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.no_grad()
    def pooled_features(self, module: TopNetwork, shas: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        module.eval()
        out = []
        for i in range(0, len(shas), batch_size):
            chunk = shas[i:i + batch_size]
            with self._autocast():
                out.append(module.features(self._activations(chunk, [0] * len(chunk))).float())
        return torch.cat(out) if out else torch.zeros((0, module.width), device=self.device)

    @torch.no_grad()
    def logits(self, module: TopNetwork, shas: Sequence[str]) -> torch.Tensor:
        return module.classify(self.pooled_features(module, shas))

    def accuracy(self, module: TopNetwork, shas: Sequence[str], y: np.ndarray) -> float:
        if not len(shas):
            return float("nan")
        pred = self.logits(module, shas).argmax(1).cpu().numpy()
        return float((pred == y).mean())

    # --- linear probe ------------------------------------------------------------------------------------
    def linear_probe(self, train: Batches) -> None:
        """Start the classifier from a probe on the frozen pooled features of the centre views."""
        if self.s.probe_steps <= 0:
            return
        feats = self.pooled_features(self.top, train.shas)
        if self.top.rbi is not None:
            self._probe_rbi(feats, train.y)
        else:
            self._probe_linear(feats, train.y, self.top.fc)
        if self.ema is not None:
            self.ema.module.load_state_dict(self.top.state_dict())

    def _probe_linear(self, feats: torch.Tensor, labels: np.ndarray, fc: nn.Linear) -> None:
        y = torch.from_numpy(labels).to(self.device)
        opt = torch.optim.Adam(fc.parameters(), lr=1e-2, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(self.s.seed)
        torch.manual_seed(self.s.seed)  # dropout
        loss_fn = nn.CrossEntropyLoss(label_smoothing=self.s.label_smoothing)
        for _ in range(self.s.probe_steps):
            idx = torch.randint(len(feats), (min(256, len(feats)),), generator=gen).to(self.device)
            loss = loss_fn(fc(nn.functional.dropout(feats[idx], self.s.dropout)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def _probe_rbi(self, feats: torch.Tensor, labels: np.ndarray) -> None:
        """RBI's start: the same linear probe for its classifier, on the embeddings (its attention starts as the
        identity, so the network starts as that probe)."""
        self._probe_linear(self.top.embedding(feats), labels, self.top.rbi.classifier)

    def _outlier_exposure_loss(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """MixOE's term: soft cross-entropy of the network on known images mixed with synthetic outliers."""
        drawn = outlier_mixtures(x, y, self.top.n_classes, rng)
        if drawn is None:
            return torch.zeros((), device=self.device)
        mixed, target = drawn
        with self._autocast():
            logits = self.forward_module(mixed).float()
        return -(target * nn.functional.log_softmax(logits, dim=1)).sum(1).mean()

    def _mixed_loss(self, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float) -> torch.Tensor:
        """Label-smoothed cross-entropy of a (possibly mixed) batch: λ towards y_a, 1 − λ towards y_b."""
        def ce(y: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(logits, y, label_smoothing=self.s.label_smoothing)

        return lam * ce(y_a) + (1 - lam) * ce(y_b)

    def _rbi_loss(self, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float) -> torch.Tensor:
        """Cross-entropy on the batch-refined logits + aux_weight × on the unrefined ones (the single-image path)."""
        return self._mixed_loss(logits[0], y_a, y_b, lam) + \
            self.s.rbi_aux_weight * self._mixed_loss(logits[1], y_a, y_b, lam)

    # --- training ----------------------------------------------------------------------------------------
    def fit(self, train: Batches, val: Batches | None) -> dict[str, torch.Tensor]:
        """Train to `epochs` (resuming from a checkpoint in run_dir when there is one); returns the kept weights:
        the best validation epoch's (EMA) weights, or the last epoch's without validation."""
        from tqdm import tqdm

        self.start(train)
        steps_per_epoch = math.ceil(len(train.shas) / self.s.batch_size)
        total, warmup = steps_per_epoch * self.s.epochs, int(round(steps_per_epoch * self.s.warmup_epochs))
        while self.epoch < self.s.epochs:
            t0 = time.perf_counter()
            rng = np.random.default_rng([self.s.seed, self.epoch])
            torch.manual_seed(self.s.seed * 100_003 + self.epoch + 1_000_003 * self.rank)  # dropout
            order = epoch_order(train.y, self.s, rng)
            views = rng.integers(0, train.n_views, len(train.shas))  # per image (P×K may show one twice)
            flips = rng.random(len(train.shas)) < 0.5 if self.s.flip else None
            self.forward_module.train()
            self.top.train_mode()
            losses = []
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {self.epoch + 1}/{self.s.epochs}", unit="batch",
                       file=sys.stderr, disable=not (self.progress and self.bars), dynamic_ncols=True, leave=False)
            for b in bar:
                batch = order[b * self.s.batch_size:(b + 1) * self.s.batch_size]
                idx = self.my_share(batch)
                x = self._activations([train.shas[i] for i in idx], views[idx],
                                      None if flips is None else flips[idx])
                y = torch.from_numpy(train.y[idx]).to(self.device)
                x, y_a, y_b, lam = _mix(x, y, self.s, rng if self.world == 1 else self._mix_rng(b),
                                        saliency=self.top.class_activation)
                for g in self.opt.param_groups:
                    g["lr"] = g["base_lr"] * lr_factor(self.step, total, warmup)
                similarity = pair_similarity(x, self.s.rbi_rpe) if self.s.rbi and self.s.rbi_rpe in SIMILARITY_RPES \
                    else None
                with self._autocast():
                    logits = self.forward_module(x, similarity).float()
                if self.s.rbi:
                    loss = self._rbi_loss(logits, y_a, y_b, lam)
                elif self.world == 1:
                    loss = self._mixed_loss(logits, y_a, y_b, lam)
                else:
                    loss = self._share_of_batch_loss(logits, y_a, y_b, lam, len(batch))
                if self.s.mixoe > 0:
                    loss = loss + self.s.mixoe * self._outlier_exposure_loss(x, y, rng)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                if self.ema is not None:
                    self.ema.update(self.top)
                self.step += 1
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{np.mean(losses):.3f}")
            bar.close()
            self._end_epoch(float(np.mean(losses)), val, time.perf_counter() - t0)
        return self.kept_state()

    def start(self, train: Batches) -> bool:
        """Resume from run_dir's checkpoint, else start the classifier with the linear probe; True if resumed."""
        resumed = self.resume()
        if not resumed:
            self.linear_probe(train)
        return resumed

    def kept_state(self) -> dict[str, torch.Tensor]:
        """The best validation epoch's (EMA) weights, or the last epoch's without validation."""
        return self.best_state if self.best_state is not None else self.kept_module().state_dict()

    # --- data-parallel ranks -------------------------------------------------------------------------
    def my_share(self, batch: np.ndarray) -> np.ndarray:
        """This rank's rows of a global batch (all of it on one process; sizes differ by at most one)."""
        return batch if self.world == 1 else np.array_split(batch, self.world)[self.rank]

    def _mix_rng(self, b: int) -> np.random.Generator:
        """Per rank and batch: ranks mix within their own share, and shares of unequal size must not make the
        ranks' epoch streams drift apart."""
        return np.random.default_rng([self.s.seed, self.epoch, b, self.rank])

    def _share_of_batch_loss(self, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float,
                             n_batch: int) -> torch.Tensor:
        """This share's summed loss × world / global batch size: DDP averages the ranks' gradients, which then
        equal the gradient of the global batch's mean loss, however unevenly it was shared."""
        def summed(y: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(logits, y, reduction="sum", label_smoothing=self.s.label_smoothing)

        return (lam * summed(y_a) + (1 - lam) * summed(y_b)) * (self.world / n_batch)

    def _say(self, message: str) -> None:
        """A progress line on stderr (as `finegrain.progress` shows them), when this trainer shows progress."""
        with progress_scope(self.progress):
            note(message)

    def kept_module(self) -> TopNetwork:
        return self.ema.module if self.ema is not None else self.top

    def _end_epoch(self, loss: float, val: Batches | None, seconds: float) -> None:
        self.epoch += 1
        if self.rank != 0:
            return
        kept = self.kept_module()
        val_acc = self.accuracy(kept, val.shas, val.y) if val is not None else float("nan")
        self.history.append({"epoch": self.epoch, "loss": round(loss, 5), "val_accuracy": val_acc,
                             "seconds": round(seconds, 1)})
        if val is not None and val_acc > self.best["val_accuracy"]:
            self.best = {"epoch": self.epoch, "val_accuracy": val_acc}
            self.best_state = {k: v.detach().clone() for k, v in kept.state_dict().items()}
        left = (self.s.epochs - self.epoch) * float(np.mean([h["seconds"] for h in self.history]))
        if self.progress:
            best = f" (best {self.best['val_accuracy']:.3f} at epoch {self.best['epoch']})" if val is not None else ""
            self._say(f"epoch {self.epoch}/{self.s.epochs}: loss {loss:.3f}, val accuracy {val_acc:.3f}{best}, "
                      f"{seconds:.0f} s, about {left / 60:.1f} min left")
        self.save_checkpoint()

    # --- checkpoints -------------------------------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"top.{k}": v for k, v in self.top.state_dict().items()}
        if self.ema is not None:
            tensors |= {f"ema.{k}": v for k, v in self.ema.module.state_dict().items()}
        if self.best_state is not None:
            tensors |= {f"best.{k}": v for k, v in self.best_state.items()}
        for pid, state in self.opt.state_dict()["state"].items():
            tensors |= {f"opt.{pid}.{name}": torch.as_tensor(v) for name, v in state.items()}
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def _commit(self, tensors: dict[str, torch.Tensor], name: str, meta: dict[str, Any], record: str) -> None:
        """Atomically: the tensors file `name` first, then the JSON `record` that names it (the commit)."""
        from safetensors.torch import save_file

        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / f".{name}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, self.run_dir / name)
        tmp_json = self.run_dir / f".{record}.tmp"
        tmp_json.write_text(json.dumps({"tensors": name, **meta}), encoding="utf-8")
        os.replace(tmp_json, self.run_dir / record)

    def _committed(self, record: str, what: str, device: str = "cpu") -> tuple[dict, dict[str, torch.Tensor]] | None:
        """(meta, tensors) of the JSON `record` in run_dir and the tensors file it names; None when there is none,
        or (with a warning naming `what` happens instead) when it cannot be read."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.run_dir / record
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            return meta, load_file(str(self.run_dir / meta["tensors"]), device=device)
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            log.warning("ignoring an unreadable fine-tuning %s in %s (%s); %s", record, self.run_dir, exc, what)
            return None

    def save_checkpoint(self) -> None:
        """The epoch's state committed atomically (`_commit`), then the older epochs' files go."""
        name = f"epoch{self.epoch:04d}.safetensors"
        self._commit(self._tensors(), name, {"epoch": self.epoch, "step": self.step, "history": self.history,
                                             "best": self.best,
                                             "ema_updates": self.ema.updates if self.ema is not None else 0},
                     CHECKPOINT)
        for old in self.run_dir.glob("epoch*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def save_finished(self, kept: dict[str, torch.Tensor]) -> None:
        """Replace the checkpoints with the kept weights (committed atomically): an identical run later (the same
        member of a larger joined backbone, a rerun with other test-time views or calibration, a combined run
        resumed after a kill) takes them instead of training again."""
        self._commit({k: v.detach().cpu().contiguous() for k, v in kept.items()}, "kept.safetensors",
                     {"epoch": self.epoch, "history": self.history, "best": self.best}, FINISHED)
        (self.run_dir / CHECKPOINT).unlink(missing_ok=True)
        for old in self.run_dir.glob("epoch*.safetensors"):
            old.unlink(missing_ok=True)

    def finished_state(self) -> dict[str, torch.Tensor] | None:
        """The kept weights of an identical run that already ended in run_dir (its history restored), else None."""
        committed = self._committed(FINISHED, "training again")
        if committed is None:
            return None
        meta, kept = committed
        self.epoch, self.history, self.best = meta["epoch"], meta["history"], meta["best"]
        self._say(f"reusing the finished fine-tuning in {self.run_dir} (best epoch {self.best['epoch']}); "
                  "--restart trains again")
        return kept

    def resume(self, announce: bool = True) -> bool:
        """Load the last committed checkpoint in run_dir, if any."""
        committed = self._committed(CHECKPOINT, "starting over", device=str(self.device))
        if committed is None:
            return False
        meta, tensors = committed

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.top.load_state_dict(part("top."))
        if self.ema is not None:
            self.ema.module.load_state_dict(part("ema."))
            self.ema.updates = int(meta["ema_updates"])
        best = part("best.")
        self.best_state = best or None
        opt_state = self.opt.state_dict()
        flat = part("opt.")
        opt_state["state"] = {}
        for key, v in flat.items():
            pid, _, name = key.partition(".")
            opt_state["state"].setdefault(int(pid), {})[name] = v
        self.opt.load_state_dict(opt_state)
        self.epoch, self.step, self.history, self.best = meta["epoch"], meta["step"], meta["history"], meta["best"]
        if announce and self.epoch > 0:  # epoch 0: the probed start a Ray job's workers load
            self._say(f"resuming from the checkpoint of epoch {self.epoch}/{self.s.epochs} ({self.run_dir})")
        return True


def class_indices(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[lab] for lab in labels], dtype=np.int64)


