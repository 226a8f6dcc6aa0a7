"""A backbone's input size and framing, chosen in its id: `efficientnet_lite0@320-whole`, `efficientnet_lite0@pad`.

Fine-grained detail lives in pixels: the same ImageNet network sees a bird better at 320 px than at the 224 it
was trained at, and a photo already cropped to its subject loses the subject's edges to the usual 87.5 %
centre crop. On cub100 (frozen lite0, logistic head) the centre crop at 224 px scores 0.898, the whole image
at 224 0.903, at 288 0.907, at 320 0.912, for 2.0× the compute at 320. Plankton photos are small, of every
shape, on a white background: any square crop cuts long organisms, so `pad` keeps them whole (letterbox on
their own border colour): frozen lite0 on the plankton protocol 0.595 centre crop, 0.604 whole, 0.627 pad
(benchmarks/finetune.py, rows `*_frozen_*`).

`NAME@SIZE` resizes to SIZE×SIZE with the backbone's own crop; `NAME@SIZE-whole` (or `NAME@whole`) keeps the
whole shorter side (no margin cut); `NAME@SIZE-pad` (or `NAME@pad`) keeps the whole image, padded to a square.
The size and framing are part of the id, so they travel with every model, cache key and fine-tuned network
built on it, and an embedding is never reused across inputs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import ConfigError
from .base import TUNED_FAMILY, Backbone

INPUT_MARK = "@"
MIN_SIZE, MAX_SIZE = 32, 1024
_SPEC = re.compile(r"^(?:(?P<size>\d+)(?:-(?P<framing>whole|pad))?|(?P<only>whole|pad))$")


@dataclass(frozen=True)
class InputSpec:
    """SIZE×SIZE input (None: the backbone's own) and its framing: None (the backbone's own crop), 'whole' (the
    whole shorter side) or 'pad' (the whole image, letterboxed)."""

    size: int | None
    framing: str | None


def split_input(backbone_id: str) -> tuple[str, InputSpec | None]:
    """'efficientnet_lite0@320-whole' → ('efficientnet_lite0', InputSpec(320, 'whole')); an id without one, or a
    fine-tuned network's (whose input is its base's, inside the id), comes back whole with None."""
    base, mark, spec = str(backbone_id).rpartition(INPUT_MARK)
    if not mark or str(backbone_id).strip().startswith(f"{TUNED_FAMILY}:"):
        return str(backbone_id), None
    match = _SPEC.match(spec.strip())
    if not match or not base.strip():
        raise ConfigError(f"backbone id '{backbone_id}' has an input part '{INPUT_MARK}{spec}' that is not understood",
                          expected=f"NAME{INPUT_MARK}SIZE, NAME{INPUT_MARK}SIZE-whole, NAME{INPUT_MARK}SIZE-pad, "
                                   f"NAME{INPUT_MARK}whole or NAME{INPUT_MARK}pad (SIZE in pixels)",
                          found=spec, fix=f"use e.g. efficientnet_lite0{INPUT_MARK}320-whole")
    if match["only"]:
        return base.strip(), InputSpec(None, match["only"])
    size = int(match["size"])
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"input size {size} in backbone id '{backbone_id}' is out of range",
                          expected=f"{MIN_SIZE}–{MAX_SIZE} pixels", found=str(size),
                          fix=f"use e.g. efficientnet_lite0{INPUT_MARK}320")
    return base.strip(), InputSpec(size, match["framing"])


def with_input(backbone: Backbone, spec: InputSpec, backbone_id: str) -> Backbone:
    """`backbone` under the id `backbone_id`, reading SIZE×SIZE inputs (same network and weights)."""
    from .torch_backbone import TorchBackbone

    if not isinstance(backbone, TorchBackbone):
        raise ConfigError(f"backbone '{backbone.id}' cannot take another input size or crop",
                          expected="a convolutional backbone (efficientnet_lite0/1/2, tiny)",
                          found=backbone_id,
                          fix=f"drop the '{INPUT_MARK}…' part (CLIP-family towers have a fixed input)")
    pre = backbone.preprocess
    pre = replace(pre, size=spec.size or pre.size, crop_pct=1.0 if spec.framing else pre.crop_pct,
                  fit="pad" if spec.framing == "pad" else pre.fit)
    return TorchBackbone(backbone_id, backbone.features, backbone.embed_dim, pre,
                         fingerprint=backbone.weights_fingerprint())
