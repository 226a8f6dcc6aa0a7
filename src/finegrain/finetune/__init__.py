"""Fine-tuning on a CPU: the upper blocks of a backbone trained on stored activations of its frozen trunk.

    import finegrain
    clf = finegrain.finetune("data/birds", train_blocks=5, views=8, seed=0)
    clf.save("models/birds-tuned")                # the tuned network travels inside the model folder

Imports are lazy: `finegrain.finetune.settings` (the recipe's defaults) does not import torch.

`finegrain.finetune` names both this package and the function: once any `finegrain.finetune.*` module is
imported, Python makes the package the attribute `finegrain.finetune`, so the package itself is callable
and calls the function — `finegrain.finetune(...)` works whatever was imported first.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_LAZY = {"finetune": ("finegrain.finetune.api", "finetune"),
         "TrainSettings": ("finegrain.finetune.settings", "TrainSettings")}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'finegrain.finetune' has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """This package, callable as `finegrain.finetune(...)` (see the module docstring)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .api import finetune
        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
