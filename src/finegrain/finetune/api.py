"""`finetune`: data → stored trunk activations of augmented views → trained upper stages → a tuned backbone →
the usual head, calibration and unknown detector on its embeddings → a `Classifier` like `fit`'s.

The validation images (the val split, or a seeded `val_split` fraction of train per class) are never trained
on: they choose the epoch, the head's regularisation and the calibration, as in `fit`. The test split is
never read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backbones import get_backbone
from ..backbones.composite import SEPARATOR, member_ids
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.sources import DataSet, load_data
from ..errors import ConfigError, DataError
from ..heads.base import stratified_holdout
from ..pipeline import Classifier
from ..cachedir import mark_used, write_about
from ..progress import note, phase, progress_scope
from ..scale.train import RayTrainOptions, engine_options, fit_on_ray
from ..store import default_cache_dir
from ..training import DEFAULT_MAX_ERROR_RATE, _from_images, _labelled, fit, training_samples
from .network import StagedFeatures, staged_copy, tuned_backbone
from .store import ActivationStore, check_disk_space, fill_store, store_key
from .settings import (DEFAULT_FINETUNE_BACKBONE, DEFAULT_FINETUNE_TTA, DEFAULT_TRAIN_BLOCKS, DEFAULT_VAL_SPLIT,
                       TrainSettings)
from .trainer import Batches, TopNetwork, Trainer, class_indices
from .trunk import trunk_runner
from .views import ViewRecipe

log = logging.getLogger("finegrain")
DEFAULT_HEAD_VAL_SPLIT = 0.2  # the head's own C search when nothing is held out (--val-split 0)


def split_for_validation(ds: DataSet, val_split: float, seed: int) -> DataSet:
    """The data with every labelled training sample marked 'train' or 'val' (seeded, stratified per class) when
    it has no val split; other samples (test, unlabelled) are kept as they are and never trained on."""
    train, val = training_samples(ds)
    if val or val_split <= 0:
        marked = {s: replace(s, split="train") for s in train if s.split is None}
        return DataSet([marked.get(s, s) for s in ds.samples], ds.root, ds.kind, ds.empty_classes)
    labelled = [s for s in train if s.label is not None]
    y = np.asarray([s.label for s in labelled], dtype=object)
    _, val_idx = stratified_holdout(y, val_split, seed)
    held = {labelled[i] for i in val_idx}
    no_val = sorted(set(y) - {s.label for s in held})
    if no_val:
        log.warning("%d class(es) have too few images to hold any out for validation (%s); they are trained on "
                    "but not validated — add images, or give a val split", len(no_val), ", ".join(no_val[:5]))
    in_train = set(train)
    out = [replace(s, split="val" if s in held else "train") if s in in_train else s for s in ds.samples]
    return DataSet(out, ds.root, ds.kind, ds.empty_classes)


def _run_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def tune_member(backbone_id: str, train: tuple[list[str], list[str]], val: tuple[list[str], list[str]],
                paths: dict[str, str], classes: list[str], *, train_blocks: int | str, recipe: ViewRecipe,
                settings: TrainSettings, cache_dir: Path, workers: int, max_pixels: int | None, progress: bool,
                runtime: str = "auto", restart: bool = False,
                ray: RayTrainOptions | None = None) -> tuple[str, dict[str, Any], TopNetwork | None]:
    """Fine-tune one backbone on (shas, labels) of train and val; returns the tuned backbone's id, a summary and,
    with RBI, the trained top network (its RBI part becomes the model's head). With `ray`, the epochs run on Ray
    Train workers (finegrain.scale.train)."""
    t0 = time.perf_counter()
    base = get_backbone(backbone_id)
    staged: StagedFeatures = staged_copy(base)
    split = staged.split_index(train_blocks)
    store = ActivationStore(cache_dir / "activations" / store_key(base.cache_key, split, recipe))
    mark_used(store.directory)  # `finegrain cache --prune DAYS` keeps what runs use
    write_about(store.directory, {"backbone": base.id, "split_stage": split, "views": recipe.to_dict()})
    train_shas, train_labels = train
    val_shas, val_labels = val
    runner = trunk_runner(base, staged, split, cache_dir / "onnx", runtime=runtime)
    errors: dict[str, str] = {}
    for shas, n_views, desc in ((train_shas, recipe.n_views, "trunk activations (train)"),
                                (val_shas, 1, "trunk activations (val)")):
        todo = [(sha, paths[sha]) for sha in store.missing(shas, n_views)]
        if todo:
            per_view = store.bytes_per_view() or _bytes_per_view(runner, base.preprocess.size)
            check_disk_space(store.directory, len(todo) * n_views, per_view)
            errors |= fill_store(store, todo, n_views, runner, base.preprocess, recipe, workers=workers,
                                 max_pixels=max_pixels, progress=progress, desc=desc)
    t_store = time.perf_counter() - t0
    keep_t = [i for i, s in enumerate(train_shas) if s not in errors]
    keep_v = [i for i, s in enumerate(val_shas) if s not in errors]
    train_b = Batches([train_shas[i] for i in keep_t], class_indices([train_labels[i] for i in keep_t], classes),
                      recipe.n_views)
    val_b = Batches([val_shas[i] for i in keep_v], class_indices([val_labels[i] for i in keep_v], classes), 1) \
        if keep_v else None
    with torch.random.fork_rng():  # the classifier's initial weights depend on the seed alone
        torch.manual_seed(settings.seed)
        top = TopNetwork([staged.stages[i] for i in range(split, len(staged.stages))], base.embed_dim, len(classes),
                         settings.dropout, rbi=settings if settings.rbi else None)
    for p in top.parameters():
        p.requires_grad_(True)
    run_dir = cache_dir / "finetune-runs" / _run_key(store.directory.name, split, settings.to_dict(), recipe.to_dict(),
                                                     train_b.shas, train_b.y.tolist(), val_b.shas if val_b else [])
    if restart:
        shutil.rmtree(run_dir, ignore_errors=True)
    trainer = Trainer(top, store, settings, run_dir, progress=progress)
    mark_used(run_dir)
    write_about(run_dir, {"backbone": base.id, "seed": settings.seed})
    kept = trainer.finished_state()
    reused = kept is not None
    if kept is None:
        note(f"fine-tuning {base.id}: {len(top.stages)} stage(s) on {len(train_b.shas)} images × "
             f"{recipe.n_views} view(s), {'bf16' if trainer.bf16 else 'fp32'} on {trainer.device}")
        kept = trainer.fit(train_b, val_b) if ray is None else fit_on_ray(trainer, train_b, val_b, ray)
        trainer.save_finished(kept)
    top.load_state_dict(kept)
    top_cpu = top.to("cpu")
    for i, stage in zip(range(split, len(staged.stages)), top_cpu.stages):
        staged.stages[i] = stage
    tuned = tuned_backbone(base, staged)
    summary = {"base": base.id, "backbone": tuned.id, "train_blocks": train_blocks, "split_stage": split,
               "trained_stages": len(top.stages), "views": recipe.to_dict(), "settings": settings.to_dict(),
               "precision": "bf16" if trainer.bf16 else "fp32", "device": str(trainer.device),
               "engine": "local" if ray is None else {"ray_workers": ray.workers, "ray_address": ray.address},
               "history": trainer.history, "best_epoch": trainer.best["epoch"],
               "network_val_accuracy": trainer.best["val_accuracy"] if val_b else None,
               "store": str(store.directory), "store_seconds": round(t_store, 1),
               "train_seconds": round(time.perf_counter() - t0 - t_store, 1), "unreadable_in_store": len(errors),
               "reused_finished_run": reused}
    return tuned.id, summary, top_cpu if top_cpu.rbi is not None else None


def rbi_head(top: TopNetwork, classes: list[str], settings: TrainSettings, epochs: int):
    """The model's head from an RBI-tuned network: its RBI part, read as an `rbi` head reads embeddings."""
    from ..heads.rbi import TunedRBIHead

    return TunedRBIHead(top.rbi, classes, epochs,
                        mode=settings.rbi_mode, rpe=settings.rbi_rpe, batch_size=settings.batch_size,
                        sampler=settings.rbi_sampler, k_per_class=settings.rbi_k, width=settings.rbi_width,
                        heads=settings.rbi_heads, layers=settings.rbi_layers, mlp=True,
                        aux_weight=settings.rbi_aux_weight, dropout=settings.dropout, lr=settings.lr,
                        weight_decay=settings.weight_decay, label_smoothing=settings.label_smoothing,
                        max_epochs=settings.epochs, seed=settings.seed, on_features=True)


def _refuse_unsupported_combinations(settings: TrainSettings, backbone: str, ray: RayTrainOptions | None) -> None:
    if settings.mixoe > 0 and ray is not None:
        raise ConfigError("--mixoe runs in this process only", expected="--engine local with --mixoe",
                          found="--engine ray", fix="drop --engine ray, or drop --mixoe")
    if not settings.rbi:
        return
    if len(member_ids(backbone)) > 1:
        raise ConfigError("--rbi tunes one backbone, and its RBI network becomes the model's head",
                          expected="a single backbone", found=backbone,
                          fix="fine-tune each member with --rbi separately, or drop --rbi for a joined backbone")
    if ray is not None:
        raise ConfigError("--rbi runs in this process only", expected="--engine local with --rbi",
                          found="--engine ray", fix="drop --engine ray (batch attention would see only each "
                                                    "worker's share of a batch), or drop --rbi")


def _bytes_per_view(runner, size: int) -> int:
    probe = runner(np.zeros((1, size, size, 3), dtype=np.uint8))
    return int(np.prod(probe.shape[1:])) * 2


def finetune(data: str | Path | DataSet, *, backbone: str = DEFAULT_FINETUNE_BACKBONE,
             train_blocks: int | str = DEFAULT_TRAIN_BLOCKS, views: int = 8, crop_scale: float = 0.35,
             jitter: float = 0.2, settings: TrainSettings | None = None, val_split: float = DEFAULT_VAL_SPLIT,
             seed: int = 0, cache_dir: str | Path | None = None, batch_size: int = 32, workers: int = 2,
             max_pixels: int | None = DEFAULT_MAX_PIXELS, max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
             progress: bool = False, calibrate: bool = True, ood_method: str = "msp", unknown_tpr: float = 0.95,
             head_params: dict[str, Any] | None = None, runtime: str = "auto", restart: bool = False,
             view_seed: int = 0, engine: str = "local", ray: RayTrainOptions | None = None,
             split_seed: int | None = None, tta: str = DEFAULT_FINETUNE_TTA) -> Classifier:
    """Fine-tune the last `train_blocks` blocks of `backbone` (each member of 'a+b') on DATA's training images,
    then fit the logistic head, temperature and unknown detector on the tuned embeddings.

    The stored views are drawn with `view_seed`, not `seed`: runs that differ only in their seed (an ensemble,
    a soup, a benchmark over seeds) share one activation store. The validation images are drawn with
    `split_seed` (default: `seed`): runs that share it hold out the same images, as a greedy soup needs.
    Re-running the same call after an interruption resumes: stored activations and the last epoch's
    checkpoint are kept in the cache folder (`restart=True` discards the checkpoint).
    `engine='ray'` runs the epochs data-parallel on Ray Train workers (`ray`: where and how many; the cache
    folder must then be on a filesystem every Ray node sees). `tta` is `fit`'s: the test-time views the head
    is fitted on and the model predicts with (the network's training is the same either way, so a run that
    differs only in `tta` reuses the finished tuning)."""
    with progress_scope(progress):
        t0 = time.perf_counter()
        ray = engine_options(engine, ray)
        settings = settings or TrainSettings(seed=seed)
        _refuse_unsupported_combinations(settings, backbone, ray)
        recipe = ViewRecipe(n_views=views, scale_min=crop_scale, jitter=jitter, seed=view_seed)
        split_seed = seed if split_seed is None else split_seed
        ds = split_for_validation(data if isinstance(data, DataSet) else load_data(data), val_split, split_seed)
        cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        with phase("reading and checking the training images"):  # the same refusals as `fit`
            td = _from_images(ds, member_ids(backbone)[0], None, seed, cache_root, max_error_rate, batch_size=batch_size,
                              workers=workers, max_pixels=max_pixels, progress=progress)
        train_emb, val_emb = _labelled(td.train), _labelled(td.val)
        if not train_emb.samples:
            raise DataError(f"no labelled training images in {ds.root}", expected="images in class folders or a label column",
                            found="no labelled images", fix="put each class's images in a folder named after the class")
        classes = sorted(set(train_emb.labels))
        if len(classes) < 2:
            raise DataError("fine-tuning needs at least 2 classes", expected="labelled images of 2 or more classes",
                            found=f"{len(classes)} class", fix="add images of other classes")
        val_emb = val_emb.subset([lab in set(classes) for lab in val_emb.labels])
        paths = dict(zip(train_emb.shas + val_emb.shas, train_emb.samples + val_emb.samples))  # samples: crop boxes travel
        tuned_ids, summaries, tops = [], [], []
        for member in member_ids(backbone):
            tuned, summary, top = tune_member(
                member, (train_emb.shas, train_emb.labels), (val_emb.shas, val_emb.labels), paths, classes,
                train_blocks=train_blocks, recipe=recipe, settings=settings, cache_dir=cache_root, workers=workers,
                max_pixels=max_pixels, progress=progress, runtime=runtime, restart=restart, ray=ray)
            tuned_ids.append(tuned)
            summaries.append(summary)
            tops.append(top)
        if calibrate and not val_emb.samples:
            log.warning("no held-out images (--val-split 0 and no val split): the model keeps uncalibrated confidences "
                        "and has no unknown detector")
        head = "logistic" if tops[0] is None else rbi_head(tops[0], classes, settings,
                                                            summaries[0]["best_epoch"] or settings.epochs)
        with phase("fitting the head and calibration on the tuned embeddings"):
            clf = fit(ds, backbone=SEPARATOR.join(tuned_ids), head=head, head_params=head_params,
                      val_split=val_split if val_split > 0 else DEFAULT_HEAD_VAL_SPLIT, seed=seed, cache_dir=cache_root,
                      batch_size=batch_size, workers=workers, max_pixels=max_pixels, max_error_rate=max_error_rate,
                      progress=progress, calibrate=calibrate and bool(val_emb.samples), ood_method=ood_method,
                      unknown_tpr=unknown_tpr, tta=tta)
        clf.info["finetune"] = {"members": summaries, "val_split": val_split, "seed": seed, "split_seed": split_seed,
                                "val_sha256": sorted(val_emb.shas),
                                "seconds": round(time.perf_counter() - t0, 1)}
        clf.info["training"]["data"] = str(data.root if isinstance(data, DataSet) else data)
        return clf
