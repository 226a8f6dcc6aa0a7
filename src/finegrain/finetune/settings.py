"""The fine-tuning recipe as data: light to import (no torch), so the CLI can show its defaults instantly."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

DEFAULT_TRAIN_BLOCKS = 5
# Chosen by measurement (benchmarks/finetune.py, README): on cub100 lite0 tuned at 320 px on the uncut image and
# predicting with its mirror scores 0.931 ± 0.001 over 3 seeds, against 0.921 ± 0.002 at the stock 224-px centre
# crop without it, for about 4× the prediction cost (`--backbone efficientnet_lite0 --tta none`: the fast one).
DEFAULT_FINETUNE_BACKBONE = "efficientnet_lite0@320-whole"
DEFAULT_FINETUNE_TTA = "flip"
DEFAULT_VAL_SPLIT = 0.1
RBI_RPES = ("self", "relative", "none", "psnr", "cosine")  # heads.rbi RPES + SIMILARITY_RPES, without torch


@dataclass
class TrainSettings:
    """The fine-tuning recipe (saved with the model, part of the resume key)."""

    epochs: int = 15
    batch_size: int = 48
    lr: float = 1e-3              # classifier; the stages get backbone_lr × layer_decay^depth
    backbone_lr: float = 3e-4
    layer_decay: float = 0.8
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    ema_decay: float = 0.998      # 0 turns EMA off
    dropout: float = 0.2
    mixup: float = 0.0            # Beta(α, α) mixing of activations; 0 = off
    cutmix: float = 0.0           # Beta(α, α) box mixing of activation maps; 0 = off
    salmix: float = 0.0           # Beta(α, α) box mixing where the pasted image's class activation is highest; 0 = off
    mixoe: float = 0.0            # MixOE: weight of the loss on known images mixed with synthetic outliers; 0 = off
    flip: bool = True             # random horizontal flip of the activation maps
    rbi: bool = False             # RBI (batch attention, heads/rbi.py) between pooling and the classifier
    rbi_rpe: str = "self"         # self | relative | none | psnr | cosine (similarity of the stored activations)
    rbi_sampler: str = "pk"       # pk: P classes × K images per batch; random
    rbi_k: int = 4                # images per class in a P×K batch
    rbi_width: int = 256
    rbi_heads: int = 4
    rbi_layers: int = 1
    rbi_aux_weight: float = 0.5   # weight of the loss on the unrefined features (trains the single-image path)
    rbi_mode: str = "single"      # the inference mode the model is saved with: single | bank | transductive | plain
    probe_steps: int = 300        # linear-probe steps that start the classifier; 0 = random start
    precision: str = "auto"       # auto | fp32 | bf16
    device: str = "auto"          # auto | cpu | cuda
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [("epochs", self.epochs >= 1, "a whole number ≥ 1"), ("batch_size", self.batch_size >= 2, "≥ 2"),
                  ("lr", self.lr > 0, "> 0"), ("backbone_lr", self.backbone_lr >= 0, "≥ 0"),
                  ("layer_decay", 0 < self.layer_decay <= 1, "in (0, 1]"), ("weight_decay", self.weight_decay >= 0, "≥ 0"),
                  ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
                  ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"), ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
                  ("mixup", self.mixup >= 0, "≥ 0"), ("cutmix", self.cutmix >= 0, "≥ 0"),
                  ("salmix", self.salmix >= 0, "≥ 0"), ("mixoe", self.mixoe >= 0, "≥ 0"),
                  ("rbi_rpe", self.rbi_rpe in RBI_RPES, ", ".join(RBI_RPES)),
                  ("rbi_sampler", self.rbi_sampler in ("pk", "random"), "pk or random"),
                  ("rbi_k", self.rbi_k >= 1, "≥ 1"), ("rbi_heads", self.rbi_heads >= 1, "≥ 1"),
                  ("rbi_width", self.rbi_width >= 1 and self.rbi_width % max(1, self.rbi_heads) == 0,
                   "a multiple of --rbi-heads"),
                  ("rbi_layers", self.rbi_layers >= 1, "≥ 1"), ("rbi_aux_weight", self.rbi_aux_weight >= 0, "≥ 0"),
                  ("rbi_mode", self.rbi_mode in ("single", "bank", "transductive", "plain"),
                   "single, bank, transductive or plain"),
                  ("precision", self.precision in ("auto", "fp32", "bf16"), "auto, fp32 or bf16"),
                  ("device", self.device in ("auto", "cpu", "cuda"), "auto, cpu or cuda")]
        for name, ok, expected in checks:
            if not ok:
                flag = {"batch_size": "train-batch-size"}.get(name, name.replace("_", "-"))
                raise ConfigError(f"--{flag} {getattr(self, name)} is out of range",
                                  expected=expected, found=str(getattr(self, name)),
                                  fix=f"pass a value {expected}, or leave the default")
        if self.rbi and self.mixoe > 0:
            raise ConfigError("--mixoe cannot be combined with --rbi", expected="one of them", found="both",
                              fix="drop --mixoe (RBI's batch attention would attend to the synthetic outliers), or "
                                  "drop --rbi")
        if self.rbi and self.salmix > 0:
            raise ConfigError("--salmix cannot be combined with --rbi", expected="one of them",
                              found="both", fix="drop --salmix (its class activation maps need a linear classifier "
                                                "on the pooled features, which RBI replaces), or drop --rbi")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
