"""`finegrain explain MODEL IMAGE... -o DIR`: a Grad-CAM panel PNG per image plus explanations.json."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .options import non_negative_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .common import add_common_options

    p.add_argument("model", type=Path, help="model directory from `finegrain fit`")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for the PNG panels and explanations.json")
    p.add_argument("--class", dest="target", default=None, metavar="NAME",
                   help="explain this class instead of the predicted one")
    p.add_argument("--versus", default=None, metavar="NAME",
                   help="contrast class of the 'why A rather than B' map (default: the runner-up)")
    p.add_argument("--method", action="append", choices=["gradcam", "gradcam++"], default=None,
                   help="heatmap method, repeatable (default: both)")
    p.add_argument("--no-contrast", action="store_true", help="skip the 'why A rather than B' map")
    p.add_argument("--neighbours", type=non_negative_int, default=5, help="nearest training images to show (default 5; 0: none)")
    p.add_argument("--train", default=None,
                   help="training data for the neighbours (default: the data the model was fitted on)")
    add_common_options(p)


def _png_name(i: int, path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:60] or "image"
    return f"{i:04d}_{stem}.png"


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..explain import explain_images, reference_embeddings
    from ..explain.render import explanation_png
    from ..io import write_json
    from ..pipeline import Classifier
    from .common import embed_kwargs

    if args.neighbours < 0:
        raise ConfigError("--neighbours must not be negative", expected="an integer ≥ 0", found=str(args.neighbours),
                          fix="use e.g. --neighbours 5, or 0 for none")
    clf = Classifier.load(args.model)
    reference = reference_embeddings(clf, args.train, cache_dir=args.cache_dir, **embed_kwargs(args)) \
        if args.neighbours else None
    from ..progress import phase

    with phase(f"explaining {len(args.inputs)} input(s)"):
        results = explain_images(clf, args.inputs, target=args.target, versus=args.versus,
                                 methods=tuple(args.method or ("gradcam", "gradcam++")), contrast=not args.no_contrast,
                                 reference=reference, n_neighbours=args.neighbours,
                                 max_pixels=embed_kwargs(args)["max_pixels"])
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, r in enumerate(results):
        row = r.to_dict()
        if r.error is None:
            name = _png_name(i, r.path)
            (out / name).write_bytes(explanation_png(r))
            row["png"] = name
        rows.append(row)
    write_json(out / "explanations.json", {"explanations": rows, "provenance": clf.provenance()})
    for r in results:
        extra = f", rather than {r.versus} ({r.versus_prob:.0%})" if r.versus else ""
        asked = f" [predicted: {r.predicted} ({r.confidence:.0%})]" if r.predicted and r.predicted != r.target else ""
        print(f"{r.path}: error: {r.error}" if r.error else f"{r.path}: {r.target} ({r.target_prob:.0%}){extra}{asked}")
    n_err = sum(r.error is not None for r in results)
    if n_err:
        print(f"finegrain: {n_err} of {len(results)} file(s) could not be read (see explanations.json)", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {len(results) - n_err} explanation panel(s) to {out}", file=sys.stderr)
    return 0
