"""`finegrain export`: a model as one ONNX graph — backbone, head and temperature — with its class names and
preprocessing in the file's metadata, so a phone, a browser or a C++ service runs it with plain ONNX Runtime.

Input `images`: uint8 (N, size, size, 3), already resized and centre-cropped as the metadata's `preprocess`
says (that resize is PIL's, which no ONNX Resize reproduces exactly). Output `probabilities`: (N, classes)
float32, softmax(head logits / temperature) — what `finegrain predict` reports (a model fitted with --tta
averages each image with its turns and mirrors inside the graph, as predict does). Heads that are not a fixed
function of one embedding (kNN, RBI's bank and batch modes, zero-shot) have no ONNX form and are refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..backbones import get_backbone
from ..backbones.onnx_runtime import OPSET, check_images, export_uint8_module
from ..errors import ConfigError
from ..pipeline import Classifier
from ..tta import turned_crops
from ..views import average_views

EXPORTABLE_HEADS = ("logistic", "mixoe", "prototype")


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


class _Linear(nn.Module):
    """logits = standardise(transform(x)) @ Wᵀ + b, with transform ∈ {identity, power normalisation}."""

    def __init__(self, coef, intercept, mean, scale, power: bool) -> None:
        super().__init__()
        for name, value in (("coef", coef), ("intercept", intercept), ("mean", mean), ("scale", scale)):
            self.register_buffer(name, _t(value))
        self.power = power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.power:
            x = torch.sign(x) * torch.sqrt(torch.abs(x))
            x = x / torch.clamp(torch.linalg.vector_norm(x, dim=1, keepdim=True), min=1e-12)
        return ((x - self.mean) / self.scale) @ self.coef.T + self.intercept


class _Blocks(nn.Module):
    """The mean of per-member linear models, each on its slice of the joined embedding."""

    def __init__(self, members: list[nn.Module], widths: list[int]) -> None:
        super().__init__()
        self.members, self.widths = nn.ModuleList(members), widths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.widths, dim=1)
        return torch.stack([m(p) for m, p in zip(self.members, parts)]).mean(dim=0)


class _Prototypes(nn.Module):
    def __init__(self, prototypes, centre, temperature: float) -> None:
        super().__init__()
        self.register_buffer("prototypes", _t(prototypes))
        self.register_buffer("centre", _t(centre))
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x - self.centre
        z = z / torch.clamp(torch.linalg.vector_norm(z, dim=1, keepdim=True), min=1e-12)
        return self.temperature * (z @ self.prototypes.T)


def head_module(head) -> nn.Module:
    """The head's decision function as a torch module on unit embeddings (refusing heads that have none)."""
    if head.name == "logistic" and head.blocks:
        return _Blocks([head_module(m) for m in head.members_], list(head.blocks))
    if head.name == "logistic":
        return _Linear(head.coef_, head.intercept_, head.mean_, head.scale_, head.power)
    if head.name == "mixoe":
        return _Linear(head.coef_, head.intercept_, head.mean_, head.scale_, power=False)
    if head.name == "prototype":
        return _Prototypes(head.prototypes_, head.centre_, head.temperature_)
    raise ConfigError(f"the {head.name} head has no ONNX form", expected=f"a model with head {', '.join(EXPORTABLE_HEADS)}",
                      found=head.name, fix="refit with `finegrain fit --head logistic` (or finetune), then export")


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / torch.clamp(torch.linalg.vector_norm(f, dim=1, keepdim=True), min=1e-12)


