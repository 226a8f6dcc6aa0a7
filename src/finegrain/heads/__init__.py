"""Heads: scikit-learn-style estimators on embeddings, looked up by name."""
from __future__ import annotations

from ..errors import ConfigError
from ..registry import Registry
from .base import Head
from .knn import KNNHead
from .logistic import LogisticHead
from .prototype import PrototypeHead
from ..zeroshot.head import ZeroShotHead  # noqa: E402  (zero-shot models load like any other)
from .rbi import RBIHead

HEADS: Registry[type[Head]] = Registry("head")
HEADS.register("logistic")(LogisticHead)
HEADS.register("prototype")(PrototypeHead)
HEADS.register("ncm")(PrototypeHead)
HEADS.register("knn")(KNNHead)
HEADS.register("zeroshot")(ZeroShotHead)
HEADS.register("rbi")(RBIHead)
DEFAULT_HEAD = "logistic"


def make_head(name: str = DEFAULT_HEAD, **params) -> Head:
    """Build a head by name; an unknown parameter is a usage error that lists the accepted ones."""
    import inspect

    cls = HEADS.get(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"head '{name}' has no parameter {', '.join(unknown)}",
                          expected=f"one of: {', '.join(accepted)}", found=", ".join(unknown),
                          fix="check the spelling of --head-param KEY=VALUE")
    return cls(**params)


def head_from_state(values: dict, arrays: dict) -> Head:
    return HEADS.get(values["head"]).from_state(values, arrays)


__all__ = ["Head", "HEADS", "DEFAULT_HEAD", "make_head", "head_from_state", "LogisticHead", "PrototypeHead", "KNNHead"]
