"""Backbone registry. A backbone id is one string: `efficientnet_lite0`, `tiny`, `family:argument`, or several
of those joined by '+' (their embeddings side by side, `composite.py`)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..registry import Registry
from .base import TUNED_FAMILY, Backbone, Preprocess
from .composite import SEPARATOR, CompositeBackbone, member_ids
from .inputs import split_input, with_input

DEFAULT_BACKBONE = "efficientnet_lite0"
VLM_FAMILIES = ("hf_clip", "open_clip")
BACKBONES: Registry[Callable[[str], Backbone]] = Registry("backbone")


def _register_builtin() -> None:
    def lite(name: str) -> Backbone:
        from .efficientnet_lite import load_efficientnet_lite
        return load_efficientnet_lite(name)

    def tiny(name: str) -> Backbone:
        from .tiny import load_tiny
        return load_tiny(name)

    def vlm(name: str) -> Backbone:
        from .clip import VLMImageBackbone
        return VLMImageBackbone(name)

    def finetuned(name: str) -> Backbone:
        from ..finetune.network import registered
        return registered(name)

    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        BACKBONES.register(name)(lite)
    BACKBONES.register("tiny")(tiny)
    for family in VLM_FAMILIES:  # image towers of CLIP-family models: `hf_clip:DIR`, `open_clip:ARCH/TAG`
        BACKBONES.register(family)(vlm)
    BACKBONES.register(TUNED_FAMILY)(finetuned)


_register_builtin()


def parse_backbone_id(backbone_id: str) -> tuple[str, str | None]:
    """'family:arg' → ('family', 'arg'); 'name' → ('name', None); an input part ('name@320') is left out."""
    if not isinstance(backbone_id, str) or not backbone_id.strip():
        raise ConfigError("empty backbone id", expected="a name such as 'efficientnet_lite0'",
                          found=repr(backbone_id), fix=f"pass one of: {', '.join(BACKBONES.names())}")
    family, sep, arg = split_input(backbone_id)[0].strip().partition(":")
    return (family, arg) if sep else (family, None)


@lru_cache(maxsize=8)
def get_backbone(backbone_id: str = DEFAULT_BACKBONE) -> Backbone | CompositeBackbone:
    """Build (once per process) the backbone named by `backbone_id`."""
    if SEPARATOR in str(backbone_id):
        return CompositeBackbone([get_backbone(m) for m in member_ids(backbone_id)])
    base_id, spec = split_input(backbone_id)
    if spec is not None:
        return with_input(get_backbone(base_id), spec, backbone_id.strip())
    family, _ = parse_backbone_id(backbone_id)
    if family not in BACKBONES.names() and Path(backbone_id).expanduser().is_dir():  # a model folder's backbone
        from ..finetune.network import backbone_of_model_folder
        return get_backbone(backbone_of_model_folder(Path(backbone_id).expanduser()))
    return BACKBONES.get(family)(backbone_id)


def member_widths(backbone_id: str) -> list[int] | None:
    """Embedding width of each member of a combined backbone ('a+b'); None for a single backbone."""
    if SEPARATOR not in str(backbone_id):
        return None
    return [m.embed_dim for m in get_backbone(backbone_id).members]


def list_backbones() -> list[str]:
    return BACKBONES.names()


__all__ = ["Backbone", "CompositeBackbone", "Preprocess", "DEFAULT_BACKBONE", "get_backbone", "list_backbones", "member_widths", "parse_backbone_id"]
