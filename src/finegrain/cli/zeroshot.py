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


def _unlabelled_embeddings(args: argparse.Namespace, backbone: str):
    """Embeddings of the --unlabelled images (labels, if any, are ignored), or None."""
    if not args.unlabelled:
        return None
    from ..backbones import get_backbone
    from ..data.sources import collect_inputs
    from ..embed import embed_samples
    from ..store import EmbeddingCache

    with EmbeddingCache(args.cache_dir) as cache:
        emb = embed_samples(collect_inputs(args.unlabelled), get_backbone(backbone), cache=cache, **embed_kwargs(args))
    return emb.X


def _common_build(args: argparse.Namespace) -> dict:
    from ..zeroshot.alignment import RefineParams
    from ..zeroshot.texts import read_descriptions, read_templates

    return {"descriptions": read_descriptions(args.descriptions) if args.descriptions else None,
            "templates": read_templates(args.templates), "name_weight": args.name_weight,
            "prompt_temperature": args.prompt_temperature, "refine": RefineParams() if args.adapt else None,
            "cache_dir": args.cache_dir}


def run(args: argparse.Namespace) -> int:
    from ..pipeline import Classifier
    from ..zeroshot.build import build_zeroshot
    from ..zeroshot.texts import read_class_names

    classes = read_class_names(args.classes or args.vocabulary)
    shortlist = args.shortlist if args.shortlist is not None else (50 if args.vocabulary else 0)
    alignment = Classifier.load(args.alignment) if args.alignment else None
    backbone = alignment.backbone_id if alignment is not None else args.backbone
    clf = build_zeroshot(classes, backbone=backbone, text_encoder=args.text_encoder, method=args.method,
                         alignment=alignment, unlabelled=_unlabelled_embeddings(args, backbone), shortlist=shortlist,
                         conse_top=args.conse_top, **_common_build(args))
    clf.save(args.output)
    z = clf.info["zeroshot"]
    info(args, f"zero-shot model ({z['method']}, text encoder {z['text_encoder']}) over {len(classes)} classes, "
                f"{z['n_described']} described, {len(z['templates'])} template(s) → {args.output}")
    if z["method"] == "conse" and args.descriptions and not args.vocabulary:
        print("finegrain zeroshot: warning: without an image–text model (CLIP) or an `align` model, descriptions "
              "cannot reach the image features: expect answers near chance on fine-grained classes. Learn an "
              "alignment on labelled classes with `finegrain align DATA --descriptions FILE -o MODEL`, then pass "
              "--alignment MODEL", file=sys.stderr)
    return 0


def _alignment_embeddings(args: argparse.Namespace):
    """Labelled train/val embeddings of DATA: the test split is never read."""
    from ..backbones import get_backbone
    from ..data.sources import load_data
    from ..embed import embed_samples, is_embeddings_dir, load_embeddings
    from ..store import EmbeddingCache
    from ..training import training_samples

    if is_embeddings_dir(args.data):
        emb = load_embeddings(args.data)
        return emb.subset([s.split in (None, "train", "val") for s in emb.samples])
    train, val = training_samples(load_data(args.data))
    with EmbeddingCache(args.cache_dir) as cache:
        return embed_samples(train + val, get_backbone(args.backbone), cache=cache, **embed_kwargs(args))


def run_align(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..zeroshot.alignment import AlignmentParams
    from ..zeroshot.build import train_alignment
    from ..zeroshot.texts import read_class_names

    if args.descriptions is None:
        raise ConfigError("align needs class descriptions", expected="--descriptions FILE",
                          found="none", fix="pass --descriptions descriptions.csv (class,description[,weight])")
    emb = _alignment_embeddings(args)
    build = _common_build(args)
    descriptions = build.pop("descriptions")
    given = {k: getattr(args, k) for k in ("gamma", "lam", "text_weight") if getattr(args, k) is not None}
    clf = train_alignment(emb, descriptions, classes=read_class_names(args.classes) if args.classes else None,
                          text_encoder=args.text_encoder, params=AlignmentParams(**given) if len(given) == 3 else None,
                          choose_from={k: (v,) for k, v in given.items()}, seen_penalty=args.seen_penalty,
                          unlabelled=_unlabelled_embeddings(args, emb.backbone_id), **build)
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
    from ..data.sources import collect_inputs
    from ..errors import ConfigError
    from ..pipeline import Classifier
    from ..store import EmbeddingCache

    clf = Classifier.load(args.model)
    if clf.head.name != "zeroshot":
        raise ConfigError(f"{args.model} is not a zero-shot model", expected="a model from `finegrain zeroshot` or `align`",
                          found=f"a {clf.head.name} model", fix="describe works with description-based models only")
    samples = collect_inputs(args.inputs)
    with EmbeddingCache(args.cache_dir) as cache:
        emb = clf.embed(samples, cache=cache, **embed_kwargs(args))
    rows = clf.head.explain(emb.X, k=args.top) if len(emb.X) else []
    for s, r in zip(emb.samples, rows):
        if args.format == "jsonl":
            print(json.dumps({"path": str(s.path), **r}, ensure_ascii=False))
        else:
            because = "; ".join(f"{e['text']} ({e['contribution']:+.3f})" for e in r["evidence"]) or "(no descriptors)"
            print(f"{s.path}\t{r['label']}\tscore {r['score']:.3f}\tbecause: {because}")
    for e in emb.errors:
        print(f"finegrain: cannot read {e.path}: {e.reason}", file=sys.stderr)
    return 0
