"""A `Classifier` is one artifact: backbone id + preprocessing + head + class index, saved as JSON + safetensors.

Nothing is pickled: loading a model directory cannot run code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .backbones import TUNED_FAMILY
from .data.images import DEFAULT_MAX_PIXELS
from .data.samples import Sample
from .embed import Embeddings, embed_with_views
from .errors import ConfigError, DataError
from .heads import Head
from .heads.base import softmax
from .provenance import class_list_hash, provenance
from .store import EmbeddingCache
from .tta import classifier_views

if TYPE_CHECKING:
    from .backbones import Backbone, CompositeBackbone
    from .openworld.detector import OODDetector

MODEL_FORMAT = "finegrain-model/1"
CONFIG_FILE = "config.json"
HEAD_FILE = "head.safetensors"
OOD_FILE = "ood.safetensors"
RELIABILITY_FILES = ("reliability.png", "reliability.svg")
UNKNOWN = "unknown"


@dataclass
class Prediction:
    """One input's answer: top-k labels with probabilities, or the reason it could not be read."""

    path: str
    labels: list[str] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    error: str | None = None
    unknown: bool | None = None  # None: no unknown detection asked for
    known_score: float | None = None  # OOD detector score: higher = more like the training classes

    @property
    def label(self) -> str | None:
        if self.unknown:
            return UNKNOWN
        return self.labels[0] if self.labels else None

    @property
    def confidence(self) -> float | None:
        return self.probs[0] if self.probs else None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "confidence": self.confidence,
                "top_k": [{"label": lab, "prob": p} for lab, p in zip(self.labels, self.probs)],
                "status": "error" if self.error else "ok", "error": self.error,
                **({"unknown": self.unknown, "known_score": self.known_score} if self.unknown is not None else {})}


