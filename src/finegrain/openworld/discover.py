"""`discover` as a function: a model's known classes plus unlabelled images → clusters, known and new
(Generalized Category Discovery). `finegrain discover` calls it and writes its files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.images import DEFAULT_MAX_PIXELS
from ..data.sources import collect_inputs, load_data
from ..embed import Embeddings, is_embeddings_dir, load_embeddings
from ..errors import DataError
from ..pipeline import Classifier
from ..progress import phase, progress_scope
from ..store import EmbeddingCache
from .discovery import SemiSupervisedGMM


@dataclass
class Discovery:
    """One row per input image (path, status, cluster, known_class, new, error) in input order, the new
    clusters' members (biggest first) and a JSON-ready summary."""

    rows: list[dict[str, Any]]
    new_clusters: dict[str, list[str]]
    summary: dict[str, Any]


def labelled_embeddings(clf: Classifier, data: str | Path, cache: EmbeddingCache, **embed_kw: Any) -> Embeddings:
    """Embeddings of the labelled train/val images of the model's classes (never the test split)."""
    from ..training import training_samples

    if is_embeddings_dir(data):
        emb = load_embeddings(data)
        clf.check_embeddings(emb)
        has_splits = any(s.split for s in emb.samples)
        emb = emb.subset([not has_splits or s.split in ("train", "val") for s in emb.samples])
    else:
        train, val = training_samples(load_data(data))
        emb = clf.embed(train + val, cache=cache, **embed_kw)
    known = set(clf.classes)
    return emb.subset([s.label in known for s in emb.samples])


def _labelled_source(clf: Classifier, labelled: str | Path | None) -> str:
    data = labelled or clf.info.get("training", {}).get("data")
    if not data or not Path(data).exists():
        raise DataError("discover needs the labelled images of the known classes", expected="--labelled DATA",
                        found=f"{data} (recorded in the model) does not exist" if data else "nothing recorded",
                        fix="pass the training data with --labelled PATH (labelled= in Python)")
    return str(data)


def discover(model: Classifier | str | Path, unlabelled: Sequence[str | Path] | str | Path, *,
             labelled: str | Path | None = None, seed: int = 0, cache_dir: str | Path | None = None,
             batch_size: int = 32, workers: int = 2, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             runtime: str | None = None, progress: bool | None = None) -> Discovery:
    """Cluster UNLABELLED images (files, folders) into the model's known classes and new ones, estimating how
    many are new; `labelled` defaults to the data the model was fitted on. Unreadable images are error rows.

    >>> import finegrain
    >>> clf = finegrain.fit(finegrain.SAMPLE_DATA, backbone="tiny", runtime="torch")
    >>> found = finegrain.discover(clf, finegrain.SAMPLE_DATA + "/test", runtime="torch")
    >>> found.summary["n_images"], found.summary["known_classes"], found.rows[0]["status"]
    (80, 10, 'ok')
    """
    with progress_scope(progress):
        clf = model if isinstance(model, Classifier) else Classifier.load(model)
        data = _labelled_source(clf, labelled)
        samples = collect_inputs([unlabelled] if isinstance(unlabelled, (str, Path)) else list(unlabelled))
        embed_kw = {"batch_size": batch_size, "workers": workers, "max_pixels": max_pixels, "runtime": runtime,
                    "progress": progress}
        with EmbeddingCache(cache_dir) as cache:
            lab = labelled_embeddings(clf, data, cache, **embed_kw)
            unl = clf.embed(samples, cache=cache, **embed_kw)
        if len(unl.samples) == 0:
            raise DataError("no readable unlabelled image", expected="image files among the unlabelled inputs",
                            found=f"{len(unl.errors)} unreadable", fix="point at a folder of images")
        with phase(f"clustering {len(unl.X)} unlabelled images with {len(lab.X)} labelled ones"):
            gmm = SemiSupervisedGMM(seed=seed).fit(lab.X, np.asarray(lab.labels, dtype=object), unl.X)
        return _discovery(clf, samples, unl, lab, gmm)


def _discovery(clf: Classifier, samples: Sequence, unl: Embeddings, lab: Embeddings,
               gmm: SemiSupervisedGMM) -> Discovery:
    """The rows, new clusters and summary `finegrain discover` writes, from the fitted mixture."""
    names = [c if c is not None else f"new_{i - gmm.n_known_ + 1:03d}" for i, c in enumerate(gmm.component_class_)]
    rows = {str(s.path): {"path": str(s.path), "status": "ok", "cluster": names[k],
                          "known_class": gmm.component_class_[k] or "", "new": gmm.component_class_[k] is None,
                          "error": ""} for s, k in zip(unl.samples, gmm.labels_)}
    for e in unl.errors:
        rows[e.path] = {"path": e.path, "status": "error", "cluster": "", "known_class": "", "new": "", "error": e.reason}
    sizes = {names[k]: int(n) for k, n in zip(*np.unique(gmm.labels_, return_counts=True))}
    new = sorted((n for n in sizes if n.startswith("new_")), key=lambda n: -sizes[n])
    members = {n: [str(s.path) for s, k in zip(unl.samples, gmm.labels_) if names[k] == n] for n in new}
    summary = {"n_images": len(samples), "n_unreadable": len(unl.errors), "n_labelled": len(lab.samples),
               "known_classes": len(clf.classes), "known_classes_seen": sum(1 for n in sizes if not n.startswith("new_")),
               "new_clusters": len(new), "estimated_classes": len(clf.classes) + len(new),
               "images_in_new_clusters": int(sum(sizes[n] for n in new)), "cluster_sizes": sizes,
               "params": gmm.get_params(), "split_merge_history": gmm.history_,
               "provenance": clf.provenance(command="discover")}
    return Discovery([rows[str(s.path)] for s in samples], members, summary)
