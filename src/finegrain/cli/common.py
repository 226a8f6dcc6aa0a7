"""What the `finegrain` sub-commands share: the runtime options, embedding keyword arguments, notes on stderr,
head parameters, inputs and the model-saving epilogue. Light to import: no torch, no numpy at import time."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from .options import positive_int


def lazy(module: str, func: str = "run") -> Callable[[argparse.Namespace], int]:
    """A command implemented in another module, imported only when that command runs (keeps --help instant)."""
    def call(args: argparse.Namespace) -> int:
        import importlib
        return getattr(importlib.import_module(module), func)(args)
    return call


def add_common_options(p: argparse.ArgumentParser) -> None:
    """Options every command that reads images shares."""
    g = p.add_argument_group("runtime")
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="embedding cache folder (default: $FINEGRAIN_CACHE_DIR or ~/.cache/finegrain)")
    g.add_argument("--batch-size", type=positive_int, default=32, help="images per model call (default 32)")
    g.add_argument("--workers", type=positive_int, default=2, help="decoding threads (default 2)")
    g.add_argument("--runtime", choices=["auto", "onnx", "torch"], default=None,
                   help="what runs the backbone: onnx (ONNX Runtime, ~8x faster), torch (eager PyTorch, the "
                        "reference) or auto (onnx when installed; the default, or $FINEGRAIN_RUNTIME)")
    g.add_argument("--max-image-pixels", type=positive_int, default=None,
                   help="refuse images with more pixels than this (decompression-bomb guard; default 89,478,485)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for the networks (default: $FINEGRAIN_THREADS, else one per core); the heads' "
                        "solvers always use one BLAS thread")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes, only warnings and errors")


def embed_kwargs(args: argparse.Namespace) -> dict:
    """embed_samples keyword arguments from the shared runtime options."""
    from ..data.images import DEFAULT_MAX_PIXELS
    return {"batch_size": args.batch_size, "workers": args.workers,
            "max_pixels": args.max_image_pixels or DEFAULT_MAX_PIXELS, "progress": not args.quiet}


def info(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr)


def parse_head_params(items: Sequence[str] | None) -> dict:
    """--head-param KEY=VALUE (repeatable); values are read as JSON when they parse (numbers, true, lists)."""
    import json

    from ..errors import ConfigError

    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --head-param '{item}'", expected="KEY=VALUE, e.g. --head-param k=20",
                              found=item, fix="write the parameter as KEY=VALUE")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


def unknown_option(value: str) -> str | float:
    """--unknown: 'auto' or a number (argparse turns a ValueError into a usage error)."""
    return "auto" if value == "auto" else float(value)


def save_with_diagram(args: argparse.Namespace, clf) -> None:
    """Save the model to --output (`Classifier.save` draws its reliability diagram), and say what calibration did."""
    clf.save(args.output)
    if "calibration" in clf.info:
        cal = clf.info["calibration"]
        if cal.get("applied", True):
            info(args, f"calibrated on {cal['n']} held-out images: T={cal['temperature']:.3f}, ECE "
                        f"{cal['before']['ece']:.3f} → {cal['after']['ece']:.3f} (reliability.png/svg)")
        elif "skipped" not in cal:  # a skipped temperature was already explained by a warning
            info(args, f"kept the head's own probabilities: a fitted temperature (T={cal['temperature']:.3f}) did not "
                        f"lower the ECE of {cal['n']} held-out images ({cal['before']['ece']:.4f} → {cal['after']['ece']:.4f})")


def expand_inputs(inputs: Sequence[str], allow_uris: bool = False) -> list[str]:
    """'-' reads paths from stdin, one per line (`find … | finegrain predict MODEL -`); URLs are refused: finegrain
    never fetches from the network (a Ray job, `allow_uris`, reads object-store URIs such as s3://)."""
    import re

    from ..errors import ConfigError

    paths = []
    for item in inputs:
        if item == "-":
            paths += [line.rstrip("\n") for line in sys.stdin if line.strip()]
        else:
            paths.append(item)
    urls = [p for p in paths if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", p)]
    if urls and not allow_uris:
        raise ConfigError(f"{urls[0]} is a URL", expected="image files or folders on this machine",
                          found=f"{len(urls)} URL(s)", fix="download the images first (finegrain never fetches from the network)")
    if not paths:
        raise ConfigError("no inputs", expected="image files, folders, or '-' with paths on stdin",
                          found="an empty list", fix="pass at least one path")
    return paths


def none_readable(command: str, first_path: str, first_reason: str, n: int) -> int:
    """Exit 1 with one line when no input at all could be read: a run that produced nothing is a failure."""
    print(f"finegrain {command}: error: none of the {n} input file(s) could be read (first: {first_path}: "
          f"{first_reason})", file=sys.stderr)
    return 1
