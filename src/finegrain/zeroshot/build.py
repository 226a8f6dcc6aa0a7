"""Building zero-shot classifiers: class texts → embedded rows → a `ZeroShotHead` inside a `Classifier`.

`build_zeroshot` needs no labelled image (CLIP-family backbones, ConSE, or a saved alignment);
`train_alignment` learns the image→text projection from the labelled classes a user has and returns a
classifier over any described classes — by default only those, plus any given target classes.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..backbones import DEFAULT_BACKBONE, get_backbone
from ..backbones.clip import is_vlm_backbone
from ..data.samples import Sample
from ..errors import ConfigError, DataError
from ..pipeline import Classifier
from ..store import EmbeddingCache
from ..progress import phase
from ..threads import solver_threads
from .alignment import AlignmentParams, RefineParams, adapted_means
from .encoders import DEFAULT_TEXT_ENCODER, TextEncoder, get_text_encoder
from .ensemble import class_vectors, ensemble_names, mix_coefficients, mix_in, prompt_scores, prompt_weights
from .head import DESCRIPTOR, IMAGES, NAME, ConseSource, TextRows, ZeroShotHead
from .selection import choose_alignment_params, choose_seen_penalty
from .terms import shared_terms, with_terms
from .texts import ClassDescriptions, class_key, imagenet_class_names, read_templates, readable_name

log = logging.getLogger("finegrain")
DEFAULT_NAME_WEIGHT = 0.5


def descriptors_for(classes: Sequence[str], descriptions: ClassDescriptions | None) -> list[list]:
    """Each class's descriptors, matched by name without regard to case, underscores or a 'NNN.' prefix."""
    if descriptions is None:
        return [[] for _ in classes]
    by_key = {class_key(c): items for c, items in descriptions.by_class.items()}
    return [by_key.get(class_key(c), []) for c in classes]


