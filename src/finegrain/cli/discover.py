"""`finegrain discover MODEL_DIR UNLABELLED...`: cluster unlabelled images into the model's known classes and
new ones (Generalized Category Discovery), write one row per image and a gallery of the new clusters."""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from .options import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="model directory from `finegrain fit`")
    p.add_argument("unlabelled", nargs="+", help="folders/files of unlabelled images (known and new classes mixed)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="folder to write clusters.csv, summary.json and gallery.html into")
    p.add_argument("--labelled", default=None,
                   help="labelled data of the known classes (default: the data the model was fitted on)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--gallery-size", type=positive_int, default=12, help="thumbnails per new cluster in gallery.html (default 12)")


def labelled_embeddings(clf, data: str, cache, embed_kw: dict):
    """Embeddings of the labelled train/val images of the model's classes (never the test split)."""
    from ..data.sources import load_data
    from ..embed import is_embeddings_dir, load_embeddings
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


def clusters_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["path", "status", "cluster", "known_class", "new", "error"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.sources import collect_inputs
    from ..errors import DataError
    from ..io import write_json, write_text_atomic
    from ..openworld.discovery import SemiSupervisedGMM
    from ..openworld.gallery import gallery_html
    from ..pipeline import Classifier
    from ..store import EmbeddingCache
    from .common import embed_kwargs

    clf = Classifier.load(args.model)
    data = args.labelled or clf.info.get("training", {}).get("data")
    if not data or not Path(data).exists():
        raise DataError("discover needs the labelled images of the known classes", expected="--labelled DATA",
                        found=f"{data} (recorded in the model) does not exist" if data else "nothing recorded",
                        fix="pass the training data with --labelled PATH")
    kw = embed_kwargs(args)
    samples = collect_inputs(args.unlabelled)
    with EmbeddingCache(args.cache_dir) as cache:
        lab = labelled_embeddings(clf, str(data), cache, kw)
        unl = clf.embed(samples, cache=cache, **kw)
    if len(unl.samples) == 0:
        raise DataError("no readable unlabelled image", expected="image files in " + ", ".join(args.unlabelled),
                        found=f"{len(unl.errors)} unreadable", fix="point at a folder of images")
    from ..progress import phase

    with phase(f"clustering {len(unl.X)} unlabelled images with {len(lab.X)} labelled ones"):
        gmm = SemiSupervisedGMM(seed=args.seed).fit(lab.X, np.asarray(lab.labels, dtype=object), unl.X)
    names = [c if c is not None else f"new_{i - gmm.n_known_ + 1:03d}" for i, c in enumerate(gmm.component_class_)]
    rows = {str(s.path): {"path": str(s.path), "status": "ok", "cluster": names[k],
                          "known_class": gmm.component_class_[k] or "", "new": gmm.component_class_[k] is None,
                          "error": ""} for s, k in zip(unl.samples, gmm.labels_)}
    for e in unl.errors:
        rows[e.path] = {"path": e.path, "status": "error", "cluster": "", "known_class": "", "new": "", "error": e.reason}
    out = Path(args.output)
    write_text_atomic(out / "clusters.csv", clusters_csv([rows[str(s.path)] for s in samples]))
    sizes = {names[k]: int(n) for k, n in zip(*np.unique(gmm.labels_, return_counts=True))}
    new = sorted((n for n in sizes if n.startswith("new_")), key=lambda n: -sizes[n])
    members = {n: [str(s.path) for s, k in zip(unl.samples, gmm.labels_) if names[k] == n] for n in new}
    write_text_atomic(out / "gallery.html", gallery_html([(n, members[n]) for n in new],
                                                         f"New clusters discovered by {args.model}", args.gallery_size))
    summary = {"n_images": len(samples), "n_unreadable": len(unl.errors), "n_labelled": len(lab.samples),
               "known_classes": len(clf.classes), "known_classes_seen": sum(1 for n in sizes if not n.startswith("new_")),
               "new_clusters": len(new), "estimated_classes": len(clf.classes) + len(new),
               "images_in_new_clusters": int(sum(sizes[n] for n in new)), "cluster_sizes": sizes,
               "params": gmm.get_params(), "split_merge_history": gmm.history_,
               "provenance": clf.provenance(command="discover")}
    write_json(out / "summary.json", summary)
    if not args.quiet:
        print(f"{len(unl.samples)} images: {summary['images_in_new_clusters']} in {len(new)} new cluster(s), the rest "
              f"matched to {summary['known_classes_seen']} known class(es) → {out}/clusters.csv, gallery.html",
              file=sys.stderr)
    return 0
