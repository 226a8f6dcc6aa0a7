"""`create_app(models)`: the FastAPI app behind `finegrain serve` — JSON API, OpenAPI schema, metrics, web page;
with an `index`, the nearest indexed images of an upload as well.

Mount it in another ASGI app as it is: it starts its pools and batchers on its first request when no lifespan
runs it.
"""
from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Literal, Mapping

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..errors import ConfigError, FinegrainError
from ..pipeline import Classifier
from . import metrics as prom
from .errors import ApiError, library_error
from .models import ServedModel
from .schemas import ErrorBody, ExplainResponse, ModelsResponse, NeighboursResponse, PredictResponse
from .settings import ServeSettings
from .state import ServeState
from .uploads import read_uploads

if TYPE_CHECKING:
    from ..retrieval.index import SimilarityIndex

log = logging.getLogger("finegrain")

STATIC = Path(__file__).parent / "static"
API_KEY_HEADER = "X-API-Key"
MAX_TOP_K = 1000
# The page loads nothing from elsewhere; images it shows are data: URLs (answers) or blob: URLs (the user's photos).
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
_BINARY = {"type": "string", "format": "binary"}
IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"],
                                       "properties": {"files": {"type": "array", "items": _BINARY}}}},
    "image/*": {"schema": _BINARY}, "application/octet-stream": {"schema": _BINARY}}}}
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 415, 422, 503, 504)}
MAX_INDEX_K = 50  # nearest indexed images per upload (each comes with a thumbnail read from disk)


def create_app(models: Mapping[str, Classifier], settings: ServeSettings | None = None,
               index: "SimilarityIndex | None" = None) -> FastAPI:
    """A FastAPI app serving `models` ({URL name: Classifier}) under /v1/models/{name}/..., with /healthz,
    /readyz, /metrics, /openapi.json and the web page at /. `index` (a `finegrain index`, loaded) adds the
    nearest indexed images of uploads for the models whose network embedded it; refused when none did."""
    settings = settings or ServeSettings()
    if not models:
        raise ConfigError("no model to serve", expected="at least one model", found="none",
                          fix="pass model folders written by `finegrain fit`")
    state = ServeState({name: ServedModel(name, clf, settings) for name, clf in models.items()}, settings, index)
    if index is not None and all(m.index_mismatch(index) for m in state.models.values()):
        raise ConfigError("the index holds embeddings of none of the served models",
                          expected="embeddings of " + ", ".join(f"'{c.backbone_id}' (key {c.cache_key})"
                                                                 for c in models.values()),
                          found=f"'{index.meta['backbone']}' (key {index.meta['cache_key']})",
                          fix="build it with finegrain index DATA -o INDEX --model MODEL_DIR")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.ensure_started()
        yield
        await state.stop()

    app = FastAPI(title="finegrain", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Fine-grained image classification: top-k labels with calibrated probabilities, "
                              "an unknown verdict, Grad-CAM explanations.")
    app.state.finegrain = state
    _add_middleware(app, state)
    _add_error_handlers(app, state)
    _add_routes(app, state)
    return app


def _add_middleware(app: FastAPI, state: ServeState) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        """Start lazily, time every request, and turn anything unexpected into a JSON 500 (no traceback out)."""
        start = time.perf_counter()
        await state.ensure_started()
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - logged with its traceback here; the client gets a plain JSON error
            log.exception("unexpected error answering %s %s", request.method, request.url.path)
            response = _error_response(state, ApiError(500, "server_error", "internal server error",
                                                       fix="retry; if it persists, see the server log"))
        route = request.scope.get("route")
        state.metrics.record_request(getattr(route, "path", "unmatched"), request.method, response.status_code,
                                     time.perf_counter() - start)
        return response

    if state.settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(state.settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=[API_KEY_HEADER, "Authorization", "Content-Type"])


