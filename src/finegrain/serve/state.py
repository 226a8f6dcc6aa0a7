"""What one server holds while it runs: the models, the similar-image index, thread pools, micro-batchers,
metrics and readiness.

Started lazily on the first request as well as by the app's lifespan, so an app mounted inside another ASGI
app (whose lifespan Starlette does not run) works too.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, Awaitable, Sequence, TypeVar

from ..errors import ImageError
from ..views import average_views
from .batcher import MicroBatcher, QueueFullError
from .errors import ApiError, image_error
from .metrics import Metrics
from .models import ServedModel
from .settings import ServeSettings
from .uploads import Upload

if TYPE_CHECKING:
    import numpy as np

    from ..retrieval.index import SimilarityIndex

log = logging.getLogger("finegrain")
T = TypeVar("T")
RETRY_AFTER_S = "1"


class ServeState:
    def __init__(self, models: dict[str, ServedModel], settings: ServeSettings,
                 index: "SimilarityIndex | None" = None) -> None:
        self.models, self.settings, self.metrics, self.index = models, settings, Metrics(), index
        self.batchers: dict[str, MicroBatcher] = {}
        self.ready, self.warmup_error = False, None
        self._started = False
        self._warm_task: asyncio.Task | None = None

    async def ensure_started(self) -> None:
        """Create the pools and batchers in the running loop and start warming up (once)."""
        if self._started:
            return
        self._started = True
        s = self.settings
        self.decode_pool = ThreadPoolExecutor(s.decode_workers, thread_name_prefix="finegrain-decode")
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="finegrain-model")  # one backbone call at a time
        self.explain_pool = ThreadPoolExecutor(1, thread_name_prefix="finegrain-explain")
        for name, served in self.models.items():
            batcher = MicroBatcher(served.embed_crops, self.model_pool, max_batch=s.max_batch,
                                   max_wait_s=s.max_wait_ms / 1000, capacity=s.queue_size,
                                   on_batch=partial(self.metrics.record_batch, name))
            batcher.start()
            self.batchers[name] = batcher
        self._warm_task = asyncio.get_running_loop().create_task(self._warm_up())

    async def stop(self) -> None:
        if not self._started:
            return
        if self._warm_task is not None:
            self._warm_task.cancel()
        for batcher in self.batchers.values():
            await batcher.stop()
        for pool in (self.decode_pool, self.model_pool, self.explain_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        self.batchers, self._started, self.ready = {}, False, False

    async def _warm_up(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for served in self.models.values():
                await loop.run_in_executor(self.model_pool, served.warm_up)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz; the process stays up to say so
            log.exception("warm-up failed")
            self.warmup_error = f"{type(exc).__name__}: {exc}"
            return
        self.ready = True
        log.info("ready: %s", ", ".join(self.models))

    # --- answering -----------------------------------------------------------------------------------------
    def model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise ApiError(404, "unknown_model", f"no model named '{name}' is served",
                           fix=f"use one of: {', '.join(self.models)} (GET /v1/models lists them)")
        return self.models[name]

    def model_info(self, served: ServedModel) -> dict[str, Any]:
        """GET /v1/models' entry: the model's info, and whether the index answers for it."""
        return {**served.info(), "similar_images": self.index is not None and served.index_mismatch(self.index) is None}

    def require_index(self, served: ServedModel) -> "SimilarityIndex":
        """The index, when it holds embeddings of this model's network: 404 without one, 409 for another's."""
        if self.index is None:
            raise ApiError(404, "no_index", "this server has no similar-image index",
                           fix="start it with finegrain serve MODEL --index INDEX (an index from `finegrain index`)")
        problem = served.index_mismatch(self.index)
        if problem:
            usable = [name for name, m in self.models.items() if m.index_mismatch(self.index) is None]
            raise ApiError(409, "index_mismatch", problem,
                           fix=f"ask model {' or '.join(usable)}, or restart the server with an index built by "
                               f"finegrain index DATA -o INDEX --model MODEL_DIR")
        return self.index

    def require_ready(self) -> None:
        if not self.ready:
            state = f"warm-up failed: {self.warmup_error}" if self.warmup_error else "still warming up"
            raise ApiError(503, "not_ready", f"the server is not ready ({state})", fix="retry shortly",
                           headers={"Retry-After": RETRY_AFTER_S})

    async def within_timeout(self, work: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(work, self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"no answer within {self.settings.request_timeout_s:g} s",
                           fix="retry later, or send fewer images per request") from None

    async def decode(self, served: ServedModel, upload: Upload, views: Sequence[str] = ()) -> list | ApiError:
        """The upload's crops (plain, then one per view), or the 4xx it deserves (decoding runs in the decode
        pool, off the event loop)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.decode_pool, served.decode, upload, views)
        except ImageError as exc:
            return image_error(exc, upload.filename)

    async def embed_uploads(self, served: ServedModel, uploads: list[Upload],
                            views: Sequence[str] = ()) -> tuple[list, "np.ndarray"]:
        """(decoded crops or ApiError per upload, embeddings of the readable ones averaged over the views). When
        none is readable the request fails with the first reason, the others in its details."""
        decoded = await asyncio.gather(*(self.decode(served, u, views) for u in uploads))
        ok = [d for d in decoded if not isinstance(d, ApiError)]
        if not ok:
            first = decoded[0]
            if len(decoded) > 1:
                first.details = [_error_row(u, d) for u, d in zip(uploads, decoded)]
            raise first
        try:
            X = await self.batchers[served.name].embed([crops for d in ok for crops in d])
        except QueueFullError as exc:
            raise ApiError(503, "queue_full", f"the server is busy: {exc}", fix="retry after a second",
                           headers={"Retry-After": RETRY_AFTER_S}) from None
        n_views = 1 + len(views)
        return decoded, X if n_views == 1 else average_views([X[v::n_views] for v in range(n_views)])

    async def predict(self, served: ServedModel, uploads: list[Upload], top_k: int,
                      unknown: str | float | None) -> list[dict[str, Any]]:
        """One result per upload, in order. Unreadable images of a request with readable ones come back as
        error rows (as the CLI reports them); when none is readable the request fails with the first reason."""
        decoded, X = await self.embed_uploads(served, uploads, served.classifier.views)  # the model's --tta
        rows = iter(served.predictions(X, top_k, unknown))
        return [_error_row(u, d) if isinstance(d, ApiError) else {"filename": u.filename, **next(rows)}
                for u, d in zip(uploads, decoded)]

    async def neighbours(self, served: ServedModel, index: "SimilarityIndex", uploads: list[Upload], k: int,
                         exclude_duplicates: bool) -> list[dict[str, Any]]:
        """The k nearest indexed images per upload, in order (error rows as `predict`); queries are embedded
        with the index's test-time views, like `finegrain search` embeds them."""
        from ..retrieval.settings import TTA

        decoded, X = await self.embed_uploads(served, uploads, TTA[index.tta])
        readable = [u for u, d in zip(uploads, decoded) if not isinstance(d, ApiError)]
        hits = iter(await asyncio.get_running_loop().run_in_executor(
            self.decode_pool, served.index_neighbours, index, X, readable, k, exclude_duplicates))
        return [_error_row(u, d) if isinstance(d, ApiError) else
                {"filename": u.filename, "status": "ok", "neighbours": next(hits)} for u, d in zip(uploads, decoded)]

    async def explain(self, served: ServedModel, upload: Upload, method: str, target: str | None,
                      neighbours: int) -> dict[str, Any]:
        decoded = await self.decode(served, upload)
        if isinstance(decoded, ApiError):
            raise decoded
        return await asyncio.get_running_loop().run_in_executor(
            self.explain_pool, served.explain, upload, decoded[0][0], method, target, neighbours)


def _error_row(upload: Upload, error: ApiError) -> dict[str, Any]:
    return {"filename": upload.filename, "status": "error", "error": error.message, "error_code": error.code}
