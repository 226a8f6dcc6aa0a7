"""`build_report`: a model + labelled data → one self-contained HTML page people would rather look at than read.

Every image is embedded once (through the cache); the chosen split is scored, the training split supplies the
nearest neighbours, and all of the data is checked for duplicates, leaks and tiny classes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.health import Finding, check_samples
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.samples import Sample
from ..embed import Embeddings, is_embeddings_dir, load_embeddings
from ..errors import DataError
from ..evaluation import choose_split
from ..metrics import classification_summary, reliability_bins
from ..store import EmbeddingCache
from . import html as H
from .plots import confusion_png, embedding_map_png, per_class_accuracy_png, reliability_png
from .projection import embedding_map

TRAINING_SPLITS = ("train", "val")


@dataclass
class LoadedData:
    """Embeddings of every readable image of DATA, all its samples, and the class folders that were empty."""

    emb: Embeddings
    samples: list[Sample]
    empty_classes: list[str] = field(default_factory=list)


def load_and_embed(clf: Any, data: str | Path, cache_dir: str | Path | None, **embed_kw: Any) -> LoadedData:
    if is_embeddings_dir(data):
        emb = load_embeddings(data)
        clf.check_embeddings(emb)
        return LoadedData(emb, list(emb.samples))
    from ..data.sources import load_data

    ds = load_data(data)
    with EmbeddingCache(cache_dir) as cache:
        emb = clf.embed(ds.samples, cache=cache, **embed_kw)
    return LoadedData(emb, list(ds.samples), list(ds.empty_classes))


def worst_mistakes(y: np.ndarray, probs: np.ndarray, n: int) -> np.ndarray:
    """Indices of the misclassified images the model was most confident about, most confident first."""
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    conf = probs[wrong, pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")[:n]]


def map_subset(n: int, max_points: int, seed: int) -> np.ndarray:
    """All indices, or a seeded sorted sample of max_points of them: t-SNE cost grows with N."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _health(loaded: LoadedData) -> list[Finding]:
    hashes = dict(zip((s.path for s in loaded.emb.samples), loaded.emb.shas))
    return check_samples(loaded.samples, content_hashes=hashes, empty_classes=loaded.empty_classes)


def _reference(clf: Any, loaded: LoadedData, train: str | Path | None, cache_dir, embed_kw: dict) -> Embeddings | None:
    from ..explain import reference_embeddings

    if train is None and any(s.split in TRAINING_SPLITS for s in loaded.emb.samples):
        return loaded.emb.subset([s.split in TRAINING_SPLITS and s.label is not None for s in loaded.emb.samples])
    return reference_embeddings(clf, train, cache_dir=cache_dir, **embed_kw)


def _mistake_figures(clf: Any, scored: Embeddings, y: np.ndarray, probs: np.ndarray, idx: np.ndarray,
                     reference: Embeddings | None, n_neighbours: int, max_pixels: int | None) -> list[str]:
    from ..backbones import get_backbone
    from ..errors import ConfigError
    from ..explain import explain_images
    from ..explain.gradcam import require_torch_backbone
    from ..explain.render import explanation_png

    if len(idx) == 0:
        return []
    try:
        require_torch_backbone(get_backbone(clf.backbone_id))
    except ConfigError as exc:
        return [f'<p class="note">Grad-CAM is not available for this model: {H.esc(exc.what)}.</p>']
    from ..progress import phase

    with phase(f"explaining the {len(idx)} worst mistakes (Grad-CAM, neighbours)"):
        explained = explain_images(clf, [scored.samples[i] for i in idx], versus=[clf.classes[y[i]] for i in idx],
                                   reference=reference, n_neighbours=n_neighbours, max_pixels=max_pixels)
    figures = []
    for i, expl in zip(idx, explained):
        sample, true = scored.samples[i], clf.classes[y[i]]
        pred = int(probs[i].argmax())
        caption = (f"<b>{H.esc(clf.classes[pred])}</b> ({probs[i, pred]:.0%}) predicted, true "
                   f"<b>{H.esc(true)}</b> ({probs[i, y[i]]:.0%}) — <code>{H.esc(sample.path)}</code>")
        body = (H.png_img(explanation_png(expl, true_label=true), f"explanation of {sample.path}", "mistake")
                if expl.error is None else f'<p class="level-error">cannot explain: {H.esc(expl.error)}</p>')
        figures.append(f'<figure class="mistake"><figcaption>{caption}</figcaption>{body}</figure>')
    return figures


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _metrics_rows(summary: dict, extra: dict) -> list[tuple[str, str]]:
    top_k = next(k for k in summary if k.startswith("top") and k != "top1")
    return [("images scored", str(summary["n"])), ("top-1 accuracy %", _pct(summary["top1"])),
            (f"top-{top_k[3:]} accuracy %", _pct(summary[top_k])),
            ("mean per-class accuracy %", _pct(summary["mean_per_class_accuracy"])),
            ("macro-F1 %", _pct(summary["macro_f1"])), ("expected calibration error", f"{summary['ece']:.3f}"),
            *((k, str(v)) for k, v in extra.items())]


