"""`finegrain fewshot-eval`: N-way K-shot episodic accuracy, inductive and transductive side by side."""
from __future__ import annotations

import argparse

from .common import embed_kwargs, info
from .options import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..backbones import DEFAULT_BACKBONE
    from ..fewshot.episodes import DEFAULT_DIRICHLET_ALPHA
    from ..fewshot.evaluate import METHODS

    p.add_argument("data", help="labelled data (folder, manifest, CUB-style folder) or a `finegrain embed` folder")
    p.add_argument("--ways", type=positive_int, default=5, help="classes per episode (default 5)")
    p.add_argument("--shots", type=positive_int, default=1, help="labelled images per class in an episode (default 1)")
    p.add_argument("--queries", type=positive_int, default=15, help="query images per class (default 15; the mean when imbalanced)")
    p.add_argument("--episodes", type=positive_int, default=600, help="test episodes (default 600)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes and of the split (default 0)")
    p.add_argument("--imbalanced", action="store_true",
                   help="imbalanced query sets: class proportions drawn from a Dirichlet distribution")
    p.add_argument("--dirichlet-alpha", type=float, default=DEFAULT_DIRICHLET_ALPHA,
                   help=f"concentration of that Dirichlet (default {DEFAULT_DIRICHLET_ALPHA}; smaller = more imbalanced)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {', '.join(METHODS)} (default all)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"backbone id (default {DEFAULT_BACKBONE})")
    p.add_argument("--format", choices=["table", "json"], default="table", help="what to print")
    p.add_argument("--output", default=None, help="also write the JSON report here")


def parse_methods(text: str) -> list[str]:
    from ..errors import ConfigError
    from ..fewshot.evaluate import METHODS

    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"unknown few-shot method(s): {', '.join(unknown) or '(none given)'}",
                          expected=f"a comma-separated subset of {', '.join(METHODS)}", found=text,
                          fix="e.g. --methods prototype,unem")
    return methods


def report_table(report: dict) -> str:
    from ..outputs import text_table

    s = report["setting"]
    rows = [[name, f"{100 * m['accuracy']:.2f} ± {100 * m['ci95']:.2f}", m["description"]]
            for name, m in report["methods"].items()]
    head = (f"{s['ways']}-way {s['shots']}-shot, {s['queries']} queries/class ({s['query_distribution']}), "
            f"{s['episodes']} episodes, seed {s['seed']}\n{report['protocol']}\n")
    return head + text_table(["method", "accuracy % (95% CI)", "what"], rows, align_right=[1])


def run(args: argparse.Namespace) -> int:
    from ..fewshot.evaluate import fewshot_eval
    from ..io import to_json, write_json

    report = fewshot_eval(args.data, backbone=args.backbone, ways=args.ways, shots=args.shots, queries=args.queries,
                          episodes=args.episodes, seed=args.seed,
                          imbalance_alpha=args.dirichlet_alpha if args.imbalanced else None,
                          methods=parse_methods(args.methods), cache_dir=args.cache_dir, **embed_kwargs(args))
    if args.output:
        write_json(args.output, report)
        info(args, f"wrote {args.output}")
    print(to_json(report) if args.format == "json" else report_table(report))
    return 0
