"""`explain_images`: image files → Grad-CAM / Grad-CAM++ maps, a contrastive map and nearest training images.

Maps are laid over the centre crop the model actually saw (the backbone's preprocessing), as float arrays in
[0, 1]. One unreadable image becomes an Explanation with `error` set; the others are still explained.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.boxes import load_sample_rgb
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.samples import Sample
from ..embed import Embeddings
from ..errors import ConfigError, FinegrainError
from ..tta import turned_crops
from ..views import average_views
from .cam import normalise_maps, upsample_maps
from .gradcam import conv_maps, require_torch_backbone, view_activation_maps
from .neighbours import Neighbour, nearest_examples

CONTRAST_METHOD = "gradcam"


@dataclass
class Explanation:
    """Why the model said `target` for one image: heatmaps over `image`, the runner-up, similar training images."""

    path: str
    image: np.ndarray | None = None
    predicted: str | None = None
    confidence: float | None = None
    target: str | None = None
    target_prob: float | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    versus: str | None = None
    versus_prob: float | None = None
    contrast: np.ndarray | None = None
    neighbours: list[Neighbour] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the arrays are left out)."""
        return {"path": self.path, "status": "error" if self.error else "ok", "error": self.error,
                "predicted": self.predicted, "confidence": self.confidence, "target": self.target,
                "target_prob": self.target_prob, "versus": self.versus, "versus_prob": self.versus_prob,
                "methods": sorted(self.maps), "neighbours": [n.__dict__ for n in self.neighbours]}


def class_index(classes: Sequence[str], name: str | None, option: str) -> int | None:
    """Index of a class name given by the user; a clear error with close matches when it is not a class."""
    if name is None:
        return None
    if name in classes:
        return list(classes).index(name)
    import difflib

    close = difflib.get_close_matches(name, classes, n=3, cutoff=0.5)
    raise ConfigError(f"{option} '{name}' is not a class of this model", expected=f"one of {len(classes)} classes",
                      found=name, fix=f"did you mean {', '.join(close)}?" if close else
                      "list the classes in the model's config.json")


def _decode(samples: Sequence[Sample], preprocess, max_pixels: int | None) -> list[np.ndarray | str]:
    out: list[np.ndarray | str] = []
    for s in samples:
        try:
            out.append(preprocess.apply(load_sample_rgb(s, max_pixels=max_pixels)))
        except FinegrainError as exc:
            out.append(getattr(exc, "reason", str(exc)))
    return out


def _versus_indices(classes: Sequence[str], versus: str | Sequence[str] | None, n: int) -> np.ndarray | None:
    """Contrast class per image, from one name for all or one name per image."""
    if versus is None:
        return None
    names = [versus] * n if isinstance(versus, str) else list(versus)
    if len(names) != n:
        raise ConfigError("one --versus class per image is needed", expected=f"{n} class names",
                          found=f"{len(names)} names", fix="pass one class name, or one per input image")
    return np.array([class_index(classes, v, "--versus") for v in names], dtype=int)