def _error_response(state: ServeState, error: ApiError) -> JSONResponse:
    state.metrics.record_error(error.code)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _add_error_handlers(app: FastAPI, state: ServeState) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(state, exc)

    @app.exception_handler(FinegrainError)
    async def finegrain_error(request: Request, exc: FinegrainError) -> JSONResponse:
        return _error_response(state, library_error(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                             for e in exc.errors())
        return _error_response(state, ApiError(422, "invalid_parameter", problems,
                                               fix="see /openapi.json for the allowed values"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(state, ApiError(exc.status_code, code, str(exc.detail),
                                               fix="see /openapi.json for the routes", headers=exc.headers))


def _add_routes(app: FastAPI, state: ServeState) -> None:
    settings = state.settings
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="needed when the server was started with --api-key")

    def require_api_key(request: Request, key: str | None = Security(key_header)) -> None:
        """Constant-time comparison; `Authorization: Bearer KEY` works as well as the X-API-Key header."""
        if settings.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = key or (auth[7:] if auth.lower().startswith("bearer ") else "")
        if not given or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, "unauthorized", "missing API key" if not given else "wrong API key",
                           fix=f"send the server's key in the {API_KEY_HEADER} header",
                           headers={"WWW-Authenticate": "Bearer"})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP,
                                                            "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", tags=["operations"], summary="the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="models loaded and warmed up",
             responses={503: {"description": "warming up, or warm-up failed"}})
    async def readyz() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ready", "models": list(state.models)})
        status = "failed" if state.warmup_error else "warming_up"
        return JSONResponse({"status": status, "error": state.warmup_error}, status_code=503,
                            headers={"Retry-After": "1"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        depths = {name: b.depth for name, b in state.batchers.items()}
        return PlainTextResponse(state.metrics.render(depths), media_type=prom.CONTENT_TYPE)

    @app.get("/v1/models", tags=["models"], response_model=ModelsResponse, responses={401: {"model": ErrorBody}},
             dependencies=[Depends(require_api_key)])
    async def list_models() -> dict[str, Any]:
        return {"models": [state.model_info(m) for m in state.models.values()],
                "api_key_required": settings.api_key is not None}

    @app.post("/v1/models/{name}/predict", tags=["models"], response_model=PredictResponse, responses=ERRORS,
              openapi_extra=IMAGE_BODY, dependencies=[Depends(require_api_key)],
              summary="top-k labels with calibrated probabilities for one or several images")
    async def predict(name: str, request: Request,
                      top_k: int = Query(5, ge=1, le=MAX_TOP_K, description="labels per image"),
                      unknown: str | None = Query(None, description="auto (the threshold saved at fit), off, or "
                                                                    "a threshold; default auto when the model has one")
                      ) -> dict[str, Any]:
        served = state.model(name)
        mode = served.unknown_mode(unknown)
        state.require_ready()
        uploads = await read_uploads(request, settings.max_upload_bytes, settings.max_images)
        results = await state.within_timeout(state.predict(served, uploads, top_k, mode))
        return {"model": name, "results": results, "unknown_threshold": served.threshold_of(mode),
                "provenance": served.provenance}

    @app.post("/v1/models/{name}/explain", tags=["models"], response_model=ExplainResponse, responses=ERRORS,
              openapi_extra=IMAGE_BODY, dependencies=[Depends(require_api_key)],
              summary="Grad-CAM overlay (base64 PNG) and nearest training images for one image")
    async def explain(name: str, request: Request,
                      method: Literal["gradcam", "gradcam++"] = Query("gradcam"),
                      target: str | None = Query(None, alias="class", description="explain this class instead "
                                                                                  "of the predicted one"),
                      neighbours: int = Query(settings.neighbours, ge=0, le=50,
                                              description="nearest training images to return")) -> dict[str, Any]:
        served = state.model(name)
        if not served.info()["explain"]:
            raise ApiError(400, "cannot_explain", f"model '{name}' uses several backbones side by side, which "
                                                  "have no single conv map for Grad-CAM",
                           fix="explain with a model fitted on one backbone")
        state.require_ready()
        uploads = await read_uploads(request, settings.max_upload_bytes, 1)
        return await state.within_timeout(state.explain(served, uploads[0], method, target, neighbours))

    @app.post("/v1/models/{name}/neighbours", tags=["models"], response_model=NeighboursResponse,
              responses={**ERRORS, 409: {"model": ErrorBody}}, openapi_extra=IMAGE_BODY,
              dependencies=[Depends(require_api_key)],
              summary="the nearest images of the server's similar-image index (`--index`) for each image")
    async def neighbours(name: str, request: Request,
                         k: int = Query(5, ge=1, le=MAX_INDEX_K, description="nearest indexed images per image"),
                         exclude_duplicates: bool = Query(False, description="leave out the image's own file and "
                                                                             "its near-copies")) -> dict[str, Any]:
        served = state.model(name)
        index = state.require_index(served)
        state.require_ready()
        uploads = await read_uploads(request, settings.max_upload_bytes, settings.max_images)
        results = await state.within_timeout(state.neighbours(served, index, uploads, k, exclude_duplicates))
        m = index.meta
        return {"model": name, "results": results, "provenance": served.provenance,
                "index": {"n_images": index.n_live, "backbone": m["backbone"], "tta": index.tta,
                          "transform": m["transform"], "codes": m["codes"]}}
