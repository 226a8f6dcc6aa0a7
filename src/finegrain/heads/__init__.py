"""Heads: scikit-learn-style estimators on embeddings, looked up by name."""
from __future__ import annotations

from ..errors import ConfigError
from ..registry import Registry
from .base import Head
from .knn import KNNHead
from .logistic import LogisticHead
from .prototype import PrototypeHead
from .rbi import RBIHead
from .mixoe import MixOEHead
from ..zeroshot.head import ZeroShotHead  # noqa: E402  (zero-shot models load like any other)

HEADS: Registry[type[Head]] = Registry("head")
HEADS.register("logistic")(LogisticHead)
HEADS.register("prototype")(PrototypeHead)
HEADS.register("ncm")(PrototypeHead)
HEADS.register("knn")(KNNHead)
HEADS.register("zeroshot")(ZeroShotHead)
HEADS.register("rbi")(RBIHead)
HEADS.register("mixoe")(MixOEHead)
DEFAULT_HEAD = "logistic"


def head_parameters(name: str) -> list[str]:
    """The keyword parameters head `name` accepts."""
    import inspect

    return [p for p in inspect.signature(HEADS.get(name).__init__).parameters if p != "self"]


def make_head(name: str = DEFAULT_HEAD, **params) -> Head:
    """Build a head by name; an unknown parameter is a usage error that lists the accepted ones."""
    accepted = head_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"head '{name}' has no parameter {', '.join(unknown)}",
                          expected=f"one of: {', '.join(accepted)}", found=", ".join(unknown),
                          fix="check the spelling of --head-param KEY=VALUE")
    return HEADS.get(name)(**params)


def head_from_state(values: dict, arrays: dict) -> Head:
    return HEADS.get(values["head"]).from_state(values, arrays)


__all__ = ["Head", "HEADS", "DEFAULT_HEAD", "make_head", "head_parameters", "head_from_state", "LogisticHead", "PrototypeHead", "KNNHead"]