def _confused_rows(summary: dict) -> list[tuple[str, str, int, str]]:
    support = {r["class"]: r["support"] for r in summary["per_class"]}
    return [(p["true"], p["predicted"], p["count"], f"{100 * p['count'] / max(support[p['true']], 1):.0f}%")
            for p in summary["most_confused"]]


def _health_html(findings: list[Finding]) -> str:
    if not findings:
        return "<p>No problems found: no duplicates across or within splits, no tiny or empty classes, no label typos.</p>"
    items = "".join(f'<li><span class="level-{H.esc(f.level)}">{H.esc(f.level.upper())}</span> '
                    f"<code>{H.esc(f.code)}</code> {H.esc(f.message)}</li>" for f in findings)
    return f"<ul>{items}</ul>"


def build_report(clf: Any, data: str | Path, *, split: str | None = None, train: str | Path | None = None,
                 n_mistakes: int = 12, n_neighbours: int = 3, max_map_points: int = 3000, seed: int = 0,
                 index: str | Path | None = None, cache_dir: str | Path | None = None,
                 **embed_kw: Any) -> tuple[str, dict[str, Any]]:
    """(HTML page, JSON-ready summary with metrics, counts and per-stage seconds). `index` (a `finegrain index`
    folder) adds the worst mistakes' nearest images in that index.

    `embed_kw` goes to `Classifier.embed` (batch_size, workers, max_pixels, progress, ...)."""
    max_pixels = embed_kw.get("max_pixels", DEFAULT_MAX_PIXELS)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    loaded = load_and_embed(clf, data, cache_dir, **embed_kw)
    chosen = choose_split(sorted({s.split for s in loaded.samples if s.split}), split)
    known = set(clf.classes)
    scored = loaded.emb.subset([(chosen is None or s.split == chosen) and s.label in known for s in loaded.emb.samples])
    if not scored.samples:
        raise DataError(f"no image to report on in {data}" + (f" (split {chosen})" if chosen else ""),
                        expected=f"readable images labelled with the model's {len(known)} classes", found="none",
                        fix="check the data path, --split, and that the model was trained on these classes")
    reference = _reference(clf, loaded, train, cache_dir, embed_kw)
    findings = _health(loaded)
    seconds["embed_and_check"] = time.perf_counter() - t

    t = time.perf_counter()
    probs = clf.predict_proba_embeddings(scored)
    y = clf.head.encode_labels(np.asarray(scored.labels, dtype=object))
    summary = classification_summary(y, probs, clf.classes)
    pred = probs.argmax(axis=1)
    split_of = {str(s.path): s.split for s in loaded.samples}
    unreadable = [e for e in loaded.emb.errors if chosen is None or split_of.get(e.path) == chosen]
    leaked = set(scored.shas) & set(clf.info.get("train_sha256", []))
    plots = {"per_class": per_class_accuracy_png([r["class"] for r in summary["per_class"]],
                                                 [r["accuracy"] for r in summary["per_class"]],
                                                 [r["support"] for r in summary["per_class"]]),
             "confusion": confusion_png(np.asarray(summary["confusion_matrix"]), clf.classes),
             "reliability": reliability_png(reliability_bins(y, probs), summary["ece"])}
    seconds["metrics_and_plots"] = time.perf_counter() - t

    t = time.perf_counter()
    sub = map_subset(len(y), max_map_points, seed)
    plots["map"] = embedding_map_png(embedding_map(scored.X[sub], seed), y[sub], pred[sub] == y[sub], clf.classes)
    seconds["embedding_map"] = time.perf_counter() - t

    t = time.perf_counter()
    worst = worst_mistakes(y, probs, n_mistakes)
    mistakes = _mistake_figures(clf, scored, y, probs, worst, reference, n_neighbours, max_pixels)
    seconds["mistakes"] = time.perf_counter() - t
    if index is not None:
        from ..retrieval.report import index_neighbours_html
        t = time.perf_counter()
        index_section = index_neighbours_html(index, [scored.samples[i] for i in worst],
                                              [clf.classes[pred[i]] for i in worst], max(n_neighbours, 1),
                                              cache_dir=cache_dir, **embed_kw)
        seconds["index_neighbours"] = time.perf_counter() - t

    extra = {"unreadable images": len(unreadable), "test images identical to training images": len(leaked),
             "classes": len(clf.classes), "backbone": clf.backbone_id, "head": clf.head.name}
    map_note = (f"{len(sub)} of {len(y)} images, sampled with seed {seed}." if len(sub) < len(y) else f"{len(y)} images.")
    sections = [
        ("metrics", "Metrics", H.table(["metric", "value"], _metrics_rows(summary, extra), [False, True])),
        ("per-class", "Per-class accuracy", H.png_img(plots["per_class"], "per-class accuracy")),
        ("confusion", "Confusion", '<div class="grid"><div>' + H.png_img(plots["confusion"], "confusion matrix")
         + "</div><div><h3>Most confused pairs</h3>"
         + (H.table(["true", "predicted as", "images", "of the true class"], _confused_rows(summary),
                    [False, False, True, True]) if summary["most_confused"] else "<p>No confusions.</p>")
         + "</div></div>"),
        ("calibration", "Calibration", H.png_img(plots["reliability"], "reliability diagram")
         + '<p class="note">Bars under the diagonal: the model is more confident than it is right.</p>'),
        ("map", "Embedding map", H.png_img(plots["map"], "t-SNE map of the embeddings")
         + f'<p class="note">{map_note}</p>'),
        ("mistakes", "Worst mistakes", '<p class="note">The most confident wrong answers. Panels: the crop the model '
         "saw; Grad-CAM and Grad-CAM++ for the predicted class; why the predicted class rather than the true one; "
         "then the nearest training images (green: same class as the prediction).</p>"
         + ("".join(mistakes) or "<p>No mistakes.</p>")),
        ("health", "Dataset health", _health_html(findings)),
    ]
    if index is not None:
        sections.insert(-1, ("index", "Nearest images in the index", index_section))
    prov = clf.provenance()
    total = sum(seconds.values())
    footer = (f"finegrain {H.esc(prov.get('finegrain_version'))} · model {H.esc(prov.get('backbone'))} + "
              f"{H.esc(prov.get('head'))} · classes {H.esc(prov.get('class_list_hash'))} · data {H.esc(data)}"
              f" · generated {H.esc(prov.get('created'))} in {total:.1f}s")
    title = f"finegrain report — {Path(str(data)).name}" + (f" ({chosen})" if chosen else "")
    subtitle = (f"{summary['n']} images, {len(clf.classes)} classes; top-1 {_pct(summary['top1'])}%, "
                f"mean per-class {_pct(summary['mean_per_class_accuracy'])}%")
    page = H.page(title, subtitle, sections, footer)
    result = {k: summary[k] for k in ("n", "top1", "mean_per_class_accuracy", "macro_f1", "ece")}
    result.update({"split": chosen, "n_mistakes_shown": sum(m.startswith("<figure") for m in mistakes),
                   "n_findings": len(findings),
                   "n_unreadable": len(unreadable), "seconds": {k: round(v, 2) for k, v in seconds.items()}})
    return page, result
