"""Model soups: one network whose weights are the average of several fine-tuned ingredients (Wortsman et al.).

Ingredients must be fine-tuned from the same start (the same stock backbone, member by member); their tuned
weights are averaged tensor by tensor, then the usual logistic head, temperature and unknown detector are fitted
on the soup's embeddings, as `finetune` does. A soup costs one network at prediction time, unlike an ensemble.

- uniform: every ingredient averaged.
- greedy: ingredients sorted by validation accuracy; each is kept only when adding it does not lower the
  soup's validation accuracy. This needs validation images that *no* ingredient trained on, so greedy soups
  accept only ingredients that held out the same images (`finetune --sweep N` trains such ingredients).

Validation accuracy here is that of a logistic head refitted on the candidate's training embeddings and scored
on the held-out ones (the `val_accuracy` that `fit` records), the same measure for ingredients and soups.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from ..backbones import get_backbone
from ..backbones.composite import SEPARATOR, member_ids
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.sources import DataSet, load_data
from ..errors import ConfigError, DataError
from ..pipeline import Classifier
from ..progress import phase
from ..training import fit
from .settings import DEFAULT_VAL_SPLIT, TrainSettings
from .api import split_for_validation
from .network import base_of, registered, staged_copy, tuned_backbone, tuned_members

log = logging.getLogger("finegrain")
METHODS = ("greedy", "uniform")


@dataclass
class Ingredient:
    """One fine-tuned model folder, as a soup sees it."""

    path: str
    members: list[str]  # tuned backbone ids, one per joined backbone
    val_sha256: list[str] | None  # the images it held out (None: not recorded)
    split: tuple[float, int] | None  # (val_split, split_seed) that drew them
    train_sha256: list[str]  # every image it saw (train and held out)
    val_accuracy: float | None
    data: str | None
    tta: str  # the test-time views its head was fitted with

    @property
    def bases(self) -> list[str]:
        return [base_of(m) for m in self.members]


def read_ingredient(directory: str | Path) -> Ingredient:
    """Load a model folder written by `finegrain finetune` (registering its tuned weights)."""
    clf = Classifier.load(directory)
    members = member_ids(clf.backbone_id)
    ft = clf.info.get("finetune")
    if ft is None or len(tuned_members(clf.backbone_id)) != len(members):
        raise ConfigError(f"{directory} is not a fine-tuned model", expected="a model folder written by "
                          "`finegrain finetune` (every backbone member fine-tuned)", found=f"backbone {clf.backbone_id}",
                          fix="soup only models made with `finegrain finetune` (e.g. by `finetune --sweep 3`)")
    if any(m.get("settings", {}).get("rbi") for m in ft.get("members", [])):
        raise ConfigError(f"{directory} was fine-tuned with --rbi", expected="models fine-tuned without --rbi",
                          found="an RBI head trained with its network",
                          fix="soup models tuned without --rbi: a soup averages the tuned backbones and fits a new "
                              "logistic head, which would silently drop the RBI network")
    training = clf.info.get("training", {})
    split = (float(ft["val_split"]), int(ft["split_seed"])) if "split_seed" in ft else None
    return Ingredient(str(directory), members, ft.get("val_sha256"), split, clf.info.get("train_sha256", []),
                      training.get("val_accuracy"), training.get("data"), clf.tta)


def check_same_start(ingredients: Sequence[Ingredient]) -> None:
    """Weights can be averaged only between networks tuned from the same backbone, member by member."""
    first = ingredients[0]
    for ing in ingredients[1:]:
        if ing.bases != first.bases:
            raise ConfigError("the soup's ingredients were fine-tuned from different backbones",
                              expected=f"every model tuned from {SEPARATOR.join(first.bases)} ({first.path})",
                              found=f"{SEPARATOR.join(ing.bases)} in {ing.path}",
                              fix="soup only models fine-tuned from the same backbone (e.g. `finetune --sweep 3`)")


def common_validation(ingredients: Sequence[Ingredient]) -> tuple[float, int] | None:
    """The (val_split, split_seed) of the images every ingredient held out, when all held out the same images of
    the same data; else None."""
    first = ingredients[0]
    if first.split is None or not first.val_sha256:
        return None
    if any((ing.val_sha256, ing.split, ing.train_sha256) != (first.val_sha256, first.split, first.train_sha256)
           for ing in ingredients[1:]):
        return None
    return first.split


def average_weights(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Tensor-wise mean of floating-point weights (in float32, cast back); counters are taken from the first."""
    out = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            out[name] = torch.stack([s[name].float() for s in states]).mean(0).to(first.dtype)
        else:
            out[name] = first.clone()
    return out


