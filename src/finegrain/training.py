"""`fit`: data → embeddings of the training images → a head → a `Classifier`. Never reads the test split."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backbones import DEFAULT_BACKBONE, get_backbone
from .data.health import check_samples, findings_to_json
from .data.images import DEFAULT_MAX_PIXELS
from .data.samples import Sample
from .data.sources import DataSet, load_data
from .embed import Embeddings, embed_samples, is_embeddings_dir, load_embeddings
from .errors import DataError
from .fewshot.episodes import select_shots
from .heads import DEFAULT_HEAD, make_head
from .pipeline import Classifier
from .store import EmbeddingCache

log = logging.getLogger("finegrain")
DEFAULT_MAX_ERROR_RATE = 0.05


def training_samples(ds: DataSet) -> tuple[list[Sample], list[Sample]]:
    """(train, val): with splits, train and val only — test is never touched; without, everything labelled."""
    if ds.has_splits:
        train, val = ds.select(["train"]), ds.select(["val"])
        if not train:
            raise DataError(f"{ds.root} has splits ({', '.join(ds.splits)}) but no 'train' split",
                            expected="a train split to learn from", found=f"splits {', '.join(ds.splits)}",
                            fix="name the training folder 'train', or set split=train in the manifest")
        return train, val
    return list(ds.samples), []


def check_error_rate(emb: Embeddings, n_inputs: int, max_error_rate: float, what: str) -> None:
    """A few unreadable images are reported and skipped; a run fails only when too many are unreadable."""
    if not emb.errors:
        return
    rate = len(emb.errors) / max(n_inputs, 1)
    shown = "; ".join(f"{e.path}: {e.reason}" for e in emb.errors[:5])
    if rate > max_error_rate:
        raise DataError(f"{len(emb.errors)} of {n_inputs} {what} images could not be read ({rate:.0%})",
                        expected=f"at most {max_error_rate:.0%} unreadable", found=shown,
                        fix="fix or remove those files, or raise --max-error-rate")
    log.warning("skipped %d unreadable %s image(s): %s", len(emb.errors), what, shown)


def _labelled(emb: Embeddings) -> Embeddings:
    return emb.subset([s.label is not None for s in emb.samples])


def fit(data: str | Path | DataSet, *, backbone: str = DEFAULT_BACKBONE, head: str = DEFAULT_HEAD,
        head_params: dict[str, Any] | None = None, val_split: float = 0.2, seed: int = 0,
        cache_dir: str | Path | None = None, batch_size: int = 32, workers: int = 2,
        max_pixels: int | None = DEFAULT_MAX_PIXELS, max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
        progress: bool = False, calibrate: bool = True, ood_method: str = "msp",
        unknown_tpr: float = 0.95, shots: int | None = None) -> Classifier:
    """Fit a classifier on DATA's training images (or on a `finegrain embed` folder of them).

    With `calibrate`, a temperature and an OOD detector (score `ood_method`, threshold keeping `unknown_tpr` of
    held-out known images) are fitted on the val split, or on a held-out `val_split` fraction, and saved with it.
    With `shots`, at most that many labelled training images per class are used (seeded, chosen before any
    image is read; the val split is then ignored, since its labels would be extra shots)."""
    t0 = time.perf_counter()
    params = dict(head_params or {})
    if head in ("logistic", "rbi"):
        params.setdefault("val_fraction", val_split)
        params.setdefault("seed", seed)
    clf_head = make_head(head, **params)
    if not isinstance(data, DataSet) and is_embeddings_dir(data):
        all_emb = load_embeddings(data)
        if all_emb.backbone_id != backbone:
            raise DataError(f"embeddings in {data} were made with '{all_emb.backbone_id}'",
                            expected=f"embeddings of --backbone {backbone}", found=all_emb.backbone_id,
                            fix=f"pass --backbone {all_emb.backbone_id}, or re-embed with --backbone {backbone}")
        has_splits = any(s.split for s in all_emb.samples)
        train_emb = all_emb.subset([s.split == "train" or not has_splits for s in all_emb.samples])
        val_emb = all_emb.subset([s.split == "val" for s in all_emb.samples])
        if shots is not None:
            chosen = set(select_shots(train_emb.samples, shots, seed))
            train_emb = train_emb.subset([s in chosen for s in train_emb.samples])
            val_emb = val_emb.subset([False] * len(val_emb.samples))
        findings, data_kind, empty, cache_key, preprocess = [], "embeddings", [], all_emb.cache_key, all_emb.preprocess
        n_inputs = len(train_emb.samples) + len(val_emb.samples)
    else:
        ds = data if isinstance(data, DataSet) else load_data(data)
        train, val = training_samples(ds)
        if shots is not None:
            train, val = select_shots(train, shots, seed), []
        bb = get_backbone(backbone)
        cache = EmbeddingCache(cache_dir)
        emb = embed_samples(train + val, bb, cache=cache, batch_size=batch_size, workers=workers,
                            max_pixels=max_pixels, progress=progress, desc="embedding train")
        cache.close()
        n_inputs = len(train) + len(val)
        check_error_rate(emb, n_inputs, max_error_rate, "training")
        findings = check_samples(emb.samples, content_hashes=dict(zip((s.path for s in emb.samples), emb.shas)),
                                 empty_classes=ds.empty_classes)
        for f in findings:
            log.log(logging.ERROR if f.level == "error" else logging.WARNING if f.level == "warning" else logging.INFO,
                    "%s [%s] %s", f.level, f.code, f.message)
        train_emb = emb.subset([s.split != "val" for s in emb.samples])
        val_emb = emb.subset([s.split == "val" for s in emb.samples])
        data_kind, empty, cache_key, preprocess = ds.kind, ds.empty_classes, bb.cache_key, bb.preprocess.to_dict()
        all_emb = emb
    train_emb, val_emb = _labelled(train_emb), _labelled(val_emb)
    if len(train_emb.samples) == 0:
        raise DataError(f"no labelled training images in {data}", expected="images in class folders or a label column",
                        found="only unlabelled images" if n_inputs else "no images",
                        fix="put each class's images in a folder named after the class")
    y_train = np.asarray(train_emb.labels, dtype=object)
    y_val = np.asarray(val_emb.labels, dtype=object) if val_emb.samples else None
    if y_val is not None and not set(y_val) <= set(y_train):
        keep = [lab in set(y_train) for lab in y_val]
        log.warning("%d validation image(s) belong to classes absent from train; they are ignored", keep.count(False))
        val_emb = val_emb.subset(keep)
        y_val = np.asarray(val_emb.labels, dtype=object)
    clf_head.fit(train_emb.X, y_train, val_emb.X if y_val is not None else None, y_val)
    train_acc = float((clf_head.predict(train_emb.X) == y_train).mean())
    training = {
        "data": str(data.root if isinstance(data, DataSet) else data), "data_kind": data_kind,
        "n_train": len(train_emb.samples), "n_val": len(val_emb.samples),
        "n_unreadable": len(all_emb.errors), "unreadable": [e.__dict__ for e in all_emb.errors[:100]],
        "train_accuracy": train_acc, "seed": seed, "val_split": val_split,
        "seconds": round(time.perf_counter() - t0, 2),
        "class_counts": {c: int((y_train == c).sum()) for c in clf_head.classes_},
        "empty_classes": empty, "health": findings_to_json(findings),
    }
    if y_val is not None and len(y_val):
        training["val_accuracy"] = float((clf_head.predict(val_emb.X) == y_val).mean())
    clf = Classifier(clf_head, all_emb.backbone_id, preprocess, cache_key)
    clf.info = {"provenance": clf.provenance(), "training": training,
                "train_sha256": sorted(set(train_emb.shas) | set(val_emb.shas))}
    if clf_head.name == "prototype":
        from .fewshot.transductive import params_for_training_set

        clf.info["transductive"] = params_for_training_set(train_emb.X, y_train, seed=seed).to_dict()
    if shots is not None:
        training["shots"] = shots
        if calibrate:
            log.info("--shots: no calibration or unknown detector (holding out any of the K images would cost accuracy)")
    if calibrate and shots is None:
        from .openworld.fitting import calibrate_and_detect

        calibrated = calibrate_and_detect(clf_head, train_emb.X, y_train, val_emb.X if y_val is not None else None,
                                          y_val, val_split=val_split, seed=seed, ood_method=ood_method,
                                          target_tpr=unknown_tpr)
        if calibrated is None:
            log.warning("too few images to hold out for calibration: confidences stay uncalibrated and "
                        "`predict --unknown auto` is unavailable (add images or a val split)")
        else:
            clf.temperature, clf.info["calibration"], clf.detector = calibrated
        training["seconds"] = round(time.perf_counter() - t0, 2)
    return clf