class _Probabilities(nn.Module):
    """uint8 images → backbone features → unit embedding (averaged over the model's --tta views: turns and
    mirrors of the images, made inside the graph) → head logits / T → softmax."""

    def __init__(self, backbone, head: nn.Module, temperature: float, views: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.backbone, self.features, self.head, self.temperature = backbone, backbone.features, head, temperature
        self.views = views

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return _unit(self.features(self.backbone.normalise(images)).mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.embed(images)
        if self.views:
            f = _unit(f + sum(self.embed(turned_crops(images, v)) for v in self.views))
        return torch.softmax(self.head(f) / self.temperature, dim=1)


def _torch_backbone(clf: Classifier):
    bb = get_backbone(clf.backbone_id)
    if not (hasattr(bb, "features") and hasattr(bb, "normalise")):
        raise ConfigError(f"backbone '{clf.backbone_id}' cannot be exported as one graph",
                          expected="a single PyTorch backbone (EfficientNet-Lite, tiny, or a fine-tuned one)",
                          found=type(bb).__name__, fix="export a model fitted on one backbone")
    return bb


def metadata(clf: Classifier, opset: int, int8: bool) -> dict[str, str]:
    return {"finegrain_version": __version__, "classes": json.dumps(clf.classes), "backbone": clf.backbone_id,
            "preprocess": json.dumps(clf.preprocess), "temperature": repr(float(clf.temperature)),
            "head": clf.head.name, "tta": clf.tta, "opset": str(opset), "int8": str(int8).lower(),
            "input": _input_description(clf.preprocess),
            "output": "probabilities: float32 (N, len(classes)), calibrated"}


def _input_description(preprocess: dict) -> str:
    """How a caller must prepare images for the exported graph, as the model's own preprocessing does it."""
    if preprocess.get("fit") == "pad":
        return ("images: uint8 (N, size, size, 3) RGB, resized (longer side to size, interpolation as in preprocess) "
                "then centred on a size x size canvas of the median colour of the image's border")
    return ("images: uint8 (N, size, size, 3) RGB, resized (shorter side to size/crop_pct, interpolation as in "
            "preprocess) then centre-cropped to size x size")


def _write_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _quantise(src: Path, dst: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice per tensor on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def onnx_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.uint8)})[0]


def reference_probabilities(clf: Classifier, images: np.ndarray) -> np.ndarray:
    """What `predict` computes for preprocessed uint8 images (PyTorch backbone, the head in numpy)."""
    bb = _torch_backbone(clf)
    X = bb.embed(images)
    if clf.views:
        X = average_views([X, *(bb.embed(turned_crops(images, v)) for v in clf.views)])
    return clf._calibrated(clf.head.decision_function(X))


def export_onnx(clf: Classifier, path: str | Path, *, opset: int = OPSET, int8: bool = False) -> dict[str, Any]:
    """Write `clf` as one ONNX graph at `path` (atomically), checked against finegrain's own probabilities on
    seeded check images: max |difference| ≤ 1e-4 in float32 (reported, not enforced, for int8)."""
    bb = _torch_backbone(clf)
    module = _Probabilities(bb, head_module(clf.head), float(clf.temperature), views=clf.views).eval()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp_q = target.with_name(f".{target.name}.{os.getpid()}.int8.tmp")
    try:
        with torch.inference_mode():
            export_uint8_module(module, bb.preprocess.size, tmp, opset=opset, output_name="probabilities")
        if int8:
            _quantise(tmp, tmp_q)
            os.replace(tmp_q, tmp)
        _write_metadata(tmp, metadata(clf, opset, int8))
        images = check_images(bb.preprocess.size)
        diff = float(np.abs(onnx_probabilities(tmp, images) - reference_probabilities(clf, images)).max())
        if not int8 and diff > 1e-4:
            raise ConfigError("the ONNX export disagrees with finegrain's own probabilities",
                              expected="max |difference| ≤ 1e-4", found=f"{diff:.2e}",
                              fix="try another --opset, or report this model")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_q.unlink(missing_ok=True)
    return {"path": str(target), "bytes": target.stat().st_size, "max_abs_diff_vs_finegrain": diff,
            "opset": opset, "int8": int8, "classes": len(clf.classes), "input_size": bb.preprocess.size}


def onnx_top1(path: str | Path, clf: Classifier, data: str | Path, split: str | None = "test",
              batch_size: int = 32) -> dict[str, Any]:
    """Top-1 of an exported file on DATA's labelled images of `split` (all when the data has no splits), decoded
    and preprocessed as finegrain does: measures what int8 quantisation costs."""
    from ..backbones.base import Preprocess
    from ..data.boxes import load_sample_rgb
    from ..data.sources import load_data
    from ..errors import FinegrainError

    ds = load_data(data)
    samples = [s for s in (ds.select([split]) if ds.has_splits and split else ds.samples)
               if s.label in set(clf.classes)]
    pre = Preprocess.from_dict(clf.preprocess)
    correct = n = 0
    for i in range(0, len(samples), batch_size):
        batch, labels = [], []
        for s in samples[i:i + batch_size]:
            try:
                batch.append(pre.apply(load_sample_rgb(s)))
                labels.append(s.label)
            except FinegrainError:
                continue
        if batch:
            probs = onnx_probabilities(Path(path), np.stack(batch))
            correct += sum(clf.classes[j] == lab for j, lab in zip(probs.argmax(1), labels))
            n += len(batch)
    return {"n": n, "top1": correct / n if n else float("nan")}
