"""Vision-language (CLIP-family) models as image backbones; the same loaded model serves zero-shot's text
encoder (`finegrain.zeroshot.clip`).

Ids: `hf_clip:PATH_OR_NAME` (Hugging Face `transformers` CLIP-family models; extra `clip`) and
`open_clip:ARCH/TAG` (open_clip; it needs torchvision, which the `clip` extra leaves to the user because
only a multi-GB CUDA build exists on some machines). Images go through finegrain's own `Preprocess`, so no
image-processor class (and no torchvision) is needed for Hugging Face models. Loading from a hub name needs
the internet once; a local folder works offline.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MissingExtraError
from .base import Backbone, Preprocess, file_fingerprint

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def _features(out: Any):
    """transformers 4 returns a tensor from get_*_features; 5 returns an output whose pooler_output is it."""
    import torch
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def hf_preprocess(model_dir: Path | None, image_size: int) -> Preprocess:
    """CLIP preprocessing from a saved `preprocessor_config.json`, else CLIP's defaults at the model's size."""
    cfg = {}
    if model_dir is not None and (model_dir / "preprocessor_config.json").is_file():
        cfg = json.loads((model_dir / "preprocessor_config.json").read_text(encoding="utf-8"))
    crop = cfg.get("crop_size", image_size)
    crop = int(crop.get("height", image_size) if isinstance(crop, dict) else crop)
    short = cfg.get("size", crop)
    short = int(short.get("shortest_edge", crop) if isinstance(short, dict) else short)
    return Preprocess(size=crop, crop_pct=crop / short, interpolation=_PIL_RESAMPLE.get(cfg.get("resample", 3), "bicubic"),
                      mean=tuple(cfg.get("image_mean", CLIP_MEAN)), std=tuple(cfg.get("image_std", CLIP_STD)))


class HFClip:
    """A transformers CLIP-family model + tokenizer, loaded once and shared by the image and text sides."""

    def __init__(self, name: str) -> None:
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise MissingExtraError("transformers", "Hugging Face CLIP models", "clip") from exc
        local = Path(name).expanduser()
        self.model_dir = local if local.is_dir() else None
        source = str(local) if self.model_dir else name
        self.model = AutoModel.from_pretrained(source).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        for p in self.model.parameters():
            p.requires_grad_(False)
        cfg = self.model.config
        self.dim = int(getattr(cfg, "projection_dim", 0) or self.model.text_projection.out_features)
        self.image_size = int(cfg.vision_config.image_size)
        weights = sorted(self.model_dir.glob("*.safetensors")) if self.model_dir else []
        self.fingerprint = file_fingerprint(weights[0]) if weights else name
        self.max_length = int(getattr(cfg.text_config, "max_position_embeddings", 77))

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            return _features(self.model.get_text_features(**tok)).float().numpy()

    def encode_image(self, x) -> np.ndarray:
        import torch
        with torch.inference_mode():
            return _features(self.model.get_image_features(pixel_values=x)).float().numpy()


class OpenClip:
    """An open_clip model (`ARCH/TAG`, e.g. `ViT-B-32/laion2b_s34b_b79k`, or `hf-hub:ORG/REPO`)."""

    def __init__(self, spec: str) -> None:
        try:
            import open_clip
        except ImportError as exc:
            raise MissingExtraError("open_clip_torch", "open_clip models (open_clip also needs torchvision)",
                                    "clip") from exc
        arch, _, tag = spec.partition("/") if not spec.startswith("hf-hub:") else (spec, "", "")
        self.model, _ = open_clip.create_model_from_pretrained(arch, pretrained=tag or None)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        size = cfg.get("size", 224)
        size = int(size[0] if isinstance(size, (list, tuple)) else size)
        self.preprocess = Preprocess(size=size, crop_pct=1.0, interpolation=str(cfg.get("interpolation", "bicubic")),
                                     mean=tuple(cfg.get("mean", CLIP_MEAN)), std=tuple(cfg.get("std", CLIP_STD)))
        self.dim = int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") else \
            int(self.model.encode_text(self.tokenizer(["a"])).shape[1])
        self.fingerprint = spec

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch
        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(texts)).float().numpy()

    def encode_image(self, x) -> np.ndarray:
        import torch
        with torch.inference_mode():
            return self.model.encode_image(x).float().numpy()


@lru_cache(maxsize=2)
def load_vlm(vlm_id: str) -> HFClip | OpenClip:
    family, _, arg = vlm_id.partition(":")
    if not arg:
        raise ConfigError(f"vision-language model id '{vlm_id}' has no model name",
                          expected="hf_clip:PATH_OR_NAME or open_clip:ARCH/TAG", found=vlm_id,
                          fix="e.g. hf_clip:openai/clip-vit-base-patch32 or open_clip:ViT-B-32/laion2b_s34b_b79k")
    return HFClip(arg) if family == "hf_clip" else OpenClip(arg)


class VLMImageBackbone(Backbone):
    """The image tower of a CLIP-family model as a finegrain backbone (embeddings live in the text space)."""

    def __init__(self, vlm_id: str) -> None:
        import torch

        self.id, self.vlm = vlm_id, load_vlm(vlm_id)
        self.embed_dim = self.vlm.dim
        self.preprocess = self.vlm.preprocess if isinstance(self.vlm, OpenClip) else \
            hf_preprocess(self.vlm.model_dir, self.vlm.image_size)
        self._mean = torch.tensor(self.preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(self.preprocess.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0

    def weights_fingerprint(self) -> str:
        return self.vlm.fingerprint

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        from .torch_backbone import configure_torch_threads

        configure_torch_threads()
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
        return self.vlm.encode_image((x - self._mean) / self._std)


def is_vlm_backbone(backbone_id: str) -> bool:
    from . import VLM_FAMILIES
    return backbone_id.partition(":")[0] in VLM_FAMILIES
