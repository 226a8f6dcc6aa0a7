"""`finegrain zeroshot`, `finegrain align` and `finegrain describe`: classifiers from class names and descriptions.

Argument definitions are light (argparse only); the library is imported when a command runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_common_options, embed_kwargs, info
from .options import positive_int


def _text_options(p: argparse.ArgumentParser) -> None:
    from ..backbones import DEFAULT_BACKBONE

    p.add_argument("--descriptions", type=Path, default=None,
                   help="per-class descriptors: CSV class,description[,weight] or a JSON/YAML mapping")
    p.add_argument("--templates", default=None,
                   help="prompt templates: a built-in set (name, photo, simple, imagenet, birds, plankton) or a file "
                        "with one '{}' template per line (default photo)")
    p.add_argument("--name-weight", type=float, default=0.5,
                   help="share of the class name (vs its descriptions) in each class vector (default 0.5)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help=f"image backbone (default {DEFAULT_BACKBONE}); hf_clip:PATH or open_clip:ARCH/TAG for CLIP models")
    p.add_argument("--unlabelled", nargs="+", default=None, metavar="PATH",
                   help="unlabelled images of the target classes: weight the templates by them without labels")
    p.add_argument("--prompt-temperature", type=float, default=1.0,
                   help="sharpness of the label-free template weights (default 1; larger = closer to uniform)")
    p.add_argument("--adapt", action="store_true",
                   help="also move each class vector toward the unlabelled images it attracts (transductive)")


def add_zeroshot_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--classes", type=Path, help="class names: TXT (one per line), CSV (class column) or JSON/YAML list")
    g.add_argument("--vocabulary", type=Path,
                   help="vocabulary-free mode: a large list of candidate names (retrieve, then re-score)")
    p.add_argument("-o", "--output", required=True, type=Path, help="model directory to write")
    _text_options(p)
    p.add_argument("--text-encoder", default=None,
                   help="text encoder: minilm (offline default), sentence-transformers:DIR, or the CLIP backbone's own")
    p.add_argument("--method", default="auto", choices=["auto", "identity", "conse", "linear"],
                   help="how images reach the text space: identity (CLIP backbones), conse (ImageNet head of "
                        "EfficientNet-Lite), linear (--alignment); auto picks")
    p.add_argument("--alignment", type=Path, default=None, help="model directory from `finegrain align` to reuse")
    p.add_argument("--shortlist", type=positive_int, default=None,
                   help="retrieve this many candidates with one prompt, then re-score them (default 50 with --vocabulary)")
    p.add_argument("--conse-top", type=positive_int, default=10, help="ConSE: ImageNet labels mixed per image (default 10)")
    add_common_options(p)


def add_align_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="labelled images of the classes you have (as for fit); only train/val splits are read")
    p.add_argument("-o", "--output", required=True, type=Path, help="model directory to write")
    p.add_argument("--classes", type=Path, default=None,
                   help="classes the model should recognise (default: the described classes DATA lacks)")
    _text_options(p)
    p.add_argument("--text-encoder", default="minilm", help="text encoder (default minilm, offline)")
    p.add_argument("--gamma", type=float, default=None,
                   help="ridge penalty on the image side (default: chosen on held-out seen classes)")
    p.add_argument("--lam", type=float, default=None,
                   help="ridge penalty on the class-signature side (default: chosen on held-out seen classes)")
    p.add_argument("--text-weight", type=float, default=None,
                   help="weight of the sentence embedding beside the shared descriptor terms in a class signature "
                        "(default: chosen on held-out seen classes)")
    p.add_argument("--seen-penalty", type=float, default=None,
                   help="subtracted from the cosine of the labelled classes when they compete with new ones, here "
                        "or when the model is reused by `zeroshot --alignment` (default: chosen on held-out seen "
                        "classes; 0 turns it off)")
    add_common_options(p)


def add_describe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="a zero-shot model directory (from zeroshot or align)")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("--top", type=positive_int, default=3, help="descriptors shown per image (default 3)")
    p.add_argument("--format", choices=["table", "jsonl"], default="table", help="output format (default table)")
    add_common_options(p)


def _shared(args: argparse.Namespace) -> dict:
    """Keyword arguments `zeroshot` and `align` share, from the options."""
    return {"templates": args.templates, "name_weight": args.name_weight, "unlabelled": args.unlabelled,
            "prompt_temperature": args.prompt_temperature, "adapt": args.adapt, "cache_dir": args.cache_dir,
            **embed_kwargs(args)}


def run(args: argparse.Namespace) -> int:
    from ..zeroshot.api import zeroshot_classifier

    classes = args.classes or args.vocabulary
    clf = zeroshot_classifier(classes, descriptions=args.descriptions, backbone=args.backbone,
                              text_encoder=args.text_encoder, method=args.method, alignment=args.alignment,
                              shortlist=args.shortlist if args.shortlist is not None else (50 if args.vocabulary else 0),
                              conse_top=args.conse_top, **_shared(args))
    clf.save(args.output)
    z = clf.info["zeroshot"]
    info(args, f"zero-shot model ({z['method']}, text encoder {z['text_encoder']}) over {len(clf.classes)} classes, "
                f"{z['n_described']} described, {len(z['templates'])} template(s) → {args.output}")
    if z["method"] == "conse" and args.descriptions and not args.vocabulary:
        print("finegrain zeroshot: warning: without an image–text model (CLIP) or an `align` model, descriptions "
              "cannot reach the image features: expect answers near chance on fine-grained classes. Learn an "
              "alignment on labelled classes with `finegrain align DATA --descriptions FILE -o MODEL`, then pass "
              "--alignment MODEL", file=sys.stderr)
    return 0


def run_align(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..zeroshot.api import align

    if args.descriptions is None:
        raise ConfigError("align needs class descriptions", expected="--descriptions FILE",
                          found="none", fix="pass --descriptions descriptions.csv (class,description[,weight])")
    clf = align(args.data, args.descriptions, classes=args.classes, backbone=args.backbone,
                text_encoder=args.text_encoder, gamma=args.gamma, lam=args.lam, text_weight=args.text_weight,
                seen_penalty=args.seen_penalty, **_shared(args))
    clf.save(args.output)
    a = clf.info["zeroshot"]["alignment"]
    chosen = a["chosen_on_held_out_seen_classes"]
    how = "given" if chosen is None else chosen.get("skipped") or \
        f"chosen on held-out seen classes, held-out top-1 {chosen['held_out_top1']:.3f}"
    info(args, f"aligned on {a['n_train_images']} images of {len(a['trained_on_classes'])} seen classes with "
                f"{a['n_terms']} shared descriptor terms; gamma {a['params']['gamma']:g}, lam {a['params']['lam']:g}, "
                f"text weight {a['params']['text_weight']:g} ({how}); "
                + (f"seen-class penalty {a['seen_penalty']:g}; " if a["seen_penalty"] else "")
                + f"the model recognises {len(clf.classes)} classes → {args.output}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from ..zeroshot.api import describe

    rows = describe(args.model, args.inputs, top=args.top, cache_dir=args.cache_dir, **embed_kwargs(args))
    for r in rows:
        if "error" in r:
            print(f"finegrain: cannot read {r['path']}: {r['error']}", file=sys.stderr)
        elif args.format == "jsonl":
            print(json.dumps(r, ensure_ascii=False))
        else:
            because = "; ".join(f"{e['text']} ({e['contribution']:+.3f})" for e in r["evidence"]) or "(no descriptors)"
            print(f"{r['path']}\t{r['label']}\tscore {r['score']:.3f}\tbecause: {because}")
    return 0
