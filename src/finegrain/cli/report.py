"""`finegrain report MODEL DATA -o report.html`: one self-contained HTML report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import non_negative_int, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .common import add_common_options

    p.add_argument("model", type=Path, help="model directory from `finegrain fit`")
    p.add_argument("data", help="labelled data as for eval (folder, manifest, CUB folder or `finegrain embed` folder)")
    p.add_argument("-o", "--output", required=True, type=Path, help="HTML file to write")
    p.add_argument("--split", default=None, help="split to report on (default: test when the data has splits, else all)")
    p.add_argument("--train", default=None,
                   help="training data for nearest neighbours (default: DATA's train split, else the model's data)")
    p.add_argument("--mistakes", type=non_negative_int, default=12, help="worst mistakes to explain with Grad-CAM (default 12)")
    p.add_argument("--neighbours", type=non_negative_int, default=3, help="nearest training images per mistake (default 3)")
    p.add_argument("--max-map-points", type=positive_int, default=3000,
                   help="images drawn in the t-SNE map; more are sampled down (default 3000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the t-SNE map and its sampling (default 0)")
    p.add_argument("--index", type=Path, default=None,
                   help="a `finegrain index` folder: also show the worst mistakes' nearest images in it")
    add_common_options(p)


def _check_counts(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    for option, value, low in (("--mistakes", args.mistakes, 0), ("--neighbours", args.neighbours, 0),
                               ("--max-map-points", args.max_map_points, 1)):
        if value < low:
            raise ConfigError(f"{option} must be at least {low}", expected=f"an integer ≥ {low}", found=str(value),
                              fix=f"use e.g. {option} {max(low, 3)}")


def run(args: argparse.Namespace) -> int:
    from ..io import write_text_atomic
    from ..pipeline import Classifier
    from ..report import build_report
    from .common import embed_kwargs

    _check_counts(args)
    clf = Classifier.load(args.model)
    page, summary = build_report(clf, args.data, split=args.split, train=args.train, n_mistakes=args.mistakes,
                                 n_neighbours=args.neighbours, max_map_points=args.max_map_points, seed=args.seed,
                                 index=args.index, cache_dir=args.cache_dir, **embed_kwargs(args))
    write_text_atomic(args.output, page)
    if not args.quiet:
        secs = summary["seconds"]
        print(f"report on {summary['n']} images (top-1 {100 * summary['top1']:.1f}%, {summary['n_findings']} "
              f"dataset finding(s)) written to {args.output} in {sum(secs.values()):.1f}s", file=sys.stderr)
    return 0
