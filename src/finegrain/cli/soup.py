"""`finegrain soup MODEL1 MODEL2 ... -o SOUP`: average fine-tuned models' weights into one network (model soup)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_calibration_options, add_tta_option


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", type=Path,
                   help="model folders fine-tuned from the same backbone (e.g. the ingredients of `finetune --sweep`)")
    p.add_argument("-o", "--output", required=True, type=Path, help="model directory to write")
    p.add_argument("--data", default=None,
                   help="the ingredients' training data (default: the data recorded in the first model)")
    p.add_argument("--method", choices=["greedy", "uniform"], default="greedy",
                   help="greedy: best ingredient first, keep each next one if validation accuracy does not drop "
                        "(needs ingredients that held out the same images); uniform: average all (default greedy)")
    p.add_argument("--seed", type=int, default=0, help="seed of the head's fit (default 0)")
    add_calibration_options(p)
    add_tta_option(p, default=None, default_says="the first ingredient's")


def run(args: argparse.Namespace) -> int:
    from ..finetune.soup import soup
    from .common import embed_kwargs, save_with_diagram

    kwargs = embed_kwargs(args)
    clf = soup(args.models, args.data, method=args.method, seed=args.seed, cache_dir=args.cache_dir,
               batch_size=kwargs["batch_size"], workers=kwargs["workers"], max_pixels=kwargs["max_pixels"],
               progress=kwargs["progress"],
               calibrate=args.calibrate, ood_method=args.ood_score, tta=args.tta)
    save_with_diagram(args, clf)
    print_soup_summary(args, clf)
    return 0


def print_soup_summary(args: argparse.Namespace, clf) -> None:
    """Each ingredient's validation accuracy, which ones the soup kept, and the soup's own."""
    from .common import info

    s = clf.info["soup"]
    for path, acc in zip(s["ingredients"], s["ingredient_val_accuracy"]):
        mark = "kept" if path in s["kept"] else "left out"
        info(args, f"  {path}: " + (f"validation accuracy {acc:.4f}, " if acc is not None else "") + mark)
    val = s["val_accuracy"]
    info(args, f"{s['method']} soup of {len(s['kept'])}/{len(s['ingredients'])} ingredient(s)"
               + (f": validation accuracy {val:.4f}" if val is not None else "") + f" → {args.output}")
