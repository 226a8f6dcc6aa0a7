"""Explanations: Grad-CAM / Grad-CAM++ / contrastive maps through any head, and nearest training images."""
from __future__ import annotations

from .api import Explanation, explain_crops, explain_images
from .cam import gradcam_weights, gradcampp_weights, normalise_maps, upsample_maps, weighted_activation_map
from .gradcam import METHODS, activation_maps, conv_maps
from .gradients import numeric_score_gradient, score_gradient
from .neighbours import Neighbour, cosine_top_k, nearest_examples, reference_embeddings

__all__ = ["Explanation", "explain_images", "explain_crops", "METHODS", "activation_maps", "conv_maps", "score_gradient",
           "numeric_score_gradient", "gradcam_weights", "gradcampp_weights", "weighted_activation_map",
           "normalise_maps", "upsample_maps", "Neighbour", "cosine_top_k", "nearest_examples", "reference_embeddings"]
