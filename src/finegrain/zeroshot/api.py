"""`zeroshot_classifier`, `align` and `describe` as functions: what `finegrain zeroshot`, `align` and `describe`
run, with the CLI's options as keyword arguments. Files or in-memory values are accepted wherever the CLI takes a
file."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..backbones import DEFAULT_BACKBONE, get_backbone
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.sources import collect_inputs, load_data
from ..embed import Embeddings, embed_samples, is_embeddings_dir, load_embeddings
from ..errors import ConfigError
from ..pipeline import Classifier
from ..progress import progress_scope
from ..store import EmbeddingCache
from .alignment import AlignmentParams, RefineParams
from .build import DEFAULT_NAME_WEIGHT, build_zeroshot, train_alignment
from .encoders import DEFAULT_TEXT_ENCODER
from .texts import ClassDescriptions, Descriptor, read_class_names, read_descriptions, read_templates

Descriptions = ClassDescriptions | Mapping[str, str | Sequence[str]] | str | Path
Paths = Sequence[str | Path] | str | Path


def as_descriptions(value: Descriptions) -> ClassDescriptions:
    """A descriptions file (CSV class,description[,weight] or JSON/YAML), or {class: text or [texts]}."""
    if isinstance(value, ClassDescriptions):
        return value
    if isinstance(value, (str, Path)):
        return read_descriptions(value)
    return ClassDescriptions({str(c): [Descriptor(t) for t in ([texts] if isinstance(texts, str) else texts)]
                              for c, texts in value.items()})


def as_class_names(value: Sequence[str] | str | Path) -> list[str]:
    """A class-names file (TXT, CSV, JSON/YAML), or the names themselves."""
    return read_class_names(value) if isinstance(value, (str, Path)) else [str(c) for c in value]


def _as_paths(value: Paths) -> list[str | Path]:
    return [value] if isinstance(value, (str, Path)) else list(value)


def _unlabelled_X(unlabelled: Paths | None, backbone: str, cache_dir: str | Path | None,
                  embed_kw: dict[str, Any]) -> np.ndarray | None:
    """Embeddings of unlabelled images of the target classes (their labels, if any, are ignored), or None."""
    if not unlabelled:
        return None
    with EmbeddingCache(cache_dir) as cache:
        return embed_samples(collect_inputs(_as_paths(unlabelled)), get_backbone(backbone), cache=cache, **embed_kw).X


def _embed_kw(batch_size: int, workers: int, max_pixels: int | None, progress: bool | None) -> dict[str, Any]:
    return {"batch_size": batch_size, "workers": workers, "max_pixels": max_pixels, "progress": bool(progress)}


def zeroshot_classifier(classes: Sequence[str] | str | Path, *, descriptions: Descriptions | None = None,
             templates: str | Path | Sequence[str] | None = None, name_weight: float = DEFAULT_NAME_WEIGHT,
             backbone: str = DEFAULT_BACKBONE, text_encoder: str | None = None, method: str = "auto",
             alignment: Classifier | str | Path | None = None, unlabelled: Paths | None = None,
             prompt_temperature: float = 1.0, adapt: bool = False, shortlist: int = 0, conse_top: int = 10,
             cache_dir: str | Path | None = None, batch_size: int = 32, workers: int = 2,
             max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool | None = None) -> Classifier:
    """A classifier from class names (and descriptions), no photos: `finegrain zeroshot`. With `alignment`
    (a model from `align`, or its folder) the image side is that model's; `shortlist` > 0 is the vocabulary-free
    mode (retrieve that many candidates with one prompt, then re-score them)."""
    with progress_scope(progress):
        align_clf = Classifier.load(alignment) if isinstance(alignment, (str, Path)) else alignment
        image_backbone = align_clf.backbone_id if align_clf is not None else backbone
        return build_zeroshot(
            as_class_names(classes), descriptions=as_descriptions(descriptions) if descriptions is not None else None,
            templates=_templates(templates), backbone=image_backbone, text_encoder=text_encoder, method=method,
            alignment=align_clf, name_weight=name_weight,
            unlabelled=_unlabelled_X(unlabelled, image_backbone, cache_dir,
                                     _embed_kw(batch_size, workers, max_pixels, progress)),
            prompt_temperature=prompt_temperature, refine=RefineParams() if adapt else None, shortlist=shortlist,
            conse_top=conse_top, cache_dir=cache_dir)


def _templates(templates: str | Path | Sequence[str] | None) -> list[str]:
    return list(templates) if isinstance(templates, (list, tuple)) else read_templates(templates)


def _labelled_embeddings(data: str | Path, backbone: str, cache_dir: str | Path | None,
                         embed_kw: dict[str, Any]) -> Embeddings:
    """Labelled train/val embeddings of DATA: the test split is never read."""
    from ..training import training_samples

    if is_embeddings_dir(data):
        emb = load_embeddings(data)
        return emb.subset([s.split in (None, "train", "val") for s in emb.samples])
    train, val = training_samples(load_data(data))
    with EmbeddingCache(cache_dir) as cache:
        return embed_samples(train + val, get_backbone(backbone), cache=cache, **embed_kw)


def align(data: str | Path, descriptions: Descriptions, *, classes: Sequence[str] | str | Path | None = None,
          templates: str | Path | Sequence[str] | None = None, name_weight: float = DEFAULT_NAME_WEIGHT,
          backbone: str = DEFAULT_BACKBONE, text_encoder: str = DEFAULT_TEXT_ENCODER, gamma: float | None = None,
          lam: float | None = None, text_weight: float | None = None, seen_penalty: float | None = None,
          unlabelled: Paths | None = None, prompt_temperature: float = 1.0, adapt: bool = False,
          cache_dir: str | Path | None = None, batch_size: int = 32, workers: int = 2,
          max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool | None = None) -> Classifier:
    """Learn image→text alignment on DATA's labelled classes and their descriptions, and recognise `classes`
    (default: the described classes DATA lacks): `finegrain align`. `gamma`, `lam`, `text_weight` and
    `seen_penalty` left None are chosen on held-out seen classes.

    >>> import finegrain
    >>> described = {"Hooded_Oriole": "bright orange body and a black throat",
    ...              "Orchard_Oriole": "dark chestnut belly and a black hood",
    ...              "Scarlet_Tanager": "scarlet red body with black wings",
    ...              "Summer_Tanager": "rose red all over with a pale bill",
    ...              "Western_Tanager": "yellow body, black back and a red face"}
    >>> clf = finegrain.align(finegrain.SAMPLE_DATA, described, backbone="tiny")
    >>> len(clf.classes), clf.classes[-1], len(clf.info["zeroshot"]["alignment"]["trained_on_classes"])
    (5, 'Western_Tanager', 4)
    """
    with progress_scope(progress):
        kw = _embed_kw(batch_size, workers, max_pixels, progress)
        emb = _labelled_embeddings(data, backbone, cache_dir, kw)
        given = {k: v for k, v in (("gamma", gamma), ("lam", lam), ("text_weight", text_weight)) if v is not None}
        return train_alignment(
            emb, as_descriptions(descriptions), classes=as_class_names(classes) if classes is not None else None,
            templates=_templates(templates), text_encoder=text_encoder, name_weight=name_weight,
            params=AlignmentParams(**given) if len(given) == 3 else None,
            choose_from={k: (v,) for k, v in given.items()},
            seen_penalty=seen_penalty, unlabelled=_unlabelled_X(unlabelled, emb.backbone_id, cache_dir, kw),
            prompt_temperature=prompt_temperature, refine=RefineParams() if adapt else None, cache_dir=cache_dir)


def describe(model: Classifier | str | Path, inputs: Paths, *, top: int = 3, cache_dir: str | Path | None = None,
             batch_size: int = 32, workers: int = 2, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             progress: bool | None = None) -> list[dict[str, Any]]:
    """Per input image, in order: its zero-shot answer with the `top` descriptors behind it
    ({path, label, score, evidence: [{text, contribution}]}), or {path, error} when it cannot be read:
    `finegrain describe`.

    >>> import finegrain
    >>> clf = finegrain.align(finegrain.SAMPLE_DATA, {"Hooded_Oriole": "orange body", "Scarlet_Tanager": "red body",
    ...                                                "Western_Tanager": "yellow body"}, backbone="tiny")
    >>> row = finegrain.describe(clf, finegrain.SAMPLE_DATA + "/test/Hooded_Oriole", top=1)[0]
    >>> sorted(row), len(row["evidence"])
    (['evidence', 'label', 'path', 'score'], 1)
    """
    with progress_scope(progress):
        clf = model if isinstance(model, Classifier) else Classifier.load(model)
        if clf.head.name != "zeroshot":
            name = "this model" if isinstance(model, Classifier) else str(model)
            raise ConfigError(f"{name} is not a zero-shot model",
                              expected="a model from `finegrain zeroshot` or `align`", found=f"a {clf.head.name} model",
                              fix="describe works with description-based models only")
        samples = collect_inputs(_as_paths(inputs))
        with EmbeddingCache(cache_dir) as cache:
            emb = clf.embed(samples, cache=cache, **_embed_kw(batch_size, workers, max_pixels, progress))
        answers = clf.head.explain(emb.X, k=top) if len(emb.X) else []
        rows = {str(s.path): {"path": str(s.path), **r} for s, r in zip(emb.samples, answers)}
        rows.update({e.path: {"path": e.path, "error": e.reason} for e in emb.errors})
        return [rows[str(s.path)] for s in samples]