def soup_backbone(ingredients: Sequence[Ingredient]) -> str:
    """Register the averaged network of each member position; returns the soup's (joined) backbone id."""
    ids = []
    for position, base_id in enumerate(ingredients[0].bases):
        states = [registered(ing.members[position]).features.state_dict() for ing in ingredients]
        staged = staged_copy(get_backbone(base_id))
        staged.load_state_dict(average_weights(states), strict=True)
        ids.append(tuned_backbone(get_backbone(base_id), staged).id)
    return SEPARATOR.join(ids)


def held_out_as_test(ds: DataSet) -> DataSet:
    """The training images only, the held-out ('val') ones marked 'test': a head fitted on it never sees them,
    and scoring its 'test' split scores exactly the held-out images (the real test split is left out)."""
    samples = [replace(s, split="test") if s.split == "val" else s for s in ds.samples if s.split != "test"]
    return DataSet(samples, ds.root, ds.kind, ds.empty_classes)


def _validation_accuracy(ds: DataSet, backbone_id: str, fit_kwargs: dict[str, Any]) -> float:
    """Top-1 on the held-out images of a logistic head fitted (its C chosen) on the training images alone."""
    from ..evaluation import evaluate

    data = held_out_as_test(ds)
    clf = fit(data, backbone=backbone_id, head="logistic", calibrate=False, **fit_kwargs)
    embed_kwargs = {k: v for k, v in fit_kwargs.items() if k not in ("seed", "tta")}  # the model embeds with its tta
    return float(evaluate(clf, data, split="test", **embed_kwargs)["top1"])


def greedy_order(accuracies: Sequence[float]) -> list[int]:
    """Indices by validation accuracy, best first (ties keep the given order)."""
    return sorted(range(len(accuracies)), key=lambda i: -accuracies[i])


def soup(models: Sequence[str | Path], data: str | Path | DataSet | None = None, *, method: str = "greedy",
         seed: int = 0, cache_dir: str | Path | None = None, batch_size: int = 32, workers: int = 2,
         max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = False, calibrate: bool = True,
         ood_method: str = "msp", unknown_tpr: float = 0.95, tta: str | None = None) -> Classifier:
    """Average the tuned weights of fine-tuned MODELS (uniform or greedy soup) and fit the head on the result.

    DATA defaults to the data the first ingredient was trained on; `tta` is `fit`'s (the greedy choice is
    scored with it too), by default the first ingredient's. The returned classifier's
    `info["soup"]` lists each ingredient's validation accuracy, the ones kept, and the soup's."""
    if method not in METHODS:
        raise ConfigError(f"unknown soup method '{method}'", expected=" or ".join(METHODS), found=method,
                          fix="use --method greedy or --method uniform")
    if len(models) < 2:
        raise ConfigError("a soup needs at least 2 ingredients", expected="2 or more model folders",
                          found=f"{len(models)}", fix="pass several models fine-tuned from the same start")
    ingredients = [read_ingredient(m) for m in models]
    check_same_start(ingredients)
    split = common_validation(ingredients)
    if split is None and method == "greedy":
        raise ConfigError("a greedy soup needs validation images that no ingredient trained on",
                          expected="ingredients that held out the same images of the same data "
                                   "(`finegrain finetune --sweep N`, or `finegrain.finetune(split_seed=…)` runs)",
                          found="ingredients that held out different images (or did not record them)",
                          fix="train the ingredients with `finetune --sweep N`, or use --method uniform")
    if split is None:
        log.warning("the ingredients held out different images: the soup's calibration uses images some "
                     "ingredients trained on, so its confidences may be over-confident")
    val_split, split_seed = split or (DEFAULT_VAL_SPLIT, seed)
    ds = split_for_validation(_soup_data(data, ingredients[0]), val_split, split_seed)
    fit_kwargs = {"seed": seed, "cache_dir": cache_dir, "batch_size": batch_size, "workers": workers,
                  "max_pixels": max_pixels, "progress": progress, "tta": tta or ingredients[0].tta}
    kept: list[int] = list(range(len(ingredients)))
    accuracies: list[float | None] = [None] * len(ingredients)
    soup_accuracy = None
    if method == "greedy":
        kept, accuracies, soup_accuracy = _greedy(ingredients, ds, fit_kwargs)
    chosen = [ingredients[i] for i in kept]
    with phase(f"fitting the head on the soup of {len(chosen)} ingredient(s)"):
        clf = fit(ds, backbone=soup_backbone(chosen), head="logistic", calibrate=calibrate, ood_method=ood_method,
                  unknown_tpr=unknown_tpr, **fit_kwargs)
    if split is not None:
        _check_same_images(clf, ingredients[0])
    clf.info["soup"] = {"method": method, "ingredients": [i.path for i in ingredients],
                        "ingredient_val_accuracy": accuracies, "kept": [ingredients[i].path for i in kept],
                        "val_accuracy": soup_accuracy,
                        "validation": "the ingredients' common held-out images" if split is not None
                        else "a seeded split some ingredients trained on",
                        "val_split": val_split, "split_seed": split_seed}
    return clf


