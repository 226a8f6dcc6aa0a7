"""Reading a model folder defensively.

A model folder may be half-copied, hand-edited, from another version or plainly hostile. Every way its
config or tensor files can be missing, damaged or inconsistent becomes a `DataError` that names the file and
says what was expected, so `finegrain` exits 1 with a message instead of a traceback or, worse, a model that
loads and answers wrongly. Tensors are read with safetensors only: nothing is ever unpickled.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError, FinegrainError

if TYPE_CHECKING:
    from .heads import Head
    from .openworld.detector import OODDetector

REFIT = "refit the model (`finegrain fit DATA -o MODEL`) or restore the folder from a copy"
REQUIRED_KEYS = ("backbone", "preprocess", "cache_key", "classes", "head")
_PICKLE_START = (b"\x80", b"PK\x03\x04")  # pickle protocol ≥ 2, and torch's zip-of-pickles


def model_error(path: Path, what: str, expected: str, found: str, fix: str = REFIT) -> DataError:
    return DataError(f"model file {path} {what}", expected=expected, found=found, fix=fix)


def read_config(path: Path, model_format: str) -> dict[str, Any]:
    """The model's config.json as a dict with the keys a model needs, in the format this version reads."""
    config = _parse_json_object(path, _read_text(path))
    if config.get("format") != model_format:
        raise DataError(f"{path.parent} holds a model in an unknown format", expected=model_format,
                        found=str(config.get("format")), fix="retrain the model with this finegrain version")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise model_error(path, "lacks required keys", f"keys {', '.join(REQUIRED_KEYS)}",
                          f"no {', '.join(missing)}")
    return config


TRUST_ENV = "FINEGRAIN_TRUST_BACKBONE"
_PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def check_backbone_spec(config: dict[str, Any], path: Path) -> None:
    """Before anything is loaded: every member of the model's backbone id is a known family; a fine-tuned one has
    its weights file inside the folder; one that would load weights from elsewhere (`hf_clip:DIR`) may only read
    safetensors there, and one whose loader may unpickle (`open_clip:`) needs FINEGRAIN_TRUST_BACKBONE=1."""
    import os

    from .backbones import BACKBONES, TUNED_FAMILY, member_ids, parse_backbone_id

    backbone = config["backbone"]
    if not isinstance(backbone, str) or not backbone.strip():
        raise model_error(path, "has no usable backbone id", "a string such as 'efficientnet_lite0'", repr(backbone))
    for member in member_ids(backbone):
        family, arg = parse_backbone_id(member)
        if family not in BACKBONES.names():
            raise model_error(path, f"names an unknown backbone '{member}'", f"one of {', '.join(BACKBONES.names())}",
                              member)
        if family == TUNED_FAMILY and member not in (config.get("tuned_backbones") or {}):
            raise model_error(path, f"names the fine-tuned backbone '{member}' without its weights file",
                              "a 'tuned_backbones' entry naming a file inside the folder", "none")
        if family == "hf_clip" and arg and Path(arg).expanduser().is_dir():
            pickled = [p.name for pattern in _PICKLED_WEIGHTS for p in Path(arg).expanduser().glob(pattern)]
            if pickled and not any(Path(arg).expanduser().glob("*.safetensors")):
                raise model_error(path, f"uses backbone '{member}', whose weights are pickled ({pickled[0]})",
                                  "safetensors weights (nothing is ever unpickled)", ", ".join(pickled[:3]),
                                  "convert the CLIP model folder to safetensors (save_pretrained does by default)")
        if family == "open_clip" and os.environ.get(TRUST_ENV) != "1":
            raise model_error(path, f"uses backbone '{member}', loaded by open_clip's own loader from outside the "
                              "model folder", "a backbone loaded from safetensors", member,
                              f"load it only if you trust its source: set {TRUST_ENV}=1")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except PermissionError as exc:
        raise model_error(path, "cannot be read", "a readable file", "permission denied",
                          fix=f"give your user read access (chmod u+r {path})") from exc
    except UnicodeDecodeError as exc:
        raise model_error(path, "is not text", "UTF-8 JSON", f"undecodable byte at offset {exc.start}") from exc
    except OSError as exc:
        raise model_error(path, "cannot be read", "a readable file", exc.strerror or str(exc)) from exc


