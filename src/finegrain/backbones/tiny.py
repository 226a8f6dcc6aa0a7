"""A tiny random-weight CNN for tests: deterministic weights from a fixed seed, milliseconds per batch."""
from __future__ import annotations

import torch
from torch import nn

from .base import Preprocess
from .torch_backbone import TorchBackbone

TINY_SEED = 1234


def load_tiny(name: str = "tiny", size: int = 32, width: int = 16) -> TorchBackbone:
    gen = torch.Generator().manual_seed(TINY_SEED)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, width, 3, stride=2, padding=1), nn.ReLU(),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    pre = Preprocess(size=size, crop_pct=1.0, interpolation="bilinear")
    return TorchBackbone(name, net, width, pre, fingerprint=f"seed{TINY_SEED}-w{width}")
