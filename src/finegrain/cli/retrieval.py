"""`finegrain index`, `search`, `duplicates` and `eval-retrieval`: similar-image search over a collection."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import embed_kwargs, expand_inputs, info, none_readable
from .options import positive_float, positive_int

EPILOG = {
    "index": "examples:\n  finegrain index data/birds -o birds.index --split train\n"
             "  finegrain index data/birds -o birds-pq.index --codes pq          # 64 bytes per image\n"
             "  finegrain index data/birds -o birds-pq.index --codes pq --rerank 10  # + float16 vectors on disk\n"
             "  finegrain index data/birds -o birds.index --split train --tta whole+flip  # 4 views per image\n"
             "  finegrain index new_photos/ -o birds.index --add                 # append\n"
             "  finegrain index -o birds.index --drop-missing                    # forget deleted files\n"
             "  finegrain index data/birds -o tuned.index --model models/birds-tuned",
    "search": "examples:\n  finegrain search birds.index photo.jpg --k 5\n"
              "  finegrain search birds.index doubtful/ --same-class-only --exclude-duplicates --format csv",
    "duplicates": "examples:\n  finegrain duplicates birds.index --threshold 0.05\n"
                  "  finegrain duplicates birds.index --mislabels-only --format csv > suspects.csv",
    "eval-retrieval": "example:\n  finegrain eval-retrieval birds.index data/birds --split test",
}


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    from ..retrieval.settings import APPROXIMATE_ABOVE, CODES, TRANSFORMS, TTA

    p.add_argument("data", nargs="?", default=None,
                   help="images to index: folder, manifest, CUB-style folder or a `finegrain embed` folder")
    p.add_argument("-o", "--output", required=True, type=Path, help="index folder to write (or update)")
    p.add_argument("--add", action="store_true", help="append DATA's new images to the existing index at -o")
    p.add_argument("--drop-missing", action="store_true", help="drop indexed images whose file no longer exists")
    p.add_argument("--backbone", default=None, help="backbone id or fine-tuned model folder (default efficientnet_lite0)")
    p.add_argument("--model", default=None, type=Path, help="embed with this model's backbone (a fit/finetune folder)")
    p.add_argument("--split", action="append", default=None, help="only these splits (repeatable; default all)")
    p.add_argument("--codes", choices=CODES, default="float32",
                   help="how vectors are stored: float32 (default), float16 (half), pq (≤ 64 bytes per image, "
                        "approximate distances) or binary (1 bit per dimension)")
    p.add_argument("--rerank", type=positive_int, default=None, metavar="N",
                   help="with --codes pq: also write the vectors as float16 beside the index (2 bytes × dim per "
                        "image on disk, memory-mapped, not loaded) and re-score faiss's N × k best exactly from "
                        "them; at 1M vectors 10 (100 candidates for k=10) kept Recall@10 0.97 of exact, 20 kept "
                        "0.997, plain PQ 0.40 (benchmarks/retrieval.py)")
    p.add_argument("--approximate", action=argparse.BooleanOptionalAction, default=None,
                   help=f"HNSW graph (IVF for pq) instead of exact search (default: above {APPROXIMATE_ABOVE:,} images)")
    p.add_argument("--transform", choices=TRANSFORMS, default="auto",
                   help="embedding space: l2 (cosine), sqrt (power-normalised), whiten (sqrt + within-class "
                        "whitening learned on the labelled gallery); auto (default): whiten when labelled, else sqrt")
    p.add_argument("--dim", type=positive_int, default=None, help="whiten: keep this many principal components")
    p.add_argument("--tta", choices=list(TTA), default=None,
                   help="test-time views averaged with each image's plain crop (one network pass each, cached; "
                        "queries are embedded the same way): flip its mirror image, whole the whole image, "
                        "whole+flip both and the whole image mirrored (cub100 Recall@1 0.877 / 0.880 / 0.889 "
                        "against 0.866); default none")


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    from ..retrieval.settings import DUPLICATE_THRESHOLDS

    p.add_argument("index", type=Path, help="index folder from `finegrain index`")
    p.add_argument("inputs", nargs="+", help="query image files and/or folders; '-' reads paths from stdin")
    p.add_argument("--k", "-k", type=positive_int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--same-class-only", action="store_true",
                   help="only neighbours of the query's class (its label when labelled, else the majority of its k nearest)")
    p.add_argument("--exclude-duplicates", action="store_true",
                   help="leave out the query itself and its near-copies (same file content or distance ≤ --threshold)")
    p.add_argument("--threshold", type=positive_float, default=None,
                   help=f"near-duplicate distance for --exclude-duplicates (default per index transform: "
                        f"{', '.join(f'{k} {v}' for k, v in DUPLICATE_THRESHOLDS.items())})")
    p.add_argument("--format", choices=["table", "csv", "jsonl"], default="table", help="output format (default table)")
    p.add_argument("--backbone", default=None, help="embed queries with this backbone (default: the index's; "
                                                     "another one is refused)")
    p.add_argument("--model", default=None, type=Path, help="embed queries with this model's backbone")


def add_duplicates_arguments(p: argparse.ArgumentParser) -> None:
    from ..retrieval.settings import DUPLICATE_THRESHOLDS

    p.add_argument("index", type=Path, help="index folder from `finegrain index`")
    p.add_argument("--threshold", type=positive_float, default=None,
                   help=f"largest distance (1 − cosine in the index's space) of a near-duplicate pair (default per "
                        f"index transform: {', '.join(f'{k} {v}' for k, v in DUPLICATE_THRESHOLDS.items())}; "
                        f"an index built with --transform sqrt separates copies best)")
    p.add_argument("--k", "-k", type=positive_int, default=10, help="neighbours examined per image (default 10)")
    p.add_argument("--mislabels-only", action="store_true", help="only pairs whose labels disagree")
    p.add_argument("--format", choices=["table", "csv", "jsonl"], default="table", help="output format (default table)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress notes")


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", type=Path, help="index folder (the gallery; build it from the train split)")
    p.add_argument("data", help="labelled data holding the queries")
    p.add_argument("--split", default="test", help="queries' split (default test; all images when DATA has no splits)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="what to print (default table)")
    p.add_argument("--output", type=Path, default=None, help="also write the JSON results there")


def run_index(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..retrieval.api import build_index, update_index

    if (args.add or args.drop_missing) and not (args.output / "index.json").exists():
        raise ConfigError(f"no index at {args.output} to update", expected="an index folder written by "
                          "`finegrain index DATA -o INDEX`", found="no index.json there",
                          fix="build it first without --add/--drop-missing")
    if args.data is None and not args.drop_missing:
        raise ConfigError("no DATA to index", expected="a folder, manifest or embeddings folder",
                          found="nothing", fix="e.g. finegrain index data/birds -o birds.index")
    if args.add or args.drop_missing:
        if args.codes != "float32" or args.transform != "auto" or args.dim or args.approximate is not None \
                or args.tta is not None or args.rerank is not None:
            raise ConfigError("--codes/--transform/--dim/--approximate/--tta/--rerank cannot change an existing index",
                              expected="--add/--drop-missing alone", found="index settings given",
                              fix="rebuild without --add to change them")
        idx, added, dropped = update_index(args.output, args.data,
                                           drop_missing=args.drop_missing, backbone=args.backbone, model=args.model,
                                           splits=args.split, cache_dir=args.cache_dir, **embed_kwargs(args))
        info(args, f"added {added}, dropped {dropped}: {idx.n_live} images in {args.output}")
        return 0
    idx = build_index(args.data, args.output, backbone=args.backbone, model=args.model, splits=args.split,
                      codes=args.codes, approximate=args.approximate, transform=args.transform, dim=args.dim,
                      tta=args.tta or "none", rerank=args.rerank, cache_dir=args.cache_dir, **embed_kwargs(args))
    m = idx.meta
    if m.get("n_unreadable"):
        print(f"finegrain: {m['n_unreadable']} file(s) could not be read and were not indexed", file=sys.stderr)
    info(args, f"indexed {idx.n_live} images ({m['backbone']}, tta {m['tta']}, transform {m['transform']}, "
                f"{m['factory']}, {m['bytes_per_image']:.0f} bytes per image{_vectors_note(m)}) in "
                f"{m['build_seconds']:.1f}s → {args.output}")
    return 0


def _vectors_note(meta: dict) -> str:
    """What --rerank adds on disk, for the summary line (the bytes-per-image figure counts index.faiss only)."""
    if not meta.get("rerank"):
        return ""
    return (f" + {meta['vectors_bytes'] / max(1, meta['n_rows']):.0f} on disk as float16, re-scoring "
            f"{meta['rerank']} × k candidates")


def _neighbour_rows(emb, results) -> list[dict]:
    from ..outputs import printable
    rows = []
    for s, hits in zip(emb.samples, results):
        for rank, h in enumerate(hits, 1):
            rows.append({"query": printable(str(s.path)), "rank": rank, "path": printable(h.path),
                         "label": h.label, "distance": round(h.distance, 6)})
    return rows


def _render(rows: list[dict], columns: list[str], fmt: str) -> str:
    import csv
    import io
    import json

    from ..outputs import text_table
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    return text_table(columns, [[r[c] for c in columns] for r in rows]) + "\n"


def run_search(args: argparse.Namespace) -> int:
    from ..outputs import printable
    from ..retrieval.api import search

    emb, results = search(args.index, expand_inputs(args.inputs), k=args.k, same_class_only=args.same_class_only,
                          exclude_duplicates=args.exclude_duplicates, duplicate_threshold=args.threshold,
                          backbone=args.backbone, model=args.model, cache_dir=args.cache_dir, **embed_kwargs(args))
    rows = _neighbour_rows(emb, results)
    rows += [{"query": printable(e.path), "rank": "", "path": "", "label": "", "distance": "",
              "error": printable(e.reason)} for e in emb.errors]
    columns = ["query", "rank", "path", "label", "distance"] + (["error"] if emb.errors else [])
    if emb.errors:
        for r in rows:
            r.setdefault("error", "")
    sys.stdout.write(_render(rows, columns, args.format))
    if not emb.samples:
        first = emb.errors[0]
        return none_readable("search", first.path, first.reason, len(emb.errors))
    if emb.errors:
        print(f"finegrain: {len(emb.errors)} query file(s) could not be read (rows marked error)", file=sys.stderr)
    return 0


def run_duplicates(args: argparse.Namespace) -> int:
    from ..outputs import printable
    from ..retrieval.api import duplicates

    from ..retrieval.index import SimilarityIndex

    idx = SimilarityIndex.load(args.index)
    threshold = idx.duplicate_threshold if args.threshold is None else args.threshold
    pairs = duplicates(idx, threshold=threshold, k=args.k, mislabels_only=args.mislabels_only)
    for p in pairs:
        p["path_a"], p["path_b"] = printable(p["path_a"]), printable(p["path_b"])
    columns = ["path_a", "label_a", "path_b", "label_b", "distance", "identical_content", "labels_disagree"]
    sys.stdout.write(_render(pairs, columns, args.format))
    n_bad = sum(p["labels_disagree"] for p in pairs)
    info(args, f"{len(pairs)} near-duplicate pair(s) within distance {threshold}; {n_bad} with different labels")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..io import to_json, write_json
    from ..outputs import text_table
    from ..retrieval.api import eval_retrieval

    report = eval_retrieval(args.index, args.data, split=args.split, cache_dir=args.cache_dir, **embed_kwargs(args))
    if args.output:
        write_json(args.output, report)
    if args.format == "json":
        print(to_json(report))
    else:
        s = report["index_settings"]
        print(f"{report['n_queries']} queries ({report['split'] or 'all'}) against {report['n_gallery']} indexed "
              f"images; {s['backbone']}, tta {s['tta']}, transform {s['transform']}, {s['factory']}, "
              f"{s['bytes_per_image']} bytes/image, {report['ms_per_query']} ms/query")
        print(text_table(["metric", "value"], [[k, f"{v:.4f}"] for k, v in report["metrics"].items()], align_right=[1]))
    if report["queries_also_in_gallery"]:
        print(f"finegrain: {report['queries_also_in_gallery']} quer(ies) are also in the index (same file content); "
              "their own copy was left out of their neighbours", file=sys.stderr)
    if args.output:
        info(args, f"full results (JSON): {args.output}")
    return 0
