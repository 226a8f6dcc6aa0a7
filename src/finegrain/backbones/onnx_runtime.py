"""ONNX Runtime execution of a torch backbone: the same network, several times faster than eager PyTorch on a CPU.

The torch backbone is exported once (uint8 NHWC images in, pooled features out, so normalisation runs inside
the graph and batches stay uint8 until the model), checked against PyTorch on the spot, and cached on disk
keyed by the backbone's cache key and the exporter/runtime versions. Because the check demands cosine ≥ 0.999
per image, an `OnnxBackbone` shares its torch backbone's cache key: embeddings from either are interchangeable.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..cachedir import mark_used
from ..progress import note
from .base import Backbone

log = logging.getLogger("finegrain")

OPSET = 17
MIN_COSINE = 0.999  # per image, ONNX vs PyTorch, checked at export time
RUNTIMES = ("auto", "onnx", "torch")  # auto: onnx when onnxruntime is installed and the export checks out
# Images per session.run: small chunks keep activations in cache; measured 1.3-1.6x faster than 32 at once
# on 2 cores, whatever batch size the caller decodes in.
MICRO_BATCH = 4


_default_runtime = os.environ.get("FINEGRAIN_RUNTIME", "auto")


def set_default_runtime(runtime: str) -> None:
    """The runtime every embedding call in this process uses unless told otherwise (`--runtime` sets it once
    for a whole command, whichever library calls that command makes)."""
    global _default_runtime
    _check_runtime(runtime)
    _default_runtime = runtime


def default_runtime() -> str:
    return _default_runtime


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime '{runtime}'", expected=" or ".join(RUNTIMES), found=repr(runtime),
                          fix="pass --runtime onnx (fast) or torch (reference), or fix FINEGRAIN_RUNTIME")


def onnxruntime_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("onnxruntime") is not None


def intra_op_threads() -> int:
    """The thread budget (`--threads`, FINEGRAIN_THREADS, else one per core): more only oversubscribes."""
    from ..threads import thread_budget
    return thread_budget()


class Uint8Session:
    """An ONNX Runtime session over uint8 NHWC images, run in micro-batches within the thread budget."""

    def __init__(self, model_path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or intra_op_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads steal the cores the decode threads need: measured 1.8x slower when cores are busy.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        return np.concatenate([self._session.run(None, {self._input: batch[i:i + MICRO_BATCH]})[0]
                               for i in range(0, len(batch), MICRO_BATCH)])


class OnnxBackbone(Backbone):
    """Runs an exported torch backbone in ONNX Runtime; id, preprocessing, weights and cache key are the source's."""

    def __init__(self, source: Backbone, model_path: Path, threads: int | None = None) -> None:
        self.source = source
        self.id, self.embed_dim, self.preprocess = source.id, source.embed_dim, source.preprocess
        self.model_path = Path(model_path)
        self._session = Uint8Session(self.model_path, threads)

    def weights_fingerprint(self) -> str:
        return self.source.weights_fingerprint()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self._session(batch)


def model_file(source: Backbone, directory: Path) -> Path:
    """Where the export of `source` lives: a new file whenever weights, preprocessing, opset or runtime change."""
    import onnxruntime as ort
    import torch
    return directory / f"{source.id}-{source.cache_key}-opset{OPSET}-ort{ort.__version__}-torch{torch.__version__}.onnx"


def onnx_backbone(source: Backbone, directory: Path, threads: int | None = None) -> OnnxBackbone:
    """The ONNX Runtime version of the torch backbone `source`, exporting and checking it on first use."""
    if not onnxruntime_available():
        raise ConfigError("--runtime onnx needs the package 'onnxruntime', which is not installed",
                          expected="'onnxruntime' importable", found="ImportError",
                          fix="pip install onnxruntime onnx (finegrain depends on them), or use --runtime torch")
    path = model_file(source, Path(directory))
    if path.is_file():
        mark_used(path)  # `finegrain cache --prune DAYS` keeps what runs use
    else:
        export_checked(source, path)
    return OnnxBackbone(source, path, threads)