def _check_same_images(clf: Classifier, first: Ingredient) -> None:
    """The soup must be validated on the very images the ingredients held out: refuse changed data."""
    if sorted(clf.info.get("train_sha256", [])) != sorted(first.train_sha256):
        raise DataError("the data differs from the data the ingredients were fine-tuned on",
                        expected=f"the same images as when {first.path} was trained", found="other images",
                        fix="pass the ingredients' training data unchanged (--data)")


def _soup_data(data: str | Path | DataSet | None, first: Ingredient) -> DataSet:
    if isinstance(data, DataSet):
        return data
    source = data or first.data
    if not source:
        raise DataError("no data to fit the soup's head on", expected="DATA (the ingredients' training data)",
                        found=f"none given, and {first.path} does not record its data",
                        fix="pass the training data: finegrain soup MODELS... --data DATA")
    return load_data(source)


def _greedy(ingredients: Sequence[Ingredient], ds: DataSet,
            fit_kwargs: dict[str, Any]) -> tuple[list[int], list[float | None], float]:
    """Greedy soup (recipe 1 of the paper): best ingredient first; keep each next one if accuracy does not drop."""
    accuracies: list[float | None] = []
    for ing in ingredients:
        with phase(f"validation accuracy of {ing.path}"):
            accuracies.append(_validation_accuracy(ds, SEPARATOR.join(ing.members), fit_kwargs))
    order = greedy_order(accuracies)
    kept, best = [order[0]], accuracies[order[0]]
    for i in order[1:]:
        candidate = [ingredients[j] for j in kept + [i]]
        with phase(f"trying {ingredients[i].path} in the soup"):
            accuracy = _validation_accuracy(ds, soup_backbone(candidate), fit_kwargs)
        log.info("soup of %d: validation accuracy %.4f (best so far %.4f) → %s", len(candidate), accuracy, best,
                 "kept" if accuracy >= best else "left out")
        if accuracy >= best:
            kept, best = kept + [i], accuracy
    return kept, accuracies, best


def sweep(data: str | Path, n: int, folder: str | Path, *, seed: int = 0, settings: TrainSettings | None = None,
          **finetune_kwargs: Any) -> list[Path]:
    """Fine-tune `n` soup ingredients (seeds seed … seed+n-1, all holding out the images of `seed`'s split) into
    FOLDER/seedK; returns their folders. An ingredient already saved by the same sweep is kept, so a rerun
    after an interruption trains only the missing ones (and resumes the one that was cut)."""
    from .api import finetune

    if n < 2:
        raise ConfigError("a sweep needs at least 2 ingredients", expected="--sweep 2 or more", found=str(n),
                          fix="use --sweep 3 (three seeds), or drop --sweep for one model")
    settings = settings or TrainSettings(seed=seed)
    if settings.rbi:
        raise ConfigError("--sweep cannot be combined with --rbi", expected="one of them", found="both",
                          fix="drop --rbi (a soup averages the tuned backbones and fits a new logistic head), or "
                              "drop --sweep")
    key = _sweep_key(data, settings, finetune_kwargs)
    folders = []
    for k in range(n):
        target = Path(folder) / f"seed{seed + k}"
        if _saved_by_sweep(target, key):
            log.info("ingredient %d/%d already trained: %s", k + 1, n, target)
        else:
            with phase(f"ingredient {k + 1}/{n} (seed {seed + k})"):
                clf = finetune(data, seed=seed + k, split_seed=seed, settings=replace(settings, seed=seed + k),
                               **finetune_kwargs)
            clf.info["sweep"] = {"key": key, "index": k, "of": n}
            clf.save(target)
        folders.append(target)
    return folders


def _sweep_key(data: str | Path, settings: TrainSettings, finetune_kwargs: dict[str, Any]) -> str:
    import hashlib
    import json

    recipe = {"data": str(data), "settings": {k: v for k, v in settings.to_dict().items() if k != "seed"},
              "finetune": {k: v for k, v in finetune_kwargs.items() if k not in {"progress", "workers", "batch_size"}}}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _saved_by_sweep(target: Path, key: str) -> bool:
    """True when TARGET is a complete model folder written by the sweep with this recipe."""
    import json

    try:
        config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (config.get("sweep") or {}).get("key") == key
