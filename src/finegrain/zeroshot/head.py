"""`ZeroShotHead`: scores images against class texts, so a zero-shot model is a model directory like any other.

Images are first placed in the text space — as they are (`identity`: CLIP-family backbones), through a
learned projection (`linear`: `finegrain align`), or through the backbone's ImageNet classifier (`conse`) —
then compared with class vectors built from names, prompt templates and descriptions. An aligned head's
space is the signature space: descriptor terms shared by the seen classes, then the text space
(`finegrain.zeroshot.terms`). Everything scoring needs is saved as arrays + JSON; no text encoder runs at
prediction time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..heads.base import Head, l2_normalise
from .alignment import AlignmentParams, centred, fit_projection, image_centre, project
from .conse import conse_embed
from .ensemble import class_vectors, row_contributions, shortlist_scores, top_rows
from .texts import class_key

MAPPINGS = ("identity", "linear", "conse")
ALIGNMENT_STATE = ("projection_", "centre_", "trained_on_", "vocabulary_", "text_weight_", "seen_penalty_")
NAME, DESCRIPTOR, IMAGES = 0, 1, 2


@dataclass
class TextRows:
    """Embedded class texts: one name row per class (its prompt ensemble) plus descriptor rows."""

    texts: list[str]
    row_class: np.ndarray  # (M,) int index into the classes
    row_kind: np.ndarray  # (M,) int: NAME, DESCRIPTOR or IMAGES (label-free adaptation)
    row_emb: np.ndarray  # (M, T) unit vectors
    coef: np.ndarray  # (M,) class vector = Σ coef·row_emb
    coarse: np.ndarray | None = None  # (C, T) single-prompt name vectors for retrieve-then-rescore


@dataclass
class ConseSource:
    """The classifier ConSE reads probabilities from, and the text embeddings of its labels."""

    weight: np.ndarray
    bias: np.ndarray
    scale: float
    label_emb: np.ndarray


class ZeroShotHead(Head):
    """Class scores = temperature · cos(image in text space, class vector); see the module docstring."""

    name = "zeroshot"

    def __init__(self, mapping: str = "identity", temperature: float = 50.0, shortlist: int = 0,
                 conse_top: int = 10, text_encoder: str = "minilm") -> None:
        self.mapping, self.temperature, self.shortlist = mapping, temperature, shortlist
        self.conse_top, self.text_encoder = conse_top, text_encoder

    def get_params(self) -> dict[str, Any]:
        return {"mapping": self.mapping, "temperature": self.temperature, "shortlist": self.shortlist,
                "conse_top": self.conse_top, "text_encoder": self.text_encoder}

    # --- building -------------------------------------------------------------------------------------
    def set_texts(self, classes: Sequence[str], rows: TextRows, n_features: int,
                  conse: ConseSource | None = None) -> "ZeroShotHead":
        """Give the head its classes and their embedded texts (and, for ConSE, its source classifier)."""
        if self.mapping not in MAPPINGS:
            raise ConfigError(f"unknown zero-shot mapping '{self.mapping}'", expected=f"one of {', '.join(MAPPINGS)}",
                              found=self.mapping, fix="use identity (CLIP backbones), linear (finegrain align) or conse")
        if list(classes) != sorted(classes):
            raise ConfigError("zero-shot classes must be given in sorted order", expected="sorted class names",
                              found=", ".join(list(classes)[:3]), fix="pass sorted(classes)")
        self.classes_ = np.asarray(list(classes), dtype=object)
        self.n_features_in_ = int(n_features)
        self.rows_ = rows
        self.class_emb_ = class_vectors(rows.row_emb, rows.row_class, rows.coef, len(self.classes_))
        if self.mapping == "conse":
            if conse is None:
                raise ConfigError("a ConSE head needs its source classifier", expected="a ConseSource",
                                  found="none", fix="build it with finegrain.zeroshot.build_zeroshot")
            self.conse_ = conse
        if self.mapping == "identity" and rows.row_emb.shape[1] != n_features:
            raise DataError("image and text embeddings live in different spaces",
                            expected=f"{n_features}-d text embeddings (same model as the images)",
                            found=f"{rows.row_emb.shape[1]}-d", fix="use the text encoder of the CLIP backbone")
        return self

    # --- the text space -------------------------------------------------------------------------------
    def to_text_space(self, X: np.ndarray) -> np.ndarray:
        """(N, D) image embeddings → (N, T) unit vectors comparable with the class texts."""
        X = self._check_predict_input(X)
        if self.mapping == "linear":
            if not hasattr(self, "projection_"):
                raise ConfigError("this linear zero-shot head has no alignment yet", expected="a fitted projection",
                                  found="none", fix="train it with `finegrain align` (or head.fit on seen classes)")
            return project(X, self.projection_, self.centre_)
        if self.mapping == "conse":
            c = self.conse_
            return conse_embed(X, c.weight, c.bias, c.scale, c.label_emb, self.conse_top)
        return l2_normalise(X).astype(np.float32)

    def text_part(self, U: np.ndarray) -> np.ndarray:
        """The sentence-embedding half of signature-space vectors (all of U when there are no terms), unit length:
        what plain prompt embeddings compare with."""
        n_terms = len(getattr(self, "vocabulary_", ()))
        return l2_normalise(U[:, n_terms:]) if n_terms else U

    def similarities(self, X: np.ndarray) -> np.ndarray:
        """(N, C) cosine of each image with each class vector (after retrieve-then-rescore when shortlisting),
        minus the seen-class penalty for the classes the alignment was trained on (calibrated stacking: an
        aligned model otherwise answers with a seen class for most images of unseen ones)."""
        U = self.to_text_space(X)
        S = U @ self.class_emb_.T
        if self.shortlist and self.rows_.coarse is not None and self.shortlist < len(self.classes_):
            S = shortlist_scores(self.text_part(U) @ self.rows_.coarse.T, S, self.shortlist)
        penalty = float(getattr(self, "seen_penalty_", 0.0))
        if penalty:
            S = S - penalty * self.seen_mask().astype(S.dtype)
        return S

    def seen_mask(self) -> np.ndarray:
        """(C,) True for the classes the alignment learnt from (names matched as class files are)."""
        seen = {class_key(c) for c in getattr(self, "trained_on_", [])}
        return np.asarray([class_key(str(c)) in seen for c in self.classes_], dtype=bool)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return float(self.temperature) * self.similarities(X)

    # --- fitting: the bag-level alignment ---------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None, params: AlignmentParams | None = None) -> "ZeroShotHead":
        """Learn what labels can teach: the projection (mapping 'linear') from images of the classes in y,
        each paired with its own class vector; only those classes take part, so classes absent from y never
        reach training. Then the temperature, on (X_val, y_val) when given."""
        from ..heads.prototype import fit_temperature

        if not hasattr(self, "class_emb_"):
            raise ConfigError("a zero-shot head needs its class texts before fitting", expected="set_texts(...) first",
                              found="no class texts", fix="build it with finegrain.zeroshot.build_zeroshot or align")
        X = np.asarray(X, dtype=np.float32)
        yi = self.encode_labels(np.asarray(y, dtype=object))
        if self.mapping == "linear":
            seen = np.unique(yi)
            self.centre_ = image_centre(X)
            self.projection_ = fit_projection(centred(X, self.centre_), np.searchsorted(seen, yi),
                                              self.class_emb_[seen], params or AlignmentParams())
            self.trained_on_ = [str(self.classes_[i]) for i in seen]
        if X_val is not None and len(X_val):
            X, yi = np.asarray(X_val, dtype=np.float32), self.encode_labels(np.asarray(y_val, dtype=object))
        seen = np.unique(yi)
        S = self.to_text_space(X) @ self.class_emb_[seen].T
        self.temperature = fit_temperature(S, np.searchsorted(seen, yi))
        return self

    def restrict(self, classes: Sequence[str]) -> "ZeroShotHead":
        """The same head over a subset of its classes (e.g. only the unseen ones)."""
        classes = sorted(classes)
        idx = self.encode_labels(np.asarray(classes, dtype=object))
        keep = np.isin(self.rows_.row_class, idx)
        remap = {int(old): new for new, old in enumerate(idx)}
        r = self.rows_
        rows = TextRows([t for t, k in zip(r.texts, keep) if k],
                        np.asarray([remap[int(c)] for c in r.row_class[keep]], dtype=np.int64),
                        r.row_kind[keep], r.row_emb[keep], r.coef[keep],
                        None if r.coarse is None else r.coarse[idx])
        head = ZeroShotHead(**self.get_params())
        head.set_texts(classes, rows, self.n_features_in_, getattr(self, "conse_", None))
        return head.adopt_alignment(self)

    def adopt_alignment(self, other: "ZeroShotHead") -> "ZeroShotHead":
        """Take over another head's learned alignment (projection, image centre, seen classes, terms)."""
        for attr in ALIGNMENT_STATE:
            if hasattr(other, attr):
                setattr(self, attr, getattr(other, attr))
        return self

    # --- explanation ------------------------------------------------------------------------------------
    def explain(self, X: np.ndarray, k: int = 3) -> list[dict[str, Any]]:
        """Per image: the predicted class and the k descriptors that added most to its score, measured
        against the average descriptor (what sets this class apart, not what all classes share)."""
        U = self.to_text_space(X)
        S = self.similarities(X)
        pred = np.argmax(S, axis=1)
        r = self.rows_
        desc = r.row_kind == DESCRIPTOR
        contrib = row_contributions(U, r.row_emb, r.coef, r.row_emb[desc].mean(axis=0) if desc.any() else None)
        best = top_rows(contrib, r.row_class, pred, k, rows_allowed=r.row_kind == DESCRIPTOR)
        return [{"label": str(self.classes_[p]), "score": float(S[i, p]),
                 "evidence": [{"text": r.texts[j], "contribution": round(float(contrib[i, j]), 4)} for j in best[i]]}
                for i, p in enumerate(pred)]

    # --- persistence ------------------------------------------------------------------------------------
    def _state(self):
        r = self.rows_
        arrays = {"row_emb": r.row_emb, "row_class": r.row_class.astype(np.int64), "row_coef": r.coef,
                  "row_kind": r.row_kind.astype(np.int64)}
        if r.coarse is not None:
            arrays["coarse"] = r.coarse
        values: dict[str, Any] = {"texts": list(r.texts)}
        if hasattr(self, "projection_"):
            arrays.update(projection=self.projection_, centre=self.centre_)
            values["trained_on"] = list(getattr(self, "trained_on_", []))
            values["vocabulary"] = list(getattr(self, "vocabulary_", []))
            values["text_weight"] = float(getattr(self, "text_weight_", 1.0))
            values["seen_penalty"] = float(getattr(self, "seen_penalty_", 0.0))
        if self.mapping == "conse":
            arrays.update(conse_weight=self.conse_.weight, conse_bias=self.conse_.bias,
                          conse_label_emb=self.conse_.label_emb)
            values["conse_scale"] = self.conse_.scale
        return values, arrays

    def _load_state(self, values, arrays):
        rows = TextRows(list(values["texts"]), arrays["row_class"].astype(np.int64),
                        arrays["row_kind"].astype(np.int64), arrays["row_emb"], arrays["row_coef"], arrays.get("coarse"))
        conse = None
        if self.mapping == "conse":
            conse = ConseSource(arrays["conse_weight"], arrays["conse_bias"], float(values["conse_scale"]),
                                arrays["conse_label_emb"])
        classes, n = list(self.classes_), self.n_features_in_
        self.set_texts(classes, rows, n, conse)
        if "projection" in arrays:
            self.projection_, self.centre_ = arrays["projection"], arrays["centre"]
            self.trained_on_ = list(values.get("trained_on", []))
            self.vocabulary_ = list(values.get("vocabulary", []))
            self.text_weight_ = float(values.get("text_weight", 1.0))
            self.seen_penalty_ = float(values.get("seen_penalty", 0.0))