def _parse_json_object(path: Path, text: str) -> dict[str, Any]:
    if not text.strip():
        raise model_error(path, "is empty", "a JSON object", "0 bytes of JSON")
    try:
        config = json.loads(text)
    except ValueError as exc:
        found = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise model_error(path, "is not valid JSON (truncated or edited?)", "a JSON object", found) from exc
    if not isinstance(config, dict):
        raise model_error(path, "is not a JSON object", "{...} with the model's settings",
                          f"a JSON {type(config).__name__}")
    return config


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    """Arrays from a safetensors file; anything else (a pickle, a truncated copy) is refused, never loaded."""
    from safetensors.numpy import load_file

    if not path.is_file():
        raise model_error(path, "is missing", f"{path.name} beside config.json",
                          "nothing at that path" if not path.exists() else "not a regular file")
    try:
        return load_file(str(path))
    except PermissionError as exc:
        raise model_error(path, "cannot be read", "a readable file", "permission denied",
                          fix=f"give your user read access (chmod u+r {path})") from exc
    except Exception as exc:  # safetensors raises its own error type, OSError, ValueError... on bad files
        raise model_error(path, "is not a valid safetensors file", "safetensors tensors", _describe_bad(path, exc)) \
            from exc


def _describe_bad(path: Path, exc: Exception) -> str:
    with open(path, "rb") as fh:
        start = fh.read(4)
    if start.startswith(_PICKLE_START):
        return "a Python pickle (finegrain never unpickles: it could run code)"
    return f"{type(exc).__name__}: {exc}"


def build_head(values: Any, arrays: dict[str, np.ndarray], classes: Any, path: Path) -> "Head":
    """The saved head, checked against the class list and probed once, so a mismatch fails here, not later."""
    from .heads import HEADS, head_from_state

    name = values.get("head") if isinstance(values, dict) else None
    if name not in HEADS:
        raise model_error(path, "names an unknown head", f"one of {', '.join(HEADS.names())}", repr(name))
    _check_params(values.get("params"), name, path)
    try:
        head = head_from_state(values, arrays)
    except FinegrainError:
        raise
    except Exception as exc:  # a missing array or key, a wrong type: the saved state does not fit the head
        raise model_error(path, f"does not hold a valid '{name}' head", "the state `finegrain fit` saves",
                          f"{type(exc).__name__}: {exc}") from exc
    _check_classes(head, classes, path)
    return head


def _check_params(params: Any, name: str, path: Path) -> None:
    from .heads import head_parameters

    if not isinstance(params, dict):
        raise model_error(path, "has no head parameters", "a 'params' object", repr(params))
    unknown = sorted(set(params) - set(head_parameters(name)))
    if unknown:
        raise model_error(path, f"gives the '{name}' head unknown parameters",
                          f"only: {', '.join(head_parameters(name))}", ", ".join(unknown))


def _check_classes(head: "Head", classes: Any, path: Path) -> None:
    """The class list must match the head's, and one probe embedding must score exactly that many classes."""
    if not isinstance(classes, list) or [str(c) for c in head.classes_] != [str(c) for c in classes]:
        raise model_error(path, "disagrees with its head about the classes", "the same class list in both",
                          f"{_count(classes)} listed, {len(head.classes_)} in the head")
    try:
        scores = np.asarray(head.decision_function(_probe(head.n_features_in_)))
    except Exception as exc:  # weights of the wrong shape surface as numpy/torch errors
        raise model_error(path, "holds weights that cannot score an embedding", f"weights for {len(classes)} classes",
                          f"{type(exc).__name__}: {exc}") from exc
    if scores.shape != (1, len(classes)):
        raise model_error(path, "holds weights for another number of classes",
                          f"scores for {len(classes)} classes", f"{scores.shape[-1]} scores per image")


def _count(classes: Any) -> str:
    return str(len(classes)) if isinstance(classes, list) else f"not a list ({type(classes).__name__})"


def _probe(n_features: int) -> np.ndarray:
    return np.full((1, int(n_features)), 1.0 / math.sqrt(max(int(n_features), 1)), dtype=np.float32)


def build_detector(values: Any, arrays: dict[str, np.ndarray], head: "Head", path: Path) -> "OODDetector":
    """The saved OOD detector, probed once with the head's logits."""
    from .openworld.detector import OODDetector

    try:
        detector = OODDetector.from_state(values, arrays)
        probe = _probe(head.n_features_in_)
        scores = np.asarray(detector.score_samples(probe, head.decision_function(probe)))
    except FinegrainError as exc:
        raise model_error(path, "holds an unusable unknown detector", "the state `finegrain fit` saves",
                          exc.what) from exc
    except Exception as exc:
        raise model_error(path, "holds an unusable unknown detector", "the state `finegrain fit` saves",
                          f"{type(exc).__name__}: {exc}") from exc
    if scores.shape != (1,):
        raise model_error(path, "holds an unknown detector of the wrong shape", "one score per image",
                          f"scores of shape {scores.shape}")
    return detector


def read_temperature(config: dict[str, Any], path: Path) -> float:
    """Softmax temperature: a finite number > 0 (0 or NaN would turn every probability into NaN)."""
    value = config.get("temperature", 1.0)
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if isinstance(value, bool) or not math.isfinite(t) or t <= 0:
        raise model_error(path, "has an invalid temperature", "a finite number > 0", repr(value))
    return t
