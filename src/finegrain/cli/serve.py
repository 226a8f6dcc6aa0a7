"""`finegrain serve MODEL [MODEL ...]`: the HTTP API and web page (FastAPI + uvicorn, one process)."""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from .options import non_negative_int, positive_float, positive_int

API_KEY_ENV = "FINEGRAIN_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in [1, 65535], got {text}")
    return value


def wait_ms(text: str) -> float:
    from ..serve.settings import MAX_WAIT_LIMIT_MS

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds, got {text!r}") from None
    if not 0 <= value <= MAX_WAIT_LIMIT_MS:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_WAIT_LIMIT_MS:g}] ms, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .common import add_common_options

    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="model folder from `finegrain fit`; NAME=FOLDER sets its URL name (default: the folder name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help=f"require this key (X-API-Key header) on /v1 routes (default: ${API_KEY_ENV}, else none)")
    p.add_argument("--cors", action="append", default=None, metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to call the API (repeatable; default: CORS off)")
    p.add_argument("--max-upload-mb", type=positive_float, default=20.0, help="largest request body (default 20 MB)")
    p.add_argument("--max-images", type=positive_int, default=16, help="images per predict request (default 16)")
    p.add_argument("--max-wait-ms", type=wait_ms, default=2.0,
                   help="how long an image waits for others to share a backbone call (default 2, at most 5)")
    p.add_argument("--queue-size", type=positive_int, default=128,
                   help="images waiting per model before requests get 503 + Retry-After (default 128)")
    p.add_argument("--timeout", type=positive_float, default=30.0, help="seconds per request before 504 (default 30)")
    p.add_argument("--neighbours", type=non_negative_int, default=5,
                   help="nearest training images per explanation (default 5; 0: none)")
    p.add_argument("--index", type=Path, default=None,
                   help="a `finegrain index` folder: the page and POST /v1/models/NAME/neighbours show its images "
                        "nearest to each photo (for the models whose backbone built it)")
    add_common_options(p)


def model_dirs(specs: list[str]) -> dict[str, Path]:
    """{URL name: folder} from MODEL arguments; two models may not share a name."""
    from ..errors import ConfigError

    named: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        path = Path(folder if sep else spec)
        name = name if sep else (path.resolve().name or "model")
        if name in named:
            raise ConfigError(f"two models would be served as '{name}'", expected="one URL name per model",
                              found=f"{named[name]} and {path}", fix=f"name them: finegrain serve {name}=DIR OTHER=DIR")
        named[name] = path
    return named


def check_port_free(host: str, port: int) -> None:
    """Say which port is taken before loading models, instead of uvicorn's exit after the warm-up."""
    from ..errors import ConfigError

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}", expected="a free port on an address of this machine",
                          found=exc.strerror or str(exc), fix="pick another --port or --host") from None


def settings_from(args: argparse.Namespace):
    from ..data.images import DEFAULT_MAX_PIXELS
    from ..serve import ServeSettings

    return ServeSettings(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_images=args.max_images,
                         max_pixels=args.max_image_pixels or DEFAULT_MAX_PIXELS, max_batch=args.batch_size,
                         max_wait_ms=args.max_wait_ms, queue_size=args.queue_size, request_timeout_s=args.timeout,
                         decode_workers=args.workers, neighbours=args.neighbours,
                         api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
                         cors_origins=tuple(args.cors or ()), runtime=args.runtime, cache_dir=args.cache_dir)


def run(args: argparse.Namespace) -> int:
    from ..errors import MissingExtraError

    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as exc:
        raise MissingExtraError(exc.name or "fastapi", "finegrain serve", "serve") from exc
    from ..pipeline import Classifier

    dirs = model_dirs(args.models)
    settings = settings_from(args)
    check_port_free(args.host, args.port)
    index = None
    if args.index is not None:
        from ..retrieval.index import SimilarityIndex
        index = SimilarityIndex.load(args.index)
    app = create_app({name: Classifier.load(d) for name, d in dirs.items()}, settings, index)
    if args.host not in LOOPBACK and settings.api_key is None:
        print(f"finegrain serve: warning: listening on {args.host} without --api-key: anyone who can reach "
              "this machine can use the models", file=sys.stderr)
    if not args.quiet:
        print(f"finegrain serve: {', '.join(dirs)} on http://{args.host}:{args.port}/ (API: /openapi.json)",
              file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info",
                timeout_graceful_shutdown=5)
    return 0
