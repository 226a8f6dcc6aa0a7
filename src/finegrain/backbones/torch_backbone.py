"""A backbone built from a PyTorch module that yields a conv feature map, average-pooled into the embedding.

Keeping the feature map reachable (`feature_map`) is what lets Grad-CAM flow from a head's logit back into
the network later.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Backbone, Preprocess


def configure_torch_threads(n: int | None = None) -> None:
    """Use the thread budget (one intra-op thread per core at most): oversubscribing 2 cores slows eager PyTorch."""
    from ..threads import thread_budget
    n = n or thread_budget()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


class TorchBackbone(Backbone):
    """Wraps `features: nn.Module` mapping normalised (N, 3, H, W) float to (N, C, h, w); embedding = mean over h, w."""

    def __init__(self, backbone_id: str, features: nn.Module, embed_dim: int, preprocess: Preprocess,
                 fingerprint: str) -> None:
        self.id = backbone_id
        self.features = features.eval()
        self.embed_dim = embed_dim
        self.preprocess = preprocess
        self._fingerprint = fingerprint
        self._mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        for p in self.features.parameters():
            p.requires_grad_(False)

    def weights_fingerprint(self) -> str:
        return self._fingerprint

    def to_input(self, batch: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 → normalised (N, 3, H, W) float32 tensor."""
        return self.normalise(torch.from_numpy(np.ascontiguousarray(batch)))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) tensor → normalised float (N, 3, H, W); traceable, so exports carry it."""
        x = images.permute(0, 3, 1, 2).float()
        return (x - self._mean) / self._std

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        configure_torch_threads()
        with torch.inference_mode():
            return self.feature_map(self.to_input(batch)).mean(dim=(2, 3)).numpy()
