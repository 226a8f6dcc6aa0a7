"""Heads: scikit-learn-style estimators on embeddings, looked up by name."""
from __future__ import annotations

from ..registry import Registry
from .base import Head
from .knn import KNNHead
from .logistic import LogisticHead
from .prototype import PrototypeHead

HEADS: Registry[type[Head]] = Registry("head")
HEADS.register("logistic")(LogisticHead)
HEADS.register("prototype")(PrototypeHead)
HEADS.register("ncm")(PrototypeHead)
HEADS.register("knn")(KNNHead)
DEFAULT_HEAD = "logistic"


def make_head(name: str = DEFAULT_HEAD, **params) -> Head:
    return HEADS.get(name)(**params)


def head_from_state(values: dict, arrays: dict) -> Head:
    return HEADS.get(values["head"]).from_state(values, arrays)


__all__ = ["Head", "HEADS", "DEFAULT_HEAD", "make_head", "head_from_state", "LogisticHead", "PrototypeHead", "KNNHead"]
