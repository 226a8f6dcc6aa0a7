"""Fine-tuning on a CPU: the upper blocks of a backbone trained on stored activations of its frozen trunk.

    import finegrain
    clf = finegrain.finetune("data/birds", train_blocks=5, views=8, seed=0)
    clf.save("models/birds-tuned")                # the tuned network travels inside the model folder

Imports are lazy: `finegrain.finetune.settings` (the recipe's defaults) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"finetune": ("finegrain.finetune.api", "finetune"),
         "TrainSettings": ("finegrain.finetune.settings", "TrainSettings")}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'finegrain.finetune' has no attribute {name!r}")