def prompt_texts(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Template-major list: all classes under template 0, then template 1, ..."""
    return [t.format(readable_name(c)) for t in templates for c in classes]


def embed_prompts(classes: Sequence[str], templates: Sequence[str], encoder: TextEncoder,
                  cache: EmbeddingCache | None) -> np.ndarray:
    """(P, C, T) embeddings of every template filled with every class name."""
    E = encoder.encode(prompt_texts(classes, templates), cache=cache)
    return E.reshape(len(templates), len(classes), -1)


def text_rows(classes: Sequence[str], E: np.ndarray, template_weights: np.ndarray,
              descriptors: Sequence[Sequence], desc_emb: np.ndarray, name_weight: float,
              coarse: bool = False) -> TextRows:
    """Name rows (weighted template ensembles) + descriptor rows, with the coefficients that mix them."""
    C = len(classes)
    names = ensemble_names(E, template_weights)
    texts = [readable_name(c) for c in classes]
    row_class = list(range(C))
    weights = [1.0] * C
    for c, items in enumerate(descriptors):
        texts += [d.text for d in items]
        row_class += [c] * len(items)
        weights += [d.weight for d in items]
    row_class_a = np.asarray(row_class, dtype=np.int64)
    kind = np.where(np.arange(len(row_class)) < C, NAME, DESCRIPTOR).astype(np.int64)
    emb = np.concatenate([names, desc_emb.reshape(-1, names.shape[1])]).astype(np.float32)
    coef = mix_coefficients(C, row_class_a, np.asarray(weights, dtype=np.float64), kind == NAME, emb, name_weight)
    return TextRows(texts, row_class_a, kind, emb, coef, E[0].astype(np.float32) if coarse else None)


def with_image_rows(rows: TextRows, U: np.ndarray, params: RefineParams) -> TextRows:
    """Label-free adaptation: each class vector also moves toward the unlabelled images it attracts."""
    n_classes = int(rows.row_class.max()) + 1
    C = class_vectors(rows.row_emb, rows.row_class, rows.coef, n_classes)
    M = adapted_means(U, C, params)
    coef, new = mix_in(C, rows.row_class, rows.coef, M, params.step)
    return TextRows(rows.texts + [f"adaptation to {len(U)} unlabelled images"] * n_classes,
                    np.concatenate([rows.row_class, np.arange(n_classes)]),
                    np.concatenate([rows.row_kind, np.full(n_classes, IMAGES)]),
                    np.concatenate([rows.row_emb, M]).astype(np.float32), np.concatenate([coef, new]), rows.coarse)


def embed_descriptors(descriptors: Sequence[Sequence], encoder: TextEncoder, cache: EmbeddingCache | None) -> np.ndarray:
    return encoder.encode([d.text for items in descriptors for d in items], cache=cache)


def _warn_undescribed(classes: Sequence[str], descriptors: Sequence[Sequence]) -> None:
    """Some classes described and others not is usually a name mismatch in the descriptions file."""
    missing = [c for c, d in zip(classes, descriptors) if not d]
    if missing and len(missing) < len(classes):
        log.warning("%d class(es) have no description and are scored by name only: %s",
                    len(missing), ", ".join(missing[:5]))


def conse_source(backbone_id: str, templates: Sequence[str], encoder: TextEncoder,
                 cache: EmbeddingCache | None) -> ConseSource:
    """The backbone's ImageNet classifier + the text vectors of its 1000 labels (same templates as the classes)."""
    from .conse import imagenet_source

    weight, bias, scale = imagenet_source(backbone_id)
    labels = imagenet_class_names()
    E = embed_prompts(labels, templates, encoder, cache)
    return ConseSource(weight, bias, scale, ensemble_names(E, np.full(len(templates), 1.0 / len(templates))))


def _image_side(backbone: str, alignment: Classifier | None) -> tuple[str, dict, str, int]:
    """(backbone id, preprocessing, cache key, embedding width) the model's images must come from."""
    if alignment is not None:
        return (alignment.backbone_id, alignment.preprocess, alignment.cache_key,
                int(alignment.head.n_features_in_))
    bb = get_backbone(backbone)
    return bb.id, bb.preprocess.to_dict(), bb.cache_key, bb.embed_dim


def _method(backbone_id: str, method: str, alignment: Any) -> str:
    if method != "auto":
        return method
    if alignment is not None:
        return "linear"
    return "identity" if is_vlm_backbone(backbone_id) else "conse"


def build_zeroshot(classes: Sequence[str], *, descriptions: ClassDescriptions | None = None,
                   templates: str | Path | Sequence[str] | None = None, backbone: str = DEFAULT_BACKBONE,
                   text_encoder: str | None = None, method: str = "auto", alignment: Classifier | None = None,
                   name_weight: float = DEFAULT_NAME_WEIGHT, unlabelled: np.ndarray | None = None,
                   prompt_temperature: float | None = 1.0, refine: RefineParams | None = None,
                   shortlist: int = 0, conse_top: int = 10,
                   temperature: float | None = None, cache_dir: str | Path | None = None) -> Classifier:
    """A zero-shot classifier over `classes` from names, templates and optional descriptions.

    method: 'identity' (a CLIP-family backbone: images and texts share one space), 'conse' (ImageNet
    classifier of an EfficientNet-Lite backbone) or 'linear' (reuse `alignment`, a classifier from
    `train_alignment`); 'auto' picks from the backbone. `unlabelled`: embeddings of unlabelled images used
    to weight the templates without labels (uniform weights when None, with one template or with
    prompt_temperature None) and, with `refine`, to adapt the class vectors to them (transductive).
    `shortlist` > 0: vocabulary-free mode — retrieve that many candidates with one prompt, then re-score them."""
    t0 = time.perf_counter()
    classes = sorted(classes)  # heads keep classes_ sorted (labels are encoded by binary search)
    if alignment is not None:
        backbone = alignment.backbone_id
    method = _method(backbone, method, alignment)
    if method == "linear" and (alignment is None or not hasattr(alignment.head, "projection_")):
        raise ConfigError("method 'linear' needs a trained alignment", expected="--alignment MODEL_DIR from `finegrain align`",
                          found="none", fix="train one with `finegrain align DATA --descriptions FILE -o DIR`")
    if alignment is not None:
        text_encoder = alignment.head.text_encoder
    text_encoder = text_encoder or (backbone if method == "identity" else DEFAULT_TEXT_ENCODER)
    template_list = list(templates) if isinstance(templates, (list, tuple)) else read_templates(templates)
    encoder = get_text_encoder(text_encoder)
    backbone_id, preprocess, cache_key, n_features = _image_side(backbone, alignment)
    with EmbeddingCache(cache_dir) as cache:
        E = embed_prompts(classes, template_list, encoder, cache)
        descriptors = descriptors_for(classes, descriptions)
        _warn_undescribed(classes, descriptors)
        D = embed_descriptors(descriptors, encoder, cache)
        conse = conse_source(backbone, template_list, encoder, cache) if method == "conse" else None
    head = ZeroShotHead(mapping=method, temperature=temperature or 50.0, shortlist=shortlist, conse_top=conse_top,
                        text_encoder=text_encoder)

    def rows_for(template_weights: np.ndarray) -> TextRows:
        rows = text_rows(classes, E, template_weights, descriptors, D, name_weight, coarse=shortlist > 0)
        if alignment is None:
            return rows
        a = alignment.head
        return with_terms(rows, getattr(a, "vocabulary_", []), getattr(a, "text_weight_", 1.0))

    uniform = np.full(len(template_list), 1.0 / len(template_list))
    head.set_texts(classes, rows_for(uniform), n_features, conse)
    if alignment is not None:
        head.adopt_alignment(alignment.head)
        if temperature is None:
            head.temperature = float(alignment.head.temperature)
    weights = uniform
    has_unlabelled = unlabelled is not None and len(unlabelled) > 0
    if has_unlabelled and len(template_list) > 1 and prompt_temperature is not None:
        weights = prompt_weights(prompt_scores(head.text_part(head.to_text_space(unlabelled)), E), prompt_temperature)
        head.set_texts(classes, rows_for(weights), n_features, conse)
    if has_unlabelled and refine is not None:
        head.set_texts(classes, with_image_rows(head.rows_, head.to_text_space(unlabelled), refine), n_features, conse)
    info = {"zeroshot": {"method": method, "text_encoder": text_encoder, "templates": template_list,
                         "template_weights": [round(float(w), 6) for w in weights],
                         "n_described": int(sum(bool(d) for d in descriptors)), "name_weight": name_weight,
                         "shortlist": shortlist, "n_unlabelled": len(unlabelled) if has_unlabelled else 0,
                         "refine": refine.__dict__ if has_unlabelled and refine is not None else None,
                         "seconds": round(time.perf_counter() - t0, 2)}}
    if alignment is not None:
        info["zeroshot"]["alignment"] = alignment.info.get("alignment", {})
    clf = Classifier(head, backbone_id, preprocess, cache_key)
    clf.info = {"provenance": clf.provenance(), **info}
    return clf


@solver_threads()
def train_alignment(train: Sequence[Sample] | Any, descriptions: ClassDescriptions, *,
                    classes: Sequence[str] | None = None, templates: str | Path | Sequence[str] | None = None,
                    backbone: str = DEFAULT_BACKBONE, text_encoder: str = DEFAULT_TEXT_ENCODER,
                    name_weight: float = DEFAULT_NAME_WEIGHT, params: AlignmentParams | None = None,
                    choose_from: dict[str, Sequence[float]] | None = None, seen_penalty: float | None = None,
                    unlabelled: np.ndarray | None = None, prompt_temperature: float | None = 1.0,
                    refine: RefineParams | None = None, cache_dir: str | Path | None = None,
                    progress: bool = False, **embed_kw: Any) -> Classifier:
    """Learn the image→text projection from labelled images of SEEN classes and their descriptions.

    `train`: the seen classes' training images (Samples, or an `Embeddings`). Only images whose class has
    a description train the projection, and only those classes' texts enter the loss. The returned
    classifier scores `classes` (default: every described class without training images, i.e. the
    unseen ones; when fewer than two, every described class). `params`: the alignment's settings; None
    chooses them on held-out seen classes (`choose_alignment_params`), over `choose_from` where given
    (e.g. {"gamma": (1.0,)} fixes gamma). `seen_penalty`: subtracted from the cosine of the labelled classes
    when they compete with new ones (generalised zero-shot; no effect on new-only targets); None chooses it on
    held-out seen classes. `unlabelled`, `prompt_temperature`, `refine`: as in
    `build_zeroshot`, applied to the target classes after the alignment is learned."""
    from ..embed import Embeddings, embed_samples

    t0 = time.perf_counter()
    if isinstance(train, Embeddings):
        emb = train
    else:
        with EmbeddingCache(cache_dir) as cache:
            emb = embed_samples(list(train), get_backbone(backbone), cache=cache, progress=progress, **embed_kw)
    labelled = [s.label is not None for s in emb.samples]
    emb = emb.subset(labelled)
    seen = sorted({s.label for s in emb.samples})
    seen_desc = descriptors_for(seen, descriptions)
    described_seen = [c for c, d in zip(seen, seen_desc) if d]
    if len(described_seen) < 2:
        raise DataError("too few labelled classes have descriptions to learn an alignment",
                        expected="descriptions for at least 2 of the training classes",
                        found=f"{len(described_seen)} of {len(seen)} ({', '.join(seen[:3])}...)",
                        fix="make the class names in the descriptions file match the training labels")
    train_emb = emb.subset([s.label in set(described_seen) for s in emb.samples])
    seen_keys = {class_key(c) for c in seen}
    unseen = [c for c in descriptions.classes if class_key(c) not in seen_keys]
    targets = list(classes) if classes is not None else unseen if len(unseen) >= 2 else described_seen + unseen
    if len(targets) < 2:
        raise ConfigError("an aligned zero-shot model needs at least 2 target classes", expected="2 or more classes",
                          found=", ".join(targets) or "none", fix="pass --classes FILE listing the classes to recognise")
    template_list = list(templates) if isinstance(templates, (list, tuple)) else read_templates(templates)
    encoder = get_text_encoder(text_encoder)
    bb_dim = int(train_emb.X.shape[1])
    with EmbeddingCache(cache_dir) as cache:
        E = embed_prompts(described_seen, template_list, encoder, cache)
        D = embed_descriptors(descriptors_for(described_seen, descriptions), encoder, cache)
    uniform = np.full(len(template_list), 1.0 / len(template_list))
    rows = text_rows(described_seen, E, uniform, descriptors_for(described_seen, descriptions), D, name_weight)
    labels = np.asarray(train_emb.labels, dtype=object)
    y = np.searchsorted(np.asarray(described_seen, dtype=object), labels)
    selection = penalty_choice = None
    if params is None:
        with phase("choosing the alignment settings on held-out labelled classes"):
            params, selection = choose_alignment_params(train_emb.X, y, rows, choose_from)
    if seen_penalty is None:  # chosen even for new-only targets: the saved alignment may later score mixed ones
        seen_penalty, penalty_choice = choose_seen_penalty(train_emb.X, y, rows, params)
    seen_head = ZeroShotHead(mapping="linear", text_encoder=text_encoder)
    seen_head.vocabulary_, seen_head.text_weight_ = shared_terms(rows), params.text_weight
    seen_head.seen_penalty_ = float(seen_penalty or 0.0)
    seen_head.set_texts(described_seen, with_terms(rows, seen_head.vocabulary_, params.text_weight), bb_dim)
    seen_head.fit(train_emb.X, labels, params=params)
    alignment = Classifier(seen_head, train_emb.backbone_id, train_emb.preprocess, train_emb.cache_key)
    alignment.info = {"alignment": {"trained_on_classes": described_seen, "n_train_images": len(train_emb.samples),
                                    "params": params.__dict__, "chosen_on_held_out_seen_classes": selection,
                                    "seen_penalty": seen_head.seen_penalty_, "seen_penalty_choice": penalty_choice,
                                    "n_terms": len(seen_head.vocabulary_), "name_weight": name_weight,
                                    "train_sha256": sorted(set(train_emb.shas))}}
    clf = build_zeroshot(targets, descriptions=descriptions, templates=template_list, alignment=alignment,
                         name_weight=name_weight, unlabelled=unlabelled, prompt_temperature=prompt_temperature,
                         refine=refine, cache_dir=cache_dir)
    clf.info["train_sha256"] = sorted(set(train_emb.shas))
    clf.info["zeroshot"]["seconds"] = round(time.perf_counter() - t0, 2)
    return clf
