"""Run a loaded model off the event loop: dynamic batching for models with a batch axis, bounded queues for all.

A ``Scheduler`` takes requests (named numpy inputs) and hands each back its outputs. With a batch axis, requests
that arrive within ``max_queue_delay_ms`` of the first are concatenated along axis 0 (up to ``max_batch_size``
rows), run once on a worker thread and split back; requests whose other dimensions differ go to separate batches.
The queue is bounded in rows: when it is full a request fails at once with ``Overloaded`` (503 + Retry-After)
instead of waiting without limit, and each request has a deadline (``InferenceTimeout``, 504).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import InferenceTimeout, ModelFailure, Overloaded, ServeError

RunFn = Callable[[dict[str, np.ndarray]], list[np.ndarray]]
# Called as observe(kind, seconds, batch_size) with kind "queue" or "compute"; depth(n) with the queued rows.
Observe = Callable[[str, float, int], None]


@dataclass
class BatchConfig:
    """How a model's requests are scheduled."""

    max_batch_size: int = 64
    max_queue_delay_ms: float = 0.0
    max_queue_rows: int = 8192
    instances: int = 1
    timeout_s: float = 60.0


@dataclass(eq=False)
class _Item:
    feed: dict[str, np.ndarray]
    rows: int
    key: tuple
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Scheduler:
    """Queues requests for one model and runs them on ``instances`` concurrent worker loops.

    Args:
        run: the model call (named numpy inputs -> list of outputs); runs on ``executor``'s threads.
        executor: the server's compute thread pool.
        config: batch size, queue delay, queue bound, instances and timeout.
        batched: whether every input and output has the batch axis at 0, so requests may be merged.
        label: "model:version" for error messages.
        observe: metrics hook (see ``Observe``).
        depth: queue-depth hook, called with the queued rows.
    """

    def __init__(self, run: RunFn, executor: Executor, config: BatchConfig, *, batched: bool, label: str,
                 observe: Observe | None = None, depth: Callable[[int], None] | None = None) -> None:
        self.run, self.executor, self.config, self.batched, self.label = run, executor, config, batched, label
        self._observe = observe or (lambda kind, seconds, size: None)
        self._depth = depth or (lambda n: None)
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._wake: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []
        self._in_flight = 0
        self._closing = False

    def start(self) -> None:
        """Start the worker loops (on the running event loop)."""
        self._wake = asyncio.Event()
        self._workers = [asyncio.create_task(self._worker(), name=f"{self.label}#{i}")
                         for i in range(max(1, self.config.instances))]

    @property
    def closing(self) -> bool:
        """True once ``close`` was called: new requests should go to the model's current version."""
        return self._closing

    @property
    def pending(self) -> int:
        """Requests queued or running."""
        return len(self._queue) + self._in_flight

    async def submit(self, feed: dict[str, np.ndarray], timeout_s: float | None = None) -> list[np.ndarray]:
        """Queue one request and wait for its outputs.

        Raises:
            Overloaded: the queue holds ``max_queue_rows`` rows already (or the model is being unloaded).
            InferenceTimeout: no result within the timeout.
            ModelFailure: the model raised on these inputs.
        """
        if self._closing or self._wake is None:
            raise Overloaded(f"model {self.label} is being unloaded; retry, the current version will answer")
        rows = _rows(feed) if self.batched else 1
        if self._queued_rows + rows > self.config.max_queue_rows and self._queue:
            raise Overloaded(f"model {self.label} has {self._queued_rows} rows queued (limit "
                             f"{self.config.max_queue_rows}); retry later or raise --max-queue",
                             retry_after=1.0)
        key = tuple((k, v.shape[1:], v.dtype.str) for k, v in feed.items()) if self.batched else ()
        item = _Item(feed, rows, key, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        self._queued_rows += rows
        self._depth(self._queued_rows)
        self._wake.set()
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), timeout)
        except asyncio.TimeoutError:
            if item in self._queue:  # never started: take it out so it costs nothing
                self._queue.remove(item)
                self._queued_rows -= item.rows
                self._depth(self._queued_rows)
            raise InferenceTimeout(f"model {self.label} did not answer within {timeout:g} s "
                                   f"({self.pending} requests pending); raise --request-timeout or send less") from None

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop taking requests, let queued and running ones finish (up to ``grace_s``), then stop the workers."""
        self._closing = True
        deadline = time.monotonic() + grace_s
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in self._workers:
            task.cancel()
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(Overloaded(f"model {self.label} was unloaded before this request ran"))
        self._queue.clear()

    async def _worker(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.batched and self.config.max_queue_delay_ms > 0:
                await self._gather_window()
            batch = self._take()
            if not batch:
                continue
            self._in_flight += len(batch)
            try:
                await self._execute(loop, batch)
            finally:
                self._in_flight -= len(batch)

    async def _gather_window(self) -> None:
        """Wait until the batch is full or the oldest request has waited ``max_queue_delay_ms``."""
        first = self._queue[0]
        deadline = first.enqueued + self.config.max_queue_delay_ms / 1000
        while self._queue and self._queue[0] is first:
            rows = sum(i.rows for i in self._queue if i.key == first.key)
            remaining = deadline - time.perf_counter()
            if rows >= self.config.max_batch_size or remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Item]:
        """The oldest request plus every queued one with the same key that fits in max_batch_size rows."""
        if not self._queue:
            return []
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        if self.batched:
            keep: deque[_Item] = deque()
            while self._queue:
                item = self._queue.popleft()
                if item.key == first.key and rows + item.rows <= self.config.max_batch_size:
                    batch.append(item)
                    rows += item.rows
                else:
                    keep.append(item)
            self._queue = keep
        self._queued_rows -= rows
        self._depth(self._queued_rows)
        return [i for i in batch if not i.future.done()]

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        start = time.perf_counter()
        for item in batch:
            self._observe("queue", start - item.enqueued, item.rows)
        if len(batch) == 1:
            feed = batch[0].feed
        else:
            feed = {name: np.concatenate([i.feed[name] for i in batch], axis=0) for name in batch[0].feed}
        try:
            outputs = await loop.run_in_executor(self.executor, self.run, feed)
        except Exception as exc:  # noqa: BLE001 - any model error becomes a 500 for its own requests only
            if len(batch) > 1:
                # One request may poison a merged batch: run each alone so the others still get answers.
                for item in batch:
                    await self._execute(loop, [item])
                return
            _fail(batch[0], exc, self.label)
            return
        size = sum(i.rows for i in batch)
        self._observe("compute", time.perf_counter() - start, size)
        if len(batch) == 1:
            _resolve(batch[0], outputs)
            return
        offset = 0
        for item in batch:
            _resolve(item, [o[offset:offset + item.rows] for o in outputs])
            offset += item.rows


def _rows(feed: dict[str, np.ndarray]) -> int:
    first = next(iter(feed.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _resolve(item: _Item, outputs: list[np.ndarray]) -> None:
    if not item.future.done():
        item.future.set_result(outputs)


def _fail(item: _Item, exc: BaseException, label: str) -> None:
    if item.future.done():
        return
    if isinstance(exc, ServeError):
        item.future.set_exception(exc)
    else:
        item.future.set_exception(ModelFailure(f"model {label} failed: {type(exc).__name__}: {exc}"))
