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


def clusters_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["path", "status", "cluster", "known_class", "new", "error"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    from ..io import write_json, write_text_atomic
    from ..openworld.discover import discover
    from ..openworld.gallery import gallery_html
    from .common import embed_kwargs

    found = discover(args.model, args.unlabelled, labelled=args.labelled, seed=args.seed, cache_dir=args.cache_dir,
                     **embed_kwargs(args))
    out = Path(args.output)
    write_text_atomic(out / "clusters.csv", clusters_csv(found.rows))
    write_text_atomic(out / "gallery.html", gallery_html(list(found.new_clusters.items()),
                                                         f"New clusters discovered by {args.model}", args.gallery_size))
    write_json(out / "summary.json", found.summary)
    s = found.summary
    if not args.quiet:
        print(f"{s['n_images'] - s['n_unreadable']} images: {s['images_in_new_clusters']} in {s['new_clusters']} new "
              f"cluster(s), the rest matched to {s['known_classes_seen']} known class(es) → {out}/clusters.csv, "
              "gallery.html", file=sys.stderr)
    return 0
