"""`evaluate`: a trained classifier on a labelled split → metrics, per-class table, confusion, leakage check."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .data.images import DEFAULT_MAX_PIXELS
from .data.sources import DataSet, load_data
from .embed import Embeddings, is_embeddings_dir, load_embeddings
from .errors import ConfigError, DataError
from .metrics import classification_summary
from .pipeline import Classifier
from .store import EmbeddingCache

log = logging.getLogger("finegrain")


def choose_split(splits: list[str], split: str | None) -> str | None:
    """The asked split; else 'test' when the data has splits; else all of the data (None)."""
    if split is not None:
        if split not in splits:
            raise ConfigError(f"split '{split}' is not in the data", expected=f"one of {', '.join(splits) or '(no splits)'}",
                              found=split, fix="pick one of those with --split, or omit --split")
        return split
    if not splits:
        return None
    if "test" in splits:
        return "test"
    raise ConfigError("the data has splits but no 'test' split", expected="a test split, or --split NAME",
                      found=f"splits {', '.join(splits)}", fix="choose the split to evaluate with --split")


def _embeddings_for(clf: Classifier, data: str | Path | DataSet, split: str | None, cache_dir, batch_size: int,
                    workers: int, max_pixels: int | None, progress: bool) -> tuple[Embeddings, int, str | None]:
    if not isinstance(data, DataSet) and is_embeddings_dir(data):
        emb = load_embeddings(data)
        clf.check_embeddings(emb)
        chosen = choose_split(sorted({s.split for s in emb.samples if s.split}), split)
        emb = emb.subset([chosen is None or s.split == chosen for s in emb.samples])
        return emb, len(emb.samples) + len(emb.errors), chosen
    ds = data if isinstance(data, DataSet) else load_data(data)
    ds.require_labels()
    chosen = choose_split(ds.splits, split)
    samples = ds.samples if chosen is None else ds.select([chosen])
    if not samples:
        raise DataError(f"no images to evaluate in {ds.root}" + (f" (split {chosen})" if chosen else ""),
                        expected="labelled images", found="none", fix="check the data path and --split")
    cache = EmbeddingCache(cache_dir)
    emb = clf.embed(samples, cache=cache, batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                    progress=progress)
    cache.close()
    return emb, len(samples), chosen


def evaluate(clf: Classifier, data: str | Path | DataSet, *, split: str | None = None, top_k: int = 5,
             cache_dir: str | Path | None = None, batch_size: int = 32, workers: int = 2,
             max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = False) -> dict[str, Any]:
    """Top-1/top-k, mean per-class accuracy, macro-F1, ECE, per-class table, confusion matrix — JSON-ready."""
    emb, n_inputs, chosen = _embeddings_for(clf, data, split, cache_dir, batch_size, workers, max_pixels, progress)
    known = set(clf.classes)
    labelled = [s.label is not None for s in emb.samples]
    in_classes = [s.label in known for s in emb.samples]
    unknown_labels = sorted({s.label for s in emb.samples if s.label is not None and s.label not in known})
    if unknown_labels:
        log.warning("%d image(s) have labels the model does not know (%s); they are left out of the metrics",
                    sum(a and not b for a, b in zip(labelled, in_classes)), ", ".join(unknown_labels[:5]))
    scored = emb.subset(in_classes)
    if not scored.samples:
        raise DataError("no image to score: none has a label the model knows", expected=f"labels among {len(known)} classes",
                        found=f"labels {', '.join(unknown_labels[:5]) or '(none)'}",
                        fix="evaluate on labelled images of the classes the model was trained on")
    probs = clf.predict_proba_embeddings(scored)
    y = clf.head.encode_labels(np.asarray(scored.labels, dtype=object))
    report = classification_summary(y, probs, clf.classes, top_k=top_k)
    leaked = sorted(set(scored.shas) & set(clf.info.get("train_sha256", [])))
    report.update({
        "split": chosen, "data": str(data.root if isinstance(data, DataSet) else data),
        "n_inputs": n_inputs, "n_unreadable": len(emb.errors), "unreadable": [e.__dict__ for e in emb.errors],
        "n_unknown_label": int(sum(a and not b for a, b in zip(labelled, in_classes))),
        "n_unlabelled": int(sum(not a for a in labelled)),
        "n_leaked_from_training": len(leaked),
        "provenance": clf.provenance(model_trained=clf.info.get("provenance", {}).get("created")),
    })
    if getattr(clf.head, "mode", None) == "transductive" and hasattr(clf.head, "flip_rate"):
        report["flip_rate"] = clf.head.flip_rate(scored.X)  # answers that change with the batch-mates drawn
    if leaked:
        log.warning("%d evaluated image(s) are exact copies of training images: the scores are optimistic", len(leaked))
    return report
