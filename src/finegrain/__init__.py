"""finegrain: fine-grained image classification from a folder of photos, offline, on a CPU.

    import finegrain
    clf = finegrain.fit("data/birds")                 # folder-per-class, manifest or CUB-style folder
    clf = finegrain.finetune("data/birds")            # or: tune the backbone's last blocks too (minutes on a CPU)
    clf.save("models/birds")
    clf = finegrain.Classifier.load("models/birds")
    clf.predict(["photo.jpg"], top_k=5)
    finegrain.evaluate(clf, "data/birds", split="test")

Imports are lazy so that `finegrain --help` stays instant (no torch import).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ._version import __version__

_LAZY = {
    "fit": ("finegrain.training", "fit"),
    "finetune": ("finegrain.finetune.api", "finetune"),
    "TrainSettings": ("finegrain.finetune.settings", "TrainSettings"),
    "soup": ("finegrain.finetune.soup", "soup"),
    "evaluate": ("finegrain.evaluation", "evaluate"),
    "Classifier": ("finegrain.pipeline", "Classifier"),
    "Prediction": ("finegrain.pipeline", "Prediction"),
    "embed_samples": ("finegrain.embed", "embed_samples"),
    "load_data": ("finegrain.data.sources", "load_data"),
    "get_backbone": ("finegrain.backbones", "get_backbone"),
    "list_backbones": ("finegrain.backbones", "list_backbones"),
    "EmbeddingCache": ("finegrain.store", "EmbeddingCache"),
    "check": ("finegrain.data.check", "check_data"),
    "fewshot_eval": ("finegrain.fewshot.evaluate", "fewshot_eval"),
    "export_onnx": ("finegrain.export.onnx_model", "export_onnx"),
    "discover": ("finegrain.openworld.discover", "discover"),
    "zeroshot_classifier": ("finegrain.zeroshot.api", "zeroshot_classifier"),  # `finegrain.zeroshot` is the sub-package
    "align": ("finegrain.zeroshot.api", "align"),
    "describe": ("finegrain.zeroshot.api", "describe"),
}
SAMPLE_DATA = str(Path(__file__).parent / "sample_data" / "cub10")  # the bundled demo photos (10 species)

__all__ = ["__version__", "SAMPLE_DATA", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'finegrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
