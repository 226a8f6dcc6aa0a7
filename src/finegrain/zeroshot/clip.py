"""The text tower of a CLIP-family model (loaded once by `finegrain.backbones.clip`, shared with its image tower):
class prompts land in the space of the image embeddings."""
from __future__ import annotations

import numpy as np

from ..backbones.clip import load_vlm
from .encoders import TextEncoder


class VLMTextEncoder(TextEncoder):
    """The text tower of the same model: class prompts land in the space of the image embeddings."""

    def __init__(self, vlm_id: str) -> None:
        self.id, self.vlm = vlm_id, load_vlm(vlm_id)
        self.dim = self.vlm.dim

    def weights_fingerprint(self) -> str:
        return self.vlm.fingerprint

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.vlm.encode_text(texts)


def clip_text_encoder(vlm_id: str) -> VLMTextEncoder:
    return VLMTextEncoder(vlm_id)