def _runner_up(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    masked = probs.copy()
    masked[np.arange(len(target)), target] = -np.inf
    return masked.argmax(axis=1)


def _explain_batch(clf: Any, backbone, images: np.ndarray, target: int | None, versus: np.ndarray | None,
                   methods: tuple[str, ...], contrast: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                      dict[str, np.ndarray], np.ndarray | None]:
    """Probabilities, embeddings, targets, {method: maps} and contrast maps for a batch, upsampled to the crop."""
    # a model fitted with --tta answers for the image and its views: each view's evidence, turned back, is summed
    views = [(view, conv_maps(backbone, clf.head, images if view is None else turned_crops(images, view)))
             for view in (None, *clf.views)]
    X = average_views([maps.embeddings for _, maps in views])
    as_embeddings = Embeddings(X, [Sample(Path(f"#{i}")) for i in range(len(images))],
                               [""] * len(images), clf.backbone_id, clf.cache_key, dict(clf.preprocess), views=clf.views)
    probs = clf.predict_proba_embeddings(as_embeddings)  # the model's own probabilities (calibrated if it is)
    tgt = probs.argmax(axis=1) if target is None else np.full(len(images), target)
    size = images.shape[1:3]
    raw_maps = view_activation_maps(views, clf.head, tgt, None, methods)
    cams = {m: normalise_maps(upsample_maps(a, *size)) for m, a in raw_maps.items()}
    others = None
    contrast_maps = None
    if contrast and len(clf.classes) > 1:
        runner_up = _runner_up(probs, tgt)
        others = runner_up if versus is None else np.where(versus == tgt, runner_up, versus)  # never A vs A
        raw = view_activation_maps(views, clf.head, tgt, others, (CONTRAST_METHOD,))[CONTRAST_METHOD]
        contrast_maps = normalise_maps(upsample_maps(raw, *size))
    return probs, X, np.stack([tgt, tgt if others is None else others], axis=1), cams, contrast_maps


def explain_images(clf: Any, inputs: Sequence[str | Path] | Sequence[Sample], *, target: str | None = None,
                   versus: str | Sequence[str] | None = None, methods: Sequence[str] = ("gradcam", "gradcam++"),
                   contrast: bool = True, reference: Embeddings | None = None, n_neighbours: int = 5,
                   batch_size: int = 16, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[Explanation]:
    """Explain each image's prediction (or `target`), contrasted with the runner-up (or `versus`: one class
    for all images, or one per image, e.g. each mistake's true class).

    `reference` (training embeddings, e.g. from `reference_embeddings`) adds the nearest training images.
    """
    from ..data.sources import collect_inputs

    samples = list(inputs) if all(isinstance(s, Sample) for s in inputs) else collect_inputs([Path(p) for p in inputs])
    bb = require_torch_backbone(clf.backbone())
    return explain_crops(clf, [str(s.path) for s in samples], _decode(samples, bb.preprocess, max_pixels),
                         target=target, versus=versus, methods=methods, contrast=contrast, reference=reference,
                         n_neighbours=n_neighbours, batch_size=batch_size)


def explain_crops(clf: Any, names: Sequence[str], crops: Sequence[np.ndarray | str], *, target: str | None = None,
                  versus: str | Sequence[str] | None = None, methods: Sequence[str] = ("gradcam", "gradcam++"),
                  contrast: bool = True, reference: Embeddings | None = None, n_neighbours: int = 5,
                  batch_size: int = 16) -> list[Explanation]:
    """`explain_images` for images already decoded into the backbone's crops (an error reason in place of a
    crop that could not be made): the HTTP server decodes uploads itself and explains them here."""
    bb = require_torch_backbone(clf.backbone())
    t_idx = class_index(clf.classes, target, "--class")
    v_idx = _versus_indices(clf.classes, versus, len(names))
    if t_idx is not None and v_idx is not None and (v_idx == t_idx).any():
        raise ConfigError("--class and --versus name the same class", expected="two different classes",
                          found=target, fix="pick another class for --versus, or leave it out")
    results = [Explanation(name, error=d) if isinstance(d, str) else Explanation(name, image=d)
               for name, d in zip(names, crops)]
    ok_idx = [i for i, r in enumerate(results) if r.error is None]
    for start in range(0, len(ok_idx), batch_size):
        rows = ok_idx[start:start + batch_size]
        chunk = [results[i] for i in rows]
        probs, emb, pairs, cams, contrast_maps = _explain_batch(
            clf, bb, np.stack([r.image for r in chunk]), t_idx, None if v_idx is None else v_idx[rows],
            tuple(methods), contrast)
        near = nearest_examples(emb, reference, n_neighbours) if reference is not None else [[] for _ in chunk]
        for i, r in enumerate(chunk):
            top, (t, v) = int(probs[i].argmax()), pairs[i]
            r.predicted, r.confidence = clf.classes[top], float(probs[i, top])
            r.target, r.target_prob = clf.classes[t], float(probs[i, t])
            r.maps = {m: cams[m][i] for m in cams}
            if contrast_maps is not None:
                r.versus, r.versus_prob, r.contrast = clf.classes[v], float(probs[i, v]), contrast_maps[i]
            r.neighbours = near[i]
    return results
