"""Grad-CAM through a torch backbone's last conv map and any head.

The backbone's weights stay frozen and untouched: the conv map is computed once without a graph, then a
detached copy that requires grad goes through pooling + L2 normalisation, and the head's gradient (taken in
`gradients.py`) is pushed back into it. No hooks are registered, so nothing outlives the call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..backbones import Backbone
from ..errors import ConfigError
from ..heads import Head
from ..tta import inverse_view, turned_crops
from .cam import gradcam_weights, gradcampp_weights, weighted_activation_map
from .gradients import score_gradient

METHODS = ("gradcam", "gradcam++")


@dataclass
class ConvMaps:
    """A batch's last conv map (N, K, h, w), its L2-normalised embedding (N, D) and the head's logits (N, C)."""

    acts: np.ndarray
    embeddings: np.ndarray
    logits: np.ndarray


def require_torch_backbone(backbone: Backbone):
    """Grad-CAM needs a differentiable conv map; say so plainly for backbones that have none."""
    from ..backbones.torch_backbone import TorchBackbone

    if not isinstance(backbone, TorchBackbone):
        raise ConfigError(f"backbone '{backbone.id}' has no differentiable conv feature map to explain",
                          expected="a torch backbone such as efficientnet_lite0 or tiny",
                          found=type(backbone).__name__, fix="explain a model trained on a torch backbone")
    return backbone


def conv_maps(backbone: Backbone, head: Head, images: np.ndarray) -> ConvMaps:
    """(N, H, W, 3) uint8 → the conv map, embedding and logits, computed once per batch without a graph."""
    import torch

    from ..backbones.torch_backbone import configure_torch_threads

    bb = require_torch_backbone(backbone)
    configure_torch_threads()
    with torch.no_grad():
        acts = bb.feature_map(bb.to_input(images)).float()
        emb = torch.nn.functional.normalize(acts.mean(dim=(2, 3)), dim=1)
    X = emb.numpy()
    return ConvMaps(acts.numpy(), X, np.asarray(head.decision_function(X), dtype=np.float32))


def conv_map_gradient(acts: np.ndarray, embedding_grad: np.ndarray) -> np.ndarray:
    """Backpropagate an embedding gradient g (N, D) through pooling + L2 norm into the conv map (N, K, h, w)."""
    import torch

    A = torch.from_numpy(np.ascontiguousarray(acts, dtype=np.float32)).requires_grad_(True)
    with torch.enable_grad():
        e = torch.nn.functional.normalize(A.mean(dim=(2, 3)), dim=1)
        (e * torch.from_numpy(np.ascontiguousarray(embedding_grad, dtype=np.float32))).sum().backward()
    grad = A.grad.numpy().copy()
    A.grad = None
    return grad


def activation_maps(maps: ConvMaps, head: Head, target: np.ndarray, other: np.ndarray | None = None,
                    methods: tuple[str, ...] = ("gradcam",)) -> dict[str, np.ndarray]:
    """{method: (N, h, w) map ≥ 0} for logit[target] (or logit[target] − logit[other]: "why target, not other")."""
    return view_activation_maps([(None, maps)], head, target, other, methods)


def view_activation_maps(views: Sequence[tuple[str | None, ConvMaps]], head: Head, target: np.ndarray,
                         other: np.ndarray | None = None,
                         methods: tuple[str, ...] = ("gradcam",)) -> dict[str, np.ndarray]:
    """`activation_maps` of a model that averages views of the image (`--tta`): (view, its conv maps) pairs,
    None for the plain crop. The score's gradient reaches each view's conv map through the average of the views'
    unit embeddings; each view's map is turned back onto the plain crop and the maps are summed — so a turned
    image gets the turned explanation."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown explanation method {', '.join(unknown)}", expected=f"one of {', '.join(METHODS)}",
                          found=", ".join(unknown), fix="use --method gradcam or --method gradcam++")
    total = np.sum([m.embeddings for _, m in views], axis=0, dtype=np.float64)
    norm = np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)
    X = total / norm  # what the head sees (`views.average_views`)
    g = score_gradient(head, X.astype(np.float32), target, other)
    g_sum = (g - (g * X).sum(axis=1, keepdims=True) * X) / norm  # through the average's normalisation
    out: dict[str, np.ndarray] = {}
    for view, maps in views:
        grads = conv_map_gradient(maps.acts, g_sum)
        weights = {"gradcam": lambda: gradcam_weights(grads),
                   "gradcam++": lambda: gradcampp_weights(maps.acts, grads)}
        for m in methods:
            cam = weighted_activation_map(maps.acts, weights[m]())
            cam = cam if view is None else turned_crops(cam[..., None], inverse_view(view))[..., 0]
            out[m] = cam if m not in out else out[m] + cam
    return out