class Classifier:
    """A trained head tied to the backbone and preprocessing that produced its embeddings."""

    def __init__(self, head: Head, backbone_id: str, preprocess: dict, cache_key: str,
                 info: dict[str, Any] | None = None, temperature: float = 1.0,
                 detector: "OODDetector | None" = None) -> None:
        self.head, self.backbone_id, self.preprocess, self.cache_key = head, backbone_id, preprocess, cache_key
        self.info = info or {}
        self.temperature, self.detector = temperature, detector  # from calibration on held-out images

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.head.classes_]

    def provenance(self, **extra: Any) -> dict[str, Any]:
        mode = {"head_mode": self.head.mode} if hasattr(self.head, "with_mode") else {}  # rbi: which inference mode
        if self.views:
            mode["tta"] = self.tta
        return provenance(self.backbone_id, self.preprocess, self.classes, head=self.head.name, **mode, **extra)

    # --- embeddings ------------------------------------------------------------------------------------
    def backbone(self) -> "Backbone | CompositeBackbone":
        """The backbone this model was trained on, refused if its weights or preprocessing changed since."""
        from .backbones import get_backbone

        bb = get_backbone(self.backbone_id)
        if bb.cache_key != self.cache_key:
            raise ConfigError(f"backbone '{self.backbone_id}' here differs from the one this model was trained with",
                              expected=f"weights+preprocessing key {self.cache_key}", found=bb.cache_key,
                              fix="install the same backbone weights package version, or retrain the model")
        return bb

    @property
    def tta(self) -> str:
        """The test-time augmentation the head was fitted with (`fit --tta`; `finegrain.tta`)."""
        return str(self.info.get("tta", "none"))

    @property
    def views(self) -> tuple[str, ...]:
        """The views averaged into every embedding of this model besides the plain crop."""
        return classifier_views(self.tta)

    def embed(self, samples: Sequence[Sample], *, cache: EmbeddingCache | None = None, batch_size: int = 32,
              workers: int = 2, max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = False,
              runtime: str | None = None) -> Embeddings:
        """The samples embedded as the head saw its training images: plain crop, plus the model's views."""
        return embed_with_views(samples, self.backbone(), self.views, cache=cache, batch_size=batch_size,
                                workers=workers, max_pixels=max_pixels, progress=progress, runtime=runtime)

    def check_embeddings(self, emb: Embeddings) -> None:
        if emb.backbone_id != self.backbone_id or emb.cache_key != self.cache_key:
            raise DataError("embeddings come from another backbone than this model's",
                            expected=f"embeddings of '{self.backbone_id}' (key {self.cache_key})",
                            found=f"embeddings of '{emb.backbone_id}' (key {emb.cache_key})",
                            fix=f"re-embed with --backbone {self.backbone_id}, or use a model trained on those embeddings")
        if tuple(emb.views) != self.views:
            raise DataError("embeddings made with other test-time views than this model's",
                            expected=f"each image averaged with views {list(self.views)} (the model's --tta {self.tta})",
                            found=f"views {list(emb.views)}",
                            fix="give the images themselves (stored `finegrain embed` output holds the plain crop "
                                "alone), or use a model fitted with the same --tta")

    def predict_proba_embeddings(self, emb: Embeddings) -> np.ndarray:
        self.check_embeddings(emb)
        if self.temperature == 1.0:
            return self.head.predict_proba(emb.X)
        return self._calibrated(self.head.decision_function(emb.X))

    def _calibrated(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits / self.temperature)

    def unknown_flags(self, emb: Embeddings, unknown: str | float,
                      logits: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(unknown?, score) per embedding; `unknown` is "auto" (the threshold saved at fit) or a number.
        `logits`, when the caller already has the head's, spare computing them again."""
        if self.detector is None:
            raise ConfigError("this model has no OOD detector, so it cannot answer 'unknown'",
                              expected="a model fitted with calibration (the default)", found="none saved",
                              fix="refit it with `finegrain fit` (without --no-calibrate)")
        threshold = None if unknown == "auto" else float(unknown)
        logits = self.head.decision_function(emb.X) if logits is None else logits
        return self.detector.predict_unknown(emb.X, logits, threshold)

    def variant(self, *, head_mode: str | None = None, transductive: bool = False) -> "Classifier":
        """This model scored another way: another inference mode of a head that has several (rbi: single, bank,
        transductive), or prototypes with transductive EM over each call's images. The model itself is unchanged."""
        import copy

        clf = copy.copy(self)
        if head_mode is not None:
            if not hasattr(clf.head, "with_mode"):
                raise ConfigError(f"the {clf.head.name} head has a single inference mode",
                                  expected="a model fitted with --head rbi", found=f"head mode {head_mode}",
                                  fix="drop --head-mode")
            clf.head = clf.head.with_mode(head_mode)
        if transductive:
            from .fewshot.transductive import with_transductive
            clf = with_transductive(clf)
        return clf

    def predict(self, inputs: Sequence[str | Path] | str | Path, *, top_k: int = 5,
                cache: EmbeddingCache | None = None, progress: bool = False, unknown: str | float | None = None,
                head_mode: str | None = None, transductive: bool = False, **embed_kw: Any) -> list[Prediction]:
        """Top-k predictions for image files and folders; unreadable files come back as rows with an error.

        With `unknown` ("auto" or a threshold), images the OOD detector scores below it are answered 'unknown';
        `head_mode` and `transductive` score them as `variant` says.

        >>> import finegrain
        >>> clf = finegrain.fit(finegrain.SAMPLE_DATA, backbone="tiny", head="prototype")
        >>> [p.label for p in clf.predict(finegrain.SAMPLE_DATA + "/test/Hooded_Oriole")][:1]  # doctest: +ELLIPSIS
        ['...']
        >>> len(clf.predict(finegrain.SAMPLE_DATA + "/test", transductive=True, top_k=3)[0].labels)
        3
        """
        from .data.sources import collect_inputs

        if head_mode is not None or transductive:
            return self.variant(head_mode=head_mode, transductive=transductive).predict(
                inputs, top_k=top_k, cache=cache, progress=progress, unknown=unknown, **embed_kw)
        samples = collect_inputs([inputs] if isinstance(inputs, (str, Path)) else list(inputs))
        emb = self.embed(samples, cache=cache, progress=progress, **embed_kw)
        return self.predictions_from_embeddings(samples, emb, top_k=top_k, unknown=unknown)

    def predictions_from_embeddings(self, samples: Sequence[Sample], emb: Embeddings, top_k: int = 5,
                                    unknown: str | float | None = None) -> list[Prediction]:
        if top_k < 1:
            raise ConfigError("--top-k must be at least 1", expected="an integer ≥ 1", found=str(top_k),
                              fix="use e.g. --top-k 5")
        flags, scores = [None] * len(emb.X), [None] * len(emb.X)
        if not len(emb.X):
            probs = np.zeros((0, len(self.classes)))
        elif unknown is None:
            probs = self.predict_proba_embeddings(emb)
        else:  # the head's logits serve both the probabilities and the detector: computed once
            self.check_embeddings(emb)
            logits = self.head.decision_function(emb.X)
            probs = self._calibrated(logits)
            flags, scores = self.unknown_flags(emb, unknown, logits)
        k = min(top_k, len(self.classes))
        by_path = {}
        for s, p, flag, score in zip(emb.samples, probs, flags, scores):
            order = np.argsort(-p, kind="stable")[:k]
            by_path[str(s.path)] = Prediction(str(s.path), [self.classes[i] for i in order],
                                              [round(float(p[i]), 6) for i in order],
                                              unknown=None if flag is None else bool(flag),
                                              known_score=None if score is None else round(float(score), 6))
        for e in emb.errors:
            by_path[e.path] = Prediction(e.path, error=e.reason)
        return [by_path[str(s.path)] for s in samples]

    # --- persistence -------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the model folder atomically; a calibrated model gets its reliability diagram beside it."""
        from safetensors.numpy import save_file

        from .io import replace_dir_atomic, staging_dir, to_json

        target = Path(directory)
        tmp = staging_dir(target)
        values, arrays = self.head.to_state()
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / HEAD_FILE))
        config = {"format": MODEL_FORMAT, "backbone": self.backbone_id, "preprocess": self.preprocess,
                  "cache_key": self.cache_key, "classes": self.classes, "class_list_hash": class_list_hash(self.classes),
                  "head": values, **self.info, "temperature": self.temperature}
        if self.detector is not None:
            ood_values, ood_arrays = self.detector.to_state()
            save_file({k: np.ascontiguousarray(v) for k, v in ood_arrays.items()}, str(tmp / OOD_FILE))
            config["ood"] = ood_values
        if f"{TUNED_FAMILY}:" in self.backbone_id:  # the tuned network travels inside the model folder
            from .finetune.network import save_model_backbones
            config["tuned_backbones"] = save_model_backbones(self.backbone_id, tmp)
        (tmp / CONFIG_FILE).write_text(to_json(config) + "\n", encoding="utf-8")
        self._write_reliability_diagram(tmp)
        replace_dir_atomic(tmp, target)
        return target

    def _write_reliability_diagram(self, folder: Path) -> None:
        """Before/after temperature scaling on the held-out images, from the bins saved at calibration."""
        cal = self.info.get("calibration")
        if cal is None:
            return
        from .openworld.plots import save_reliability_diagram
        save_reliability_diagram(cal, [folder / name for name in RELIABILITY_FILES],
                                 title=f"held-out calibration ({cal['held_out']}, {cal['n']} images)")

    @classmethod
    def load(cls, directory: str | Path) -> "Classifier":
        """Load a model folder, validating every file (`model_files`); when DIRECTORY is missing but a save
        into it was interrupted, its complete `.DIRECTORY.old` backup is loaded instead (with a warning)."""
        from .data.sources import expand_user
        from .io import existing_or_backup
        from .model_files import (build_detector, build_head, check_backbone_spec, load_tensors, read_config,
                                  read_temperature)

        d = existing_or_backup(expand_user(directory))
        cfg_path = d / CONFIG_FILE
        if not cfg_path.is_file():
            raise DataError(f"{d} is not a finegrain model directory", expected=f"{CONFIG_FILE} and {HEAD_FILE} inside",
                            found="no config.json" if d.is_dir() else "no such folder",
                            fix="pass the folder written by `finegrain fit -o MODEL_DIR`")
        config = read_config(cfg_path, MODEL_FORMAT)
        check_backbone_spec(config, cfg_path)
        if config.get("tuned_backbones"):
            from .finetune.network import load_model_backbones
            load_model_backbones(config["tuned_backbones"], d)
        head = build_head(config["head"], load_tensors(d / HEAD_FILE), config["classes"], d / HEAD_FILE)
        detector = build_detector(config["ood"], load_tensors(d / OOD_FILE), head, d / OOD_FILE) \
            if "ood" in config else None
        info = {k: v for k, v in config.items() if k not in {"format", "backbone", "preprocess", "cache_key",
                                                             "classes", "class_list_hash", "head", "temperature", "ood",
                                                             "tuned_backbones"}}
        return cls(head, config["backbone"], config["preprocess"], config["cache_key"], info,
                   temperature=read_temperature(config, cfg_path), detector=detector)
