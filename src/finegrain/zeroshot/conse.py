"""ConSE: an image's ImageNet class probabilities, mapped into the text space of class names.

Norouzi et al.'s convex combination of semantic embeddings: the image is placed at the probability-weighted
mean of the text embeddings of its top-T ImageNet labels; unseen classes are then ranked by cosine
similarity to it. Needs nothing but a classifier the backbone already has.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..heads.base import l2_normalise, softmax


def conse_embed(X: np.ndarray, weight: np.ndarray, bias: np.ndarray, scale: float, label_emb: np.ndarray,
                top: int) -> np.ndarray:
    """(N, D) unit image embeddings → (N, T) unit text-space points.

    weight/bias: the source classifier (K, D)/(K,) applied to `scale`·X (the backbone's embeddings are
    L2-normalised, the classifier was trained on un-normalised pooled features of about that norm);
    label_emb: (K, T) text embeddings of the source labels."""
    P = softmax(scale * (np.asarray(X, dtype=np.float32) @ weight.T) + bias)
    top = min(int(top), P.shape[1])
    idx = np.argpartition(-P, top - 1, axis=1)[:, :top]
    W = np.zeros_like(P)
    rows = np.arange(len(P))[:, None]
    W[rows, idx] = P[rows, idx]
    W /= np.maximum(W.sum(axis=1, keepdims=True), 1e-12)
    return l2_normalise(W @ label_emb).astype(np.float32)


def imagenet_source(backbone_id: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(weight, bias, feature norm) of the ImageNet-1k classifier of an EfficientNet-Lite backbone."""
    from ..backbones import get_backbone
    from ..backbones.efficientnet_lite import VARIANTS, imagenet_head

    if backbone_id not in VARIANTS:
        raise ConfigError(f"ConSE needs a backbone with an ImageNet classifier; '{backbone_id}' has none",
                          expected=f"one of {', '.join(VARIANTS)}", found=backbone_id,
                          fix="use --backbone efficientnet_lite0, or train an alignment with `finegrain align`")
    fc = imagenet_head(get_backbone(backbone_id))
    return (fc.weight.detach().numpy().astype(np.float32), fc.bias.detach().numpy().astype(np.float32),
            FEATURE_NORM[backbone_id])


# Median L2 norm of the pooled (pre-normalisation) features, measured on 40 CUB images; the classifier
# expects that scale (with it, the top-1 ImageNet label of all 40 images matches the un-normalised one).
FEATURE_NORM = {"efficientnet_lite0": 12.6, "efficientnet_lite1": 10.4, "efficientnet_lite2": 10.4}
