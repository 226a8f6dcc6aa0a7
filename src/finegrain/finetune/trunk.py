"""The frozen trunk (the stages below the trainable ones), run the fastest correct way available.

On a 2-core CPU eager PyTorch runs the EfficientNet-Lite0 trunk at ~17 images/s in float32; ONNX Runtime runs
it several times faster. The trunk is exported once (uint8 images in, activations out), checked against
PyTorch on seeded images (relative error ≤ 1e-3), and kept beside the embedding cache's exports; when
anything fails, PyTorch computes it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backbones.onnx_runtime import OPSET, Uint8Session, check_images, export_uint8_module, onnxruntime_available
from ..backbones.torch_backbone import TorchBackbone, configure_torch_threads
from ..cachedir import mark_used
from .network import StagedFeatures, run_stages
from .store import Runner

log = logging.getLogger("finegrain")
MAX_RELATIVE_ERROR = 1e-3


class _Trunk(nn.Module):
    """uint8 NHWC images → the activations entering stage `split`."""

    def __init__(self, backbone: TorchBackbone, staged: StagedFeatures, split: int) -> None:
        super().__init__()
        self.backbone, self.stages = backbone, staged.stages[:split]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return run_stages(self.stages, self.backbone.normalise(images))


def _torch_runner(trunk: _Trunk) -> Runner:
    def run(batch: np.ndarray) -> np.ndarray:
        configure_torch_threads()
        with torch.inference_mode():
            return trunk(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
    return run


def relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.linalg.norm(reference - other) / max(np.linalg.norm(reference), 1e-12))


def trunk_runner(backbone: TorchBackbone, staged: StagedFeatures, split: int, onnx_dir: Path,
                 runtime: str = "auto") -> Runner:
    """A function computing trunk activations: ONNX Runtime when it reproduces PyTorch, else PyTorch."""
    trunk = _Trunk(backbone, staged, split).eval()
    reference = _torch_runner(trunk)
    if runtime == "torch" or not onnxruntime_available():
        return reference
    import onnxruntime as ort

    path = Path(onnx_dir) / (f"trunk-{backbone.id}-{backbone.cache_key}-split{split}-opset{OPSET}-"
                             f"ort{ort.__version__}-torch{torch.__version__}.onnx")
    try:
        if path.is_file():
            mark_used(path)  # `finegrain cache --prune DAYS` keeps what runs use
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                export_uint8_module(trunk, backbone.preprocess.size, tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            about = {"backbone": f"{backbone.id} frozen trunk (first {split} stages)", "cache_key": backbone.cache_key}
            path.with_suffix(".json").write_text(json.dumps(about) + "\n")
        runner = Uint8Session(path)
        images = check_images(backbone.preprocess.size)
        error = relative_error(reference(images), runner(images))
        if error > MAX_RELATIVE_ERROR:
            raise ValueError(f"ONNX trunk differs from PyTorch (relative error {error:.2e})")
        return runner
    except Exception as exc:  # noqa: BLE001 - 'auto' means the fastest *correct* runtime, else the reference
        if runtime == "onnx":
            raise
        log.warning("ONNX Runtime unavailable for the frozen trunk (%s); computing it with PyTorch", exc)
        return reference
