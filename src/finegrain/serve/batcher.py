"""Micro-batching: images of concurrent requests share one backbone call.

The first image of a batch waits at most `max_wait_s` for others (fewer when the batch fills), so a lone request
pays a couple of milliseconds while a busy server turns many small calls into few large ones. The queue is
bounded: a request that would overfill it is refused at once (the caller answers 503) instead of waiting forever.
"""
from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


class QueueFullError(Exception):
    """More images are waiting for the backbone than the queue holds."""


@dataclass
class _Item:
    crops: Any
    future: asyncio.Future


class MicroBatcher:
    """Gathers crops from concurrent requests and runs `embed_fn` on them together in `executor`."""

    def __init__(self, embed_fn: Callable[[list[Any]], np.ndarray], executor: Executor, *, max_batch: int,
                 max_wait_s: float, capacity: int, on_batch: Callable[[int], None] | None = None) -> None:
        self.embed_fn, self._executor = embed_fn, executor
        self.max_batch, self.max_wait_s, self.capacity = max_batch, max_wait_s, capacity
        self._on_batch = on_batch
        self._pending: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Images waiting for the backbone (not counting the batch being computed)."""
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(QueueFullError("the server is shutting down"))

    async def embed(self, crops: Sequence[Any]) -> np.ndarray:
        """Embeddings of `crops`, in order, once a batch that holds them has run; QueueFullError when the queue
        cannot take them all (nothing is queued then)."""
        if len(self._pending) + len(crops) > self.capacity:
            raise QueueFullError(f"{len(self._pending)} images are waiting (limit {self.capacity})")
        loop = asyncio.get_running_loop()
        items = [_Item(c, loop.create_future()) for c in crops]
        self._pending.extend(items)
        self._arrived.set()
        return np.stack(await asyncio.gather(*(it.future for it in items)))

    async def _run(self) -> None:
        while True:
            batch = [it for it in await self._next_batch() if not it.future.done()]  # done: its request gave up
            if batch:
                await self._compute(batch)

    async def _next_batch(self) -> list[_Item]:
        """Wait for one image, then gather more until the batch is full or the first has waited max_wait_s."""
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        batch: list[_Item] = []
        while True:
            while self._pending and len(batch) < self.max_batch:
                batch.append(self._pending.popleft())
            remaining = deadline - loop.time()
            if len(batch) >= self.max_batch or remaining <= 0:
                return batch
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return batch

    async def _compute(self, batch: list[_Item]) -> None:
        try:
            X = await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_fn,
                                                                 [it.crops for it in batch])
        except Exception as exc:  # noqa: BLE001 - the requests in this batch get the error; the loop goes on
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(batch))
        for it, row in zip(batch, X):
            if not it.future.done():
                it.future.set_result(row)
