"""`fit`: data → embeddings of the training images → a head → a `Classifier`. Never reads the test split."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import DEFAULT_BACKBONE, get_backbone, member_widths
from .data.health import check_samples, findings_to_json
from .data.images import DEFAULT_MAX_PIXELS
from .data.samples import Sample
from .data.sources import DataSet, load_data
from .embed import Embeddings, embed_with_views, is_embeddings_dir, load_embeddings
from .errors import ConfigError, DataError
from .fewshot.episodes import select_shots
from .heads import DEFAULT_HEAD, head_parameters, make_head
from .heads.base import Head
from .pipeline import Classifier
from .store import EmbeddingCache
from .progress import note, phase, progress_scope
from .threads import solver_threads
from .tta import classifier_views

log = logging.getLogger("finegrain")
DEFAULT_MAX_ERROR_RATE = 0.05


def training_samples(ds: DataSet) -> tuple[list[Sample], list[Sample]]:
    """(train, val): with splits, train and val only — test is never touched; without, everything labelled."""
    ds.require_labels()
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


@dataclass
class TrainingData:
    """Embeddings `fit` learns from: train and val parts, everything read (with errors), and data findings."""

    train: Embeddings
    val: Embeddings
    read: Embeddings
    kind: str
    n_inputs: int
    findings: list = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)


def _from_embeddings_dir(data: str | Path, backbone: str, shots: int | None, seed: int) -> TrainingData:
    emb = load_embeddings(data)
    if emb.backbone_id != backbone:
        raise DataError(f"embeddings in {data} were made with '{emb.backbone_id}'",
                        expected=f"embeddings of --backbone {backbone}", found=emb.backbone_id,
                        fix=f"pass --backbone {emb.backbone_id}, or re-embed with --backbone {backbone}")
    has_splits = any(s.split for s in emb.samples)
    train = emb.subset([s.split == "train" or not has_splits for s in emb.samples])
    val = emb.subset([s.split == "val" for s in emb.samples])
    if shots is not None:
        chosen = set(select_shots(train.samples, shots, seed))
        train = train.subset([s in chosen for s in train.samples])
        val = val.subset([False] * len(val.samples))
    return TrainingData(train, val, emb, "embeddings", len(train.samples) + len(val.samples))


def _from_images(data: str | Path | DataSet, backbone: str, shots: int | None, seed: int,
                 cache_dir: str | Path | None, max_error_rate: float, views: tuple[str, ...] = (),
                 **embed_kw: Any) -> TrainingData:
    ds = data if isinstance(data, DataSet) else load_data(data)
    train, val = training_samples(ds)
    if shots is not None:
        train, val = select_shots(train, shots, seed), []
    with EmbeddingCache(cache_dir) as cache:
        emb = embed_with_views(train + val, get_backbone(backbone), views, cache=cache, desc="embedding train",
                               **embed_kw)
    n_inputs = len(train) + len(val)
    check_error_rate(emb, n_inputs, max_error_rate, "training")
    findings = check_samples(emb.samples, content_hashes=dict(zip((s.path for s in emb.samples), emb.shas)),
                             empty_classes=ds.empty_classes)
    _log_findings(findings)
    return TrainingData(emb.subset([s.split != "val" for s in emb.samples]),
                        emb.subset([s.split == "val" for s in emb.samples]), emb, ds.kind, n_inputs,
                        findings, ds.empty_classes)


def _log_findings(findings) -> None:
    levels = {"error": logging.ERROR, "warning": logging.WARNING}
    for f in findings:
        log.log(levels.get(f.level, logging.INFO), "%s [%s] %s", f.level, f.code, f.message)


def _val_of_known_classes(val: Embeddings, train_labels: set) -> Embeddings:
    """Validation images of classes absent from train cannot score anything: leave them out, loudly."""
    keep = [lab in train_labels for lab in val.labels]
    if not all(keep):
        log.warning("%d validation image(s) belong to classes absent from train; they are ignored", keep.count(False))
    return val.subset(keep)


def _calibrate(clf: Classifier, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None,
               val_split: float, seed: int, ood_method: str, unknown_tpr: float) -> None:
    from .openworld.fitting import calibrate_and_detect

    calibrated = calibrate_and_detect(clf.head, X, y, X_val, y_val, val_split=val_split, seed=seed,
                                      ood_method=ood_method, target_tpr=unknown_tpr)
    if calibrated is None:
        log.warning("too few images to hold out for calibration: confidences stay uncalibrated and "
                    "`predict --unknown auto` is unavailable (add images or a val split)")
    else:
        clf.temperature, clf.info["calibration"], clf.detector = calibrated


def chosen_validation_accuracy(head: Any) -> float | None:
    """The held-out accuracy of the hyper-parameter the head chose, measured before it refitted on train + val
    (heads fold the validation images into their final fit, so scoring those afterwards would say ~1.0)."""
    for record in getattr(head, "validation_", None) or []:
        if isinstance(record, dict) and "C" in record and record["C"] == getattr(head, "C_", None):
            return float(record["val_accuracy"])
    value = getattr(head, "val_accuracy_", None)  # rbi: the chosen epoch's, measured before its refit
    return float(value) if value is not None and np.isfinite(value) else None


def _head(head: str | Head, head_params: dict[str, Any] | None, val_split: float, seed: int) -> tuple[Head, list[str]]:
    """The head to fit and the parameters it accepts: a registered head made with `head_params` (plus the
    validation fraction and seed when it takes them), or a head object given as it is (fine-tuning's RBI)."""
    if isinstance(head, Head):
        return head, []
    params = dict(head_params or {})
    accepted = head_parameters(head)
    for name, value in (("val_fraction", val_split), ("seed", seed)):
        if name in accepted:
            params.setdefault(name, value)
    return make_head(head, **params), accepted


def fit(data: str | Path | DataSet, *, backbone: str = DEFAULT_BACKBONE, head: str | Head = DEFAULT_HEAD,
        head_params: dict[str, Any] | None = None, val_split: float = 0.2, seed: int = 0,
        cache_dir: str | Path | None = None, batch_size: int = 32, workers: int = 2,
        max_pixels: int | None = DEFAULT_MAX_PIXELS, max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
        progress: bool | None = None, calibrate: bool = True, ood_method: str = "msp",
        unknown_tpr: float = 0.95, shots: int | None = None, runtime: str | None = None,
        threads: int | None = None, tta: str = "none") -> Classifier:
    """Fit a classifier on DATA's training images (or on a `finegrain embed` folder of them).

    With `calibrate`, a temperature and an OOD detector (score `ood_method`, threshold keeping `unknown_tpr` of
    held-out known images) are fitted on the val split, or on a held-out `val_split` fraction, and saved with it.
    With `shots`, at most that many labelled training images per class are used (seeded, chosen before any
    image is read; the val split is then ignored, since its labels would be extra shots). `runtime` picks what
    runs the backbone (as `--runtime`); `threads` sets the process's thread budget (as `--threads`).
    `tta` (a key of `finegrain.tta.CLASSIFIER_TTA`: none, flip, rot4, d4): the views every embedding of the
    model averages, from its training images to its predictions.
    `progress`: True shows progress bars and phase lines on stderr, False silences them, None (the default)
    shows no bars and leaves phase lines to the logging configuration (`finegrain.progress`).

    >>> import finegrain
    >>> clf = finegrain.fit(finegrain.SAMPLE_DATA, backbone="tiny", runtime="torch", threads=1)
    >>> len(clf.classes), clf.info["training"]["n_train"]
    (10, 80)
    """
    with progress_scope(progress):
        if threads is not None:
            from .threads import set_thread_budget
            set_thread_budget(threads)
        t0 = time.perf_counter()
        clf_head, accepted = _head(head, head_params, val_split, seed)
        views = classifier_views(tta)
        if not isinstance(data, DataSet) and is_embeddings_dir(data):
            if views:
                raise ConfigError(f"--tta {tta} needs the images themselves", expected="a folder or manifest of images",
                                  found=f"a `finegrain embed` output ({data}), which holds the plain crop alone",
                                  fix="point at the images, or fit with --tta none")
            td = _from_embeddings_dir(data, backbone, shots, seed)
        else:
            td = _from_images(data, backbone, shots, seed, cache_dir, max_error_rate, views=views,
                              batch_size=batch_size, workers=workers, max_pixels=max_pixels, progress=progress,
                              runtime=runtime)
        train_emb = _labelled(td.train)
        if len(train_emb.samples) == 0:
            raise DataError(f"no labelled training images in {data}",
                            expected="images in class folders or a label column",
                            found="only unlabelled images" if td.n_inputs else "no images",
                            fix="put each class's images in a folder named after the class")
        if "blocks" in accepted and "blocks" not in (head_params or {}):
            clf_head.blocks = member_widths(td.read.backbone_id)
        y_train = np.asarray(train_emb.labels, dtype=object)
        val_emb = _val_of_known_classes(_labelled(td.val), set(y_train))
        y_val = np.asarray(val_emb.labels, dtype=object) if val_emb.samples else None
        X_val = val_emb.X if y_val is not None else None
        with solver_threads(), phase(f"fitting the {clf_head.name} head on {len(train_emb.samples)} embeddings"):
            clf_head.fit(train_emb.X, y_train, X_val, y_val)
        training = {
            "data": str(data.root if isinstance(data, DataSet) else data), "data_kind": td.kind,
            "n_train": len(train_emb.samples), "n_val": len(val_emb.samples),
            "n_unreadable": len(td.read.errors), "unreadable": [e.__dict__ for e in td.read.errors[:100]],
            "train_accuracy": float((clf_head.predict(train_emb.X) == y_train).mean()), "seed": seed,
            "val_split": val_split, "class_counts": {c: int((y_train == c).sum()) for c in clf_head.classes_},
            "empty_classes": td.empty_classes, "health": findings_to_json(td.findings),
        }
        held_out_accuracy = chosen_validation_accuracy(clf_head)
        if y_val is not None and held_out_accuracy is not None:
            training["val_accuracy"] = held_out_accuracy
        clf = Classifier(clf_head, td.read.backbone_id, td.read.preprocess, td.read.cache_key)
        clf.info = {"tta": tta} if views else {}  # first: the provenance names it
        clf.info |= {"provenance": clf.provenance(), "training": training,
                     "train_sha256": sorted(set(train_emb.shas) | set(val_emb.shas))}
        if clf_head.name == "prototype":
            from .fewshot.transductive import params_for_training_set, shipped_params

            if shots is not None:
                with phase("learning the transductive EM parameters"):
                    params = params_for_training_set(train_emb.X, y_train, seed=seed)
            else:
                params = shipped_params("fitted without --shots: transductive EM pays off for few-shot models, so its "
                                        "parameters are learned only for them (fit with --shots K)")
            clf.info["transductive"] = params.to_dict()
        if shots is not None:
            training["shots"] = shots
            if calibrate:
                note("--shots: no calibration or unknown detector (holding out any of the K images would cost "
                     "accuracy)")
        elif calibrate:
            with solver_threads(), phase("calibrating and fitting the unknown detector"):
                _calibrate(clf, train_emb.X, y_train, X_val, y_val, val_split, seed, ood_method, unknown_tpr)
        training["seconds"] = round(time.perf_counter() - t0, 2)
        return clf