def export_checked(source: Backbone, path: Path) -> Path:
    """Export `source` to `path` (atomically) after checking ONNX Runtime reproduces its embeddings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _export(source, tmp)
        cosine = _agreement(source, tmp)
        if cosine < MIN_COSINE:
            raise ConfigError(f"the ONNX export of backbone '{source.id}' disagrees with PyTorch",
                              expected=f"cosine similarity ≥ {MIN_COSINE} on every check image",
                              found=f"minimum cosine {cosine:.6f}", fix="use --runtime torch for this backbone")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"backbone": source.id, "cache_key": source.cache_key,
                                                     "opset": OPSET, "min_cosine_vs_torch": cosine}) + "\n")
    note(f"exported backbone {source.id} to ONNX ({path}), min cosine vs PyTorch {cosine:.6f}")
    return path


def _uint8_module(source: Backbone):
    """The exported module: uint8 (N, H, W, 3) → normalised NCHW float → spatially pooled (N, C) features."""
    from torch import nn

    class UInt8Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = source.features

        def forward(self, images):
            return self.features(source.normalise(images)).mean(dim=(2, 3))

    return UInt8Features().eval()


def _exportable(source: Backbone) -> bool:
    """A torch backbone (duck-typed, so checking does not import torch): a feature module and its normalisation."""
    return hasattr(source, "features") and hasattr(source, "normalise")


def _export(source: Backbone, path: Path) -> None:
    if not _exportable(source):
        raise ConfigError(f"backbone '{source.id}' cannot run in ONNX Runtime", expected="a PyTorch backbone",
                          found=type(source).__name__, fix="use --runtime torch")
    export_uint8_module(_uint8_module(source), source.preprocess.size, path)


def export_uint8_module(module, size: int, path: Path, opset: int = OPSET, output_name: str = "features") -> None:
    """Export `module` (uint8 (N, size, size, 3) images → one output, batch size free) to ONNX at `path`."""
    import torch

    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the agreement check is what counts
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=[output_name],
                          dynamic_axes={"images": {0: "n"}, output_name: {0: "n"}}, opset_version=opset, dynamo=False)


def check_images(size: int) -> np.ndarray:
    """Seeded check batch: two noise images and two smooth gradients, so texture and flat regions both count."""
    noise = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, size)
    rows, cols = np.meshgrid(ramp, ramp, indexing="ij")
    smooth = np.stack([np.stack([rows, cols, np.full_like(rows, level)], axis=-1) for level in (40, 200)])
    return np.concatenate([noise, smooth.astype(np.uint8)])


def _agreement(source: Backbone, path: Path) -> float:
    """Smallest per-image cosine between PyTorch's and ONNX Runtime's embeddings of the check batch."""
    batch = check_images(source.preprocess.size)
    ref = source.embed(batch)
    got = OnnxBackbone(source, path, threads=1).embed(batch)
    return float(np.min(np.sum(ref * got, axis=1)))


def resolve_runtime(source: Backbone, runtime: str, directory: Path) -> Backbone:
    """The backbone that will run: ONNX for 'onnx' (or 'auto' when possible), the torch one for 'torch'."""
    _check_runtime(runtime)
    if runtime == "torch" or isinstance(source, OnnxBackbone):
        return source
    if runtime == "auto" and (not onnxruntime_available() or not _exportable(source)):
        return source
    key = source.cache_key  # one session per process, whichever cache folder first held the export
    if key in _SESSIONS:
        return _SESSIONS[key]
    if runtime == "auto" and key in _FAILED:
        return source
    try:
        _SESSIONS[key] = onnx_backbone(source, directory)
    except Exception as exc:  # noqa: BLE001 - 'auto' means: fastest *correct* runtime, else the reference
        if runtime == "onnx":
            raise
        log.warning("ONNX Runtime unavailable for %s (%s); embedding with PyTorch", source.id, exc)
        _FAILED[key] = str(exc)
        return source
    return _SESSIONS[key]


_SESSIONS: dict[str, OnnxBackbone] = {}
_FAILED: dict[str, str] = {}  # 'auto' tries each backbone once per process
