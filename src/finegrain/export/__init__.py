"""One ONNX file per model: uint8 image → calibrated class probabilities, runnable without finegrain."""
from .onnx_model import export_onnx, head_module

__all__ = ["export_onnx", "head_module"]
