"""The `finegrain` command: thin subcommands, one library call each. Heavy imports happen inside commands."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from .._version import __version__
from . import scale as scale_cli  # argument definitions only: light imports
from .common import (add_common_options, embed_kwargs, expand_inputs, info, lazy, none_readable,
                     parse_head_params, save_with_diagram, unknown_option)
from .options import add_calibration_options, add_tta_option, fraction, positive_float, positive_int

EPILOG = {
    "fit": "examples:\n  finegrain fit data/birds -o models/birds --head logistic --seed 0\n"
           "  finegrain fit data/birds -o models/birds-5shot --shots 5 --seed 0",
    "eval": "example:\n  finegrain eval models/birds data/birds --split test --format table",
    "predict": "examples:\n  finegrain predict models/birds photos/ --top-k 5 --format csv > predictions.csv\n"
               "  finegrain predict models/birds-5shot field_trip/ --transductive\n"
               "  finegrain predict models/birds s3://bucket/photos/ --engine ray --ray-address auto --output s3://bucket/preds/",
    "embed": "examples:\n  finegrain embed data/birds -o embeddings/birds --backbone efficientnet_lite0\n"
             "  finegrain embed data/birds -o shards/birds --engine ray --ray-actors 3   # Parquet shards, resumable",
    "check": "example:\n  finegrain check data/birds",
    "backbones": "example:\n  finegrain backbones",
    "cache": "examples:\n  finegrain cache\n  finegrain cache --prune 30 --dry-run   # what would go\n"
             "  finegrain cache --prune 30             # remove what no run used in 30 days",
    "zeroshot": "examples:\n  finegrain zeroshot --classes birds.txt --descriptions birds.csv -o models/zs\n"
                "  finegrain zeroshot --vocabulary names.txt --alignment models/aligned -o models/open",
    "align": "example:\n  finegrain align data/birds --descriptions birds.csv --classes new_birds.txt -o models/aligned",
    "describe": "example:\n  finegrain describe models/aligned photo.jpg --top 3",
    "demo": "example:\n  finegrain demo -o demo-output",
    "discover": "example:\n  finegrain discover models/birds photos/unsorted -o discovered/",
    "explain": "examples:\n  finegrain explain models/birds photo.jpg -o explanations/\n"
               "  finegrain explain models/birds photo.jpg -o why/ --class Hooded_Oriole --versus Orchard_Oriole",
    "report": "example:\n  finegrain report models/birds data/birds -o report.html",
    "export": "examples:\n  finegrain export models/birds -o birds.onnx\n"
              "  finegrain export models/birds -o birds-int8.onnx --int8 --check data/birds",
    "finetune": "examples:\n  finegrain finetune data/birds -o models/birds-tuned --seed 0\n"
                "  finegrain finetune data/birds -o models/birds-fast --backbone efficientnet_lite0 --tta none  # 224 px, 1 pass\n"
                "  finegrain finetune data/plankton -o models/plankton --backbone efficientnet_lite0@pad --tta d4\n"
                "  finegrain predict models/birds-tuned photos/   # the tuned network travels in the model folder",
    "soup": "examples:\n  finegrain finetune data/birds -o models/birds-soup --sweep 3   # trains 3 ingredients, soups them\n"
            "  finegrain soup models/a models/b models/c -o models/birds-soup --method greedy",
    "serve": "examples:\n  finegrain serve models/birds   # then open http://127.0.0.1:8000/\n"
             "  finegrain serve birds=models/birds plankton=models/plankton --port 8080 --api-key SECRET\n"
             "  finegrain serve models/birds --index birds.index   # the page shows the nearest indexed photos\n"
             "  curl -F files=@photo.jpg 'http://127.0.0.1:8000/v1/models/birds/predict?top_k=5'",
    "fewshot-eval": "examples:\n  finegrain fewshot-eval data/birds --ways 5 --shots 1 --queries 15 --episodes 600 --seed 0\n"
                    "  finegrain fewshot-eval embeddings/birds --ways 5 --shots 1 --imbalanced --format json",
}


def cmd_fit(args: argparse.Namespace) -> int:
    from ..training import fit

    head_params = parse_head_params(args.head_param)
    if args.C is not None:
        head_params["C"] = args.C
    if args.k is not None:
        head_params["k"] = args.k
    args.head = args.head or ("prototype" if args.shots is not None else "logistic")
    clf = fit(args.data, backbone=args.backbone, head=args.head, head_params=head_params, val_split=args.val_split,
              seed=args.seed, cache_dir=args.cache_dir, max_error_rate=args.max_error_rate,
              calibrate=args.calibrate, ood_method=args.ood_score, unknown_tpr=args.unknown_tpr, shots=args.shots,
              tta=args.tta, **embed_kwargs(args))
    save_with_diagram(args, clf)
    t = clf.info["training"]
    held = f"{t['n_val']} in the val split" if t["n_val"] else \
        f"{clf.info['calibration']['n']} held out of train for calibration" if "calibration" in clf.info else "none held out"
    info(args, f"fitted {args.head} head on {t['n_train']} images of {len(clf.classes)} classes "
                f"({held}, {t['n_unreadable']} unreadable) in {t['seconds']:.1f}s → {args.output}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate
    from ..io import to_json, write_json
    from ..outputs import eval_table
    from ..pipeline import Classifier

    clf = Classifier.load(args.model).variant(head_mode=args.head_mode)
    report = evaluate(clf, args.data, split=args.split, top_k=args.top_k, cache_dir=args.cache_dir, **embed_kwargs(args))
    if args.output:
        write_json(args.output, report)
    if args.format == "json":
        print(to_json(report))
    else:
        print(eval_table(report))
    if args.output:
        info(args, f"full results (JSON): {args.output}")
    return 0


TABLE_TOP_K, TABLE_WIDTH = 3, 100  # the default predict table fits a 100-column terminal; --wide shows everything


def cmd_predict(args: argparse.Namespace) -> int:
    from ..io import write_text_atomic
    from ..outputs import predictions_csv, predictions_jsonl, predictions_table
    from ..pipeline import Classifier
    from ..store import EmbeddingCache

    if scale_cli.uses_ray(args):
        return ray_job("predict", args)
    args.inputs = expand_inputs(args.inputs)
    clf = Classifier.load(args.model).variant(head_mode=args.head_mode, transductive=args.transductive)
    with EmbeddingCache(args.cache_dir) as cache:
        preds = clf.predict(args.inputs, top_k=args.top_k, cache=cache, unknown=args.unknown, **embed_kwargs(args))
    k = min(args.top_k, len(clf.classes))
    prov = clf.provenance()
    narrow = {"top_k": min(k, TABLE_TOP_K), "width": TABLE_WIDTH} if not args.wide else {"top_k": k}
    text = {"table": lambda: predictions_table(preds, **narrow) + "\n", "csv": lambda: predictions_csv(preds, k, prov),
            "jsonl": lambda: predictions_jsonl(preds, prov)}[args.format]()
    if args.output:
        write_text_atomic(args.output, text)
        info(args, f"wrote {len(preds)} predictions to {args.output}")
    else:
        sys.stdout.write(text)
    if args.unknown == "auto" and clf.detector is not None:
        d = clf.detector
        info(args, f"unknown when the {d.method} score is below {d.threshold_:.4f} (the threshold saved at fit: "
                    f"it keeps {d.target_tpr:.0%} of held-out known images)")
    n_err = sum(p.error is not None for p in preds)
    if n_err == len(preds):
        return none_readable("predict", preds[0].path, preds[0].error, n_err)
    if n_err:
        print(f"finegrain: {n_err} of {len(preds)} file(s) could not be read (rows marked error)", file=sys.stderr)
    return 0


def ray_job(command: str, args: argparse.Namespace) -> int:
    """`--engine ray`: the same command as a Ray Data job writing Parquet shards (cli/scale.py)."""
    if command == "predict":
        args.inputs = expand_inputs(args.inputs, allow_uris=True)
    result = scale_cli.run(command, args)
    if result.none_readable:
        return none_readable(command, *result.first_error, result.n_rows)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from ..backbones import get_backbone
    from ..data.sources import load_data
    from ..embed import embed_samples, save_embeddings
    from ..provenance import provenance
    from ..store import EmbeddingCache

    if scale_cli.uses_ray(args):
        return ray_job("embed", args)
    ds = load_data(args.data)
    samples = ds.select(args.split) if args.split else ds.samples
    bb = get_backbone(args.backbone)
    with EmbeddingCache(args.cache_dir) as cache:
        emb = embed_samples(samples, bb, cache=cache, **embed_kwargs(args))
    if not emb.samples:
        first = emb.errors[0] if emb.errors else None
        return none_readable("embed", first.path if first else str(args.data),
                             first.reason if first else "no image files found", len(emb.errors))
    labels = sorted({s.label for s in emb.samples if s.label})
    save_embeddings(emb, args.output, provenance(bb.id, bb.preprocess.to_dict(), labels, data=str(args.data)))
    info(args, f"embedded {len(emb.samples)} images ({emb.n_cached} from cache, {emb.n_computed} computed, "
                f"{len(emb.errors)} unreadable) → {args.output}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ..data.check import check_data
    from ..data.health import findings_to_json, format_findings
    from ..io import to_json

    ds, findings = check_data(args.data)
    if args.format == "json":
        print(to_json({"data": str(args.data), "kind": ds.kind, "n_images": len(ds.samples),
                       "classes": len(ds.classes), "splits": ds.splits, "findings": findings_to_json(findings)}))
    else:
        print(f"{args.data}: {ds.kind}, {len(ds.samples)} images, {len(ds.classes)} classes, "
              f"splits: {', '.join(ds.splits) or 'none'}")
        print(format_findings(findings) if findings else "no problems found")
    return 1 if any(f.level == "error" for f in findings) else 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from ..backbones import DEFAULT_BACKBONE, list_backbones
    needs = {"hf_clip": ":DIR  (a Hugging Face CLIP-family model folder; pip install 'finegrain[clip]')",
             "open_clip": ":ARCH/TAG  (an open_clip model; needs open_clip and its weights)",
             "finetuned": ":BASE.HASH  (written by `finegrain finetune`; pass its model folder as --backbone)"}
    for name in list_backbones():
        print(name + ("  (default)" if name == DEFAULT_BACKBONE else needs.get(name, "")))
    if not args.quiet:
        print("join ids with '+' to use several side by side, e.g. efficientnet_lite0+efficientnet_lite2 "
              "(more accurate, slower, no Grad-CAM)", file=sys.stderr)
        print("add '@SIZE' for another input size, '@SIZE-whole' (or '@whole') to keep the whole shorter side "
              "instead of the 87.5 % centre crop, e.g. efficientnet_lite0@320-whole (photos cropped to their "
              "subject; more accurate, ~2x slower), '@pad' to letterbox the whole image (subjects of every shape "
              "on a plain background, such as plankton)", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    summary = run_demo(args.output, backbone=args.backbone, cache_dir=args.cache_dir, progress=not args.quiet)
    print(summary["text"])
    info(args, f"summary: {Path(args.output) / 'summary.html'} and summary.json; full report: "
                f"{Path(args.output) / 'report.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..backbones import DEFAULT_BACKBONE  # light: no torch import

    parser = argparse.ArgumentParser(prog="finegrain", description="Fine-grained image classification, offline, on a CPU.")
    parser.add_argument("--version", action="version", version=f"finegrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_.replace("%%", "%"), epilog=EPILOG.get(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=fn)
        return p

    p = add("fit", cmd_fit, "fit a classifier on a folder-per-class tree, a CSV/Parquet manifest or a CUB-style folder")
    p.add_argument("data", help="folder, manifest (.csv/.parquet), CUB-style folder, or a `finegrain embed` folder")
    p.add_argument("-o", "--output", required=True, type=Path, help="model directory to write")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"backbone id (default {DEFAULT_BACKBONE}; see `finegrain backbones`)")
    p.add_argument("--head", default=None, help="classifier head: logistic (default), prototype (alias ncm; default with --shots), knn, rbi (experimental), mixoe (outlier-exposed linear head for open-set use)")
    p.add_argument("--shots", type=positive_int, default=None, metavar="K",
                   help="few-shot: use at most K labelled training images per class, drawn with --seed (only those are read)")
    p.add_argument("--val-split", type=fraction(True, True), default=0.2, help="fraction of train held out to choose hyper-parameters when DATA has no val split (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--C", type=positive_float, default=None, help="logistic: fixed inverse regularisation (default: chosen on validation)")
    p.add_argument("-k", type=positive_int, default=None, help="knn: number of neighbours (default 10)")
    p.add_argument("--head-param", action="append", metavar="KEY=VALUE",
                   help="any head parameter, repeatable (e.g. --head-param shrinkage=0.2)")
    p.add_argument("--max-error-rate", type=fraction(False, False), default=0.05, help="fail when more than this fraction of images is unreadable (default 0.05)")
    add_calibration_options(p)
    add_tta_option(p)
    p.add_argument("--unknown-tpr", type=fraction(True, False), default=0.95,
                   help="`--unknown auto` keeps this fraction of held-out known images (default 0.95)")
    add_common_options(p)

    p = add("eval", cmd_eval, "evaluate a model on labelled data (the test split by default)")
    p.add_argument("model", type=Path, help="model directory from `finegrain fit`")
    p.add_argument("data", help="labelled data, as for fit")
    p.add_argument("--split", default=None, help="split to evaluate (default: test when the data has splits, else all)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="what to print (default table)")
    p.add_argument("--output", type=Path, default=None,
                   help="also write the full JSON results there (per-class table, confusion, provenance)")
    p.add_argument("--top-k", type=positive_int, default=5, help="k of the top-k accuracy (default 5)")
    p.add_argument("--head-mode", default=None, help="rbi models: single, bank, transductive or plain (default: the mode saved at fit)")
    add_common_options(p)

    p = add("predict", cmd_predict, "predict the top-k classes of images (files, folders or a manifest)")
    p.add_argument("model", type=Path, help="model directory from `finegrain fit`")
    p.add_argument("inputs", nargs="+", help="image files and/or folders; '-' reads paths from stdin, one per line")
    p.add_argument("--top-k", type=positive_int, default=5, help="labels per image (default 5)")
    p.add_argument("--head-mode", default=None, help="rbi models: single, bank, transductive or plain (default: the mode saved at fit)")
    p.add_argument("--transductive", action="store_true",
                   help="prototype models: classify all INPUTS together as one unlabelled set (EM with a learned "
                        "class-balance term); answers then depend on which images are passed together, not on their order")
    p.add_argument("--unknown", type=unknown_option, default=None, metavar="auto|THRESHOLD",
                   help="answer 'unknown' when the OOD score is below THRESHOLD; auto: the threshold saved at fit")
    p.add_argument("--format", choices=["table", "csv", "jsonl"], default="table", help="output format (default table)")
    p.add_argument("--wide", action="store_true",
                   help="table: every top-k column and full paths (default: top-3, paths shortened to fit 100 columns)")
    p.add_argument("--output", default=None, help="write to this file instead of stdout (--engine ray: a folder "
                                                  "or object-store URI for Parquet shards)")
    add_common_options(p)
    scale_cli.add_engine_options(p)

    p = add("embed", cmd_embed, "embed images once into a folder every command can reuse")
    p.add_argument("data", help="data as for fit")
    p.add_argument("-o", "--output", required=True,
                   help="embeddings folder to write (--engine ray: a folder or object-store URI for Parquet shards)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"backbone id (default {DEFAULT_BACKBONE})")
    p.add_argument("--split", action="append", default=None, help="only these splits (repeatable; default all)")
    add_common_options(p)
    scale_cli.add_engine_options(p)

    p = add("check", cmd_check, "report dataset problems: tiny/empty classes, duplicates and leaks, label typos")
    p.add_argument("data", help="data as for fit")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")

    p = add("backbones", cmd_backbones, "list the available backbones")
    p.add_argument("-q", "--quiet", action="store_true", help="no hint on stderr, only the list")

    p = add("demo", cmd_demo, "the main job on the bundled sample: fit, evaluate, predict, write an HTML/JSON summary")
    p.add_argument("-o", "--output", type=Path, default=Path("demo-output"), help="output folder (default demo-output)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"backbone id (default {DEFAULT_BACKBONE})")
    p.add_argument("--cache-dir", type=Path, default=None, help="embedding cache folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    from . import explain as explain_cli, report as report_cli  # argument definitions only: light imports
    explain_cli.add_arguments(add("explain", lazy("finegrain.cli.explain"),
                                  "Grad-CAM heatmaps, a 'why A rather than B' map and nearest training images"))
    report_cli.add_arguments(add("report", lazy("finegrain.cli.report"),
                                 "one self-contained HTML report: metrics, plots, worst mistakes explained, data health"))
    from . import export as export_cli  # argument definitions only: light imports
    export_cli.add_arguments(add("export", lazy("finegrain.cli.export"),
                                 "write a model as one ONNX file: uint8 image → calibrated probabilities"))
    from . import finetune as finetune_cli  # argument definitions only: light imports
    p = add("finetune", lazy("finegrain.cli.finetune"),
            "fine-tune the last blocks of the backbone on stored trunk activations of augmented views, then fit the head")
    finetune_cli.add_arguments(p)
    add_common_options(p)
    from . import soup as soup_cli  # argument definitions only: light imports
    p = add("soup", lazy("finegrain.cli.soup"),
            "average the weights of models fine-tuned from the same start into one (uniform or greedy model soup)")
    soup_cli.add_arguments(p)
    add_common_options(p)
    from . import fewshot as fewshot_cli  # argument definitions only: light imports
    p = add("fewshot-eval", lazy("finegrain.cli.fewshot"),
            "N-way K-shot episodic accuracy ± 95%% CI: inductive prototypes/logistic vs transductive EM (UNEM)")
    fewshot_cli.add_arguments(p)
    add_common_options(p)
    from . import discover as discover_cli  # argument definitions only: light imports
    p = add("discover", lazy("finegrain.cli.discover"),
            "cluster unlabelled images into known and NEW classes, estimating how many new ones (GCD)")
    discover_cli.add_arguments(p)
    add_common_options(p)
    from . import serve as serve_cli  # argument definitions only: light imports
    serve_cli.add_arguments(add("serve", lazy("finegrain.cli.serve"),
                                "HTTP API (JSON, OpenAPI) and a web page for one or more models"))
    from . import zeroshot as zeroshot_cli  # argument definitions only: light imports
    zeroshot_cli.add_zeroshot_arguments(add("zeroshot", lazy("finegrain.cli.zeroshot"),
                                            "a classifier from class names and descriptions, without labelled images"))
    zeroshot_cli.add_align_arguments(add("align", lazy("finegrain.cli.zeroshot", "run_align"),
                                         "learn image→text alignment on labelled classes, recognise described new ones"))
    zeroshot_cli.add_describe_arguments(add("describe", lazy("finegrain.cli.zeroshot", "run_describe"),
                                            "predict with a zero-shot model and show the descriptors behind each answer"))
    from . import cache as cache_cli  # argument definitions only: light imports
    cache_cli.add_arguments(add("cache", lazy("finegrain.cli.cache"),
                                "what the cache folder holds, and --prune DAYS to remove what no run used lately"))
    from . import retrieval as retrieval_cli  # argument definitions only: light imports
    EPILOG.update(retrieval_cli.EPILOG)
    p = add("index", lazy("finegrain.cli.retrieval", "run_index"),
            "index a collection for similar-image search (exact, HNSW, or PQ/binary/float16 codes)")
    retrieval_cli.add_index_arguments(p)
    add_common_options(p)
    p = add("search", lazy("finegrain.cli.retrieval", "run_search"),
            "the most similar indexed images to each query image, with distance, label and path")
    retrieval_cli.add_search_arguments(p)
    add_common_options(p)
    retrieval_cli.add_duplicates_arguments(add("duplicates", lazy("finegrain.cli.retrieval", "run_duplicates"),
                                               "near-duplicate pairs in an index, and label disagreements between them"))
    p = add("eval-retrieval", lazy("finegrain.cli.retrieval", "run_eval"),
            "Recall@K, precision@K and mAP@R of a split's images as queries against an index")
    retrieval_cli.add_eval_arguments(p)
    add_common_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..errors import FinegrainError
    from ..provenance import set_command_line

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the sub-command's own usage, not the top-level one
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    set_command_line(argv)
    if getattr(args, "quiet", False):  # third-party bars too (tqdm, Hugging Face downloads/loading)
        import os
        os.environ.update(TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="finegrain: %(message)s", stream=sys.stderr, force=True)
    if getattr(args, "runtime", None):  # process-wide, so every library call a command makes follows it
        from ..backbones.onnx_runtime import set_default_runtime
        set_default_runtime(args.runtime)
    try:
        from ..threads import set_thread_budget, solver_threads
        set_thread_budget(getattr(args, "threads", None))
        with solver_threads():
            return args.func(args)
    except FinegrainError as exc:
        print(f"finegrain {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("finegrain: interrupted (finished batches are cached; rerun to resume)", file=sys.stderr)
        return 130
