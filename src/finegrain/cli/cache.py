"""`finegrain cache`: what the cache folder holds (embeddings, activation stores, fine-tuning runs, ONNX
exports), and `--prune DAYS` to remove what no run has used for that long."""
from __future__ import annotations

import argparse
from pathlib import Path

from .options import non_negative_float


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache folder (default: $FINEGRAIN_CACHE_DIR or ~/.cache/finegrain)")
    p.add_argument("--prune", type=non_negative_float, default=None, metavar="DAYS",
                   help="remove what no run has used for DAYS days (0: everything); it is computed again when needed")
    p.add_argument("--dry-run", action="store_true", help="with --prune: list what would be removed, remove nothing")
    p.add_argument("--format", choices=["table", "json"], default="table", help="what to print (default table)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")


def run(args: argparse.Namespace) -> int:
    from ..cachedir import cache_entries, format_entries, format_size, prune_cache
    from ..io import to_json
    from ..store import default_cache_dir
    from .common import info

    directory = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    if args.dry_run and args.prune is None:
        from ..errors import ConfigError
        raise ConfigError("--dry-run only applies to --prune", expected="--prune DAYS --dry-run",
                          found="--dry-run alone", fix="add --prune DAYS, or drop --dry-run to list the cache")
    entries = cache_entries(directory) if args.prune is None else prune_cache(directory, args.prune, args.dry_run)
    if args.format == "json":
        print(to_json({"cache_dir": str(directory), "pruned": args.prune is not None and not args.dry_run,
                       "entries": [e.to_json() for e in entries]}))
    else:
        print(format_entries(entries))
    freed = format_size(sum(e.size for e in entries))
    if args.prune is None:
        info(args, f"cache folder {directory}; `finegrain cache --prune DAYS` removes what no run used for DAYS days")
    else:
        info(args, f"{'would free' if args.dry_run else 'freed'} {freed} in {len(entries)} entries unused for "
                   f"{args.prune:g} days or more, in {directory}")
    return 0
