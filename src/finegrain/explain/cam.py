"""Class activation maps as pure numpy functions: activations and gradients in, maps out.

Grad-CAM (Selvaraju et al.): channel weight = spatial mean of the gradient of a class score with respect to
the last conv map; map = ReLU(weighted sum of channels). Grad-CAM++ (Chattopadhay et al.) weights each
location's positive gradient by a closed-form coefficient, which spreads credit over several object parts
instead of the single strongest one. Both take arrays shaped (N, C, h, w).
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError

_EPS = 1e-12


def _check_maps(acts: np.ndarray, grads: np.ndarray | None = None) -> None:
    if acts.ndim != 4 or (grads is not None and grads.shape != acts.shape):
        raise DataError("activation maps and gradients do not match", expected="two arrays of shape (N, C, h, w)",
                        found=f"{acts.shape} and {None if grads is None else grads.shape}",
                        fix="pass the conv feature map and its gradient for the same batch")


def gradcam_weights(grads: np.ndarray) -> np.ndarray:
    """(N, C, h, w) gradients → (N, C) channel weights: the spatially averaged gradient."""
    _check_maps(grads)
    return grads.mean(axis=(2, 3))


def gradcampp_weights(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """(N, C) Grad-CAM++ weights: Σ_ij α_ij · ReLU(g_ij), α = g² / (2g² + Σ_ab A_ab · g³).

    The closed form assumes the score is an exponential of the logit, as in the paper and pytorch-grad-cam.
    """
    _check_maps(acts, grads)
    g2 = grads ** 2
    g3 = g2 * grads
    total = acts.sum(axis=(2, 3), keepdims=True)
    alpha = g2 / (2 * g2 + total * g3 + _EPS)
    alpha = np.where(grads != 0, alpha, 0.0)
    return (alpha * np.maximum(grads, 0.0)).sum(axis=(2, 3))


def weighted_activation_map(acts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ReLU(Σ_k w_k A_k): (N, C, h, w) and (N, C) → (N, h, w); only evidence *for* the class is kept."""
    _check_maps(acts)
    if weights.shape != acts.shape[:2]:
        raise DataError("channel weights do not match the activation maps", expected=f"shape {acts.shape[:2]}",
                        found=f"shape {weights.shape}", fix="compute one weight per (image, channel)")
    return np.maximum(np.einsum("nchw,nc->nhw", acts, weights), 0.0)


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each map to [0, 1] by its maximum; an all-zero map (no positive evidence) stays zero."""
    peak = maps.reshape(len(maps), -1).max(axis=1)
    scale = np.where(peak > _EPS, peak, 1.0)
    return (maps / scale[:, None, None]).astype(np.float32)


def upsample_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, h, w) → (N, height, width) by bilinear interpolation, to lay a coarse map over the input image."""
    from PIL import Image

    def one(m: np.ndarray) -> np.ndarray:
        img = Image.fromarray(np.ascontiguousarray(m, dtype=np.float32))
        return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR))

    out = [one(m) for m in maps]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, height, width), dtype=np.float32)
