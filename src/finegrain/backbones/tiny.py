"""A tiny random-weight CNN for tests: deterministic weights from a fixed seed, milliseconds per batch."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import Preprocess
from .torch_backbone import TorchBackbone

TINY_SEED = 1234


def load_tiny(name: str = "tiny", size: int = 32) -> TorchBackbone:
    """`tiny` (16 channels) or `tiny:WIDTH`: a second, different tiny network when a test needs two."""
    _, _, arg = name.partition(":")
    if arg and not arg.isdigit():
        raise ConfigError(f"unknown tiny backbone '{name}'", expected="tiny or tiny:WIDTH (a whole number)",
                          found=name, fix="use e.g. tiny:24")
    width = int(arg) if arg else 16
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
