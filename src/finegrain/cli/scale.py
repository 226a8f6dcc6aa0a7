"""`--engine ray` of `finegrain predict` and `finegrain embed`: options and the call into `finegrain.scale`.
Nothing here imports Ray; the job does, when it starts."""
from __future__ import annotations

import argparse
import sys

from .options import positive_int

ENGINES = ("local", "ray")
RAY_OPTIONS = {"ray_address": None, "ray_cpus": None, "ray_actors": 1, "shard_rows": 1024}


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--engine and the options of a Ray job."""
    g = p.add_argument_group("scale-out on Ray (pip install 'finegrain[ray]')")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process (default); ray: a Ray Data job writing Parquet shards to --output, "
                        "resumable by rerunning the same command")
    g.add_argument("--ray-address", default=RAY_OPTIONS["ray_address"], metavar="ADDRESS",
                   help="join this Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: start a local Ray)")
    g.add_argument("--ray-cpus", type=positive_int, default=RAY_OPTIONS["ray_cpus"], metavar="N",
                   help="CPUs of the local Ray (default: every core); not used with --ray-address")
    g.add_argument("--ray-actors", type=positive_int, default=RAY_OPTIONS["ray_actors"], metavar="N",
                   help="model actors, each loading the model once and running it on --threads threads (default 1)")
    g.add_argument("--shard-rows", type=positive_int, default=RAY_OPTIONS["shard_rows"], metavar="N",
                   help="inputs per Parquet shard: at most this many per shard are redone after a kill (default 1024)")


def uses_ray(args: argparse.Namespace) -> bool:
    """True for --engine ray; Ray options without it are refused rather than silently ignored."""
    from ..errors import ConfigError

    if args.engine == "ray":
        return True
    given = [f"--{name.replace('_', '-')}" for name, default in RAY_OPTIONS.items() if getattr(args, name) != default]
    if given:
        raise ConfigError(f"{', '.join(given)} only apply to Ray jobs", expected="--engine ray with them",
                          found="--engine local", fix="add --engine ray, or drop those options")
    return False


def _refuse_unsupported(command: str, args: argparse.Namespace) -> None:
    """Options whose answers depend on the whole input set, or on one output file, have no Ray form."""
    from ..errors import ConfigError

    if args.output is None:
        raise ConfigError(f"`finegrain {command} --engine ray` writes Parquet shards into a folder",
                          expected="--output FOLDER", found="no --output", fix="add --output OUT_DIR (a path or s3://…)")
    if command != "predict":
        return
    if args.transductive or args.head_mode:
        option = "--transductive" if args.transductive else "--head-mode"
        raise ConfigError(f"{option} is not available with --engine ray", expected="per-image answers",
                          found=option, fix=f"drop {option}, or use --engine local")
    if args.format != "table" or args.wide:
        raise ConfigError("--engine ray writes Parquet shards, not tables", expected="no --format/--wide",
                          found="--format " + args.format if args.format != "table" else "--wide",
                          fix="drop --format/--wide; read OUT with pyarrow, pandas or DuckDB")


def ray_options(args: argparse.Namespace):
    from ..data.images import DEFAULT_MAX_PIXELS
    from ..scale.jobs import RayOptions

    return RayOptions(address=args.ray_address, cpus=args.ray_cpus, actors=args.ray_actors, threads=args.threads or 1,
                      batch_size=args.batch_size, shard_rows=args.shard_rows, runtime=args.runtime,
                      cache_dir=args.cache_dir, max_pixels=args.max_image_pixels or DEFAULT_MAX_PIXELS,
                      quiet=args.quiet)


def run(command: str, args: argparse.Namespace):
    """Run `predict` or `embed` as a Ray job; returns its JobResult (the caller decides the exit code)."""
    from ..scale.jobs import embed_on_ray, predict_on_ray

    _refuse_unsupported(command, args)
    if command == "predict":
        result = predict_on_ray(args.model, args.inputs, str(args.output), ray_options(args), top_k=args.top_k,
                                unknown=args.unknown)
    else:
        result = embed_on_ray(str(args.data), str(args.output), args.backbone, ray_options(args), splits=args.split)
    if not args.quiet:
        print(f"finegrain {command}: {result.n_new} new row(s), {result.n_skipped} input(s) already done; "
              f"{result.out} holds {result.n_rows} row(s), {result.n_errors} unreadable", file=sys.stderr)
    return result
