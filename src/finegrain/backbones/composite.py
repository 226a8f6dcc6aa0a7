"""Several backbones side by side (`efficientnet_lite0+efficientnet_lite2`): one embedding, their concatenation.

Different networks make different mistakes. Each member embeds an image its own way — its own
preprocessing, runtime and cache entries, so embeddings a member already has are reused — and the unit
embeddings are concatenated and scaled by 1/√n, so the result is unit length like any backbone's. On cub100
the logistic head (one model per member, `heads/logistic.py`) reaches 0.929 top-1 on lite0+lite1+lite2
against 0.900 on lite0 alone, for the sum of their embedding costs. Grad-CAM needs one conv map, so such
models explain nothing (the report says so).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ConfigError
from .base import Backbone, Preprocess

SEPARATOR = "+"


def member_ids(backbone_id: str) -> list[str]:
    """'a+b' → ['a', 'b'] (one id for a plain backbone)."""
    return [part.strip() for part in backbone_id.split(SEPARATOR)]


@dataclass(frozen=True)
class CompositePreprocess:
    """The members' preprocessing, in order: saved in artifacts like a plain backbone's."""

    members: tuple[Preprocess, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"members": [p.to_dict() for p in self.members]}


class CompositeBackbone:
    """The members of a '+'-joined backbone id; `finegrain.embed.embed_samples` embeds with each and joins them."""

    def __init__(self, members: Sequence[Backbone]) -> None:
        ids = [m.id for m in members]
        if len(ids) < 2 or len(set(ids)) != len(ids) or any(SEPARATOR in i for i in ids):
            raise ConfigError("a combined backbone needs two or more different backbones",
                              expected="ids joined by '+', e.g. efficientnet_lite0+efficientnet_lite2",
                              found=SEPARATOR.join(ids), fix="list each backbone once")
        self.members = tuple(members)
        self.id = SEPARATOR.join(ids)
        self.embed_dim = sum(m.embed_dim for m in members)
        self.preprocess = CompositePreprocess(tuple(m.preprocess for m in members))

    @property
    def cache_key(self) -> str:
        """Changes when any member's weights or preprocessing change."""
        blob = json.dumps({"members": [m.cache_key for m in self.members]})
        return hashlib.sha256(blob.encode()).hexdigest()[:32]
