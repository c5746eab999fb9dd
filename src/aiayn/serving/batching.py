"""Dynamic batching: a request queue that turns concurrent requests into one decoding batch.

The first request of a batch waits at most ``wait_s`` (from its arrival) for others with the same
key, up to ``max_batch`` of them; then the batch runs as one call of ``run_batch(key, items)`` on a
worker thread. While a batch runs, new requests queue up, so a busy server batches without waiting
at all: when a worker frees up, the next batch's first request has usually waited long enough
already. Requests with different keys (different decoding controls) never share a batch; the oldest
request decides which key runs next, so no key starves.

Everything but ``run_batch`` runs on the event loop, which is never blocked by a model call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("aiayn.serve")


class QueueFull(Exception):
    """More requests are waiting than the queue holds (the service is overloaded: 503)."""


class QueueClosed(Exception):
    """The queue is shutting down and takes no more requests (503)."""


class BatchFailed(Exception):
    """The batch a request was part of raised ``cause``; every request of the batch gets this."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(eq=False)
class _Pending:
    key: Hashable
    item: Any
    alone: bool
    arrived: float
    future: asyncio.Future = field(repr=False)


@dataclass
class BatchStats:
    """Counters for tests and ``/api/info``: batches run and the items they held."""

    batches: int = 0
    items: int = 0
    sizes: list[int] = field(default_factory=list)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        if len(self.sizes) < 10_000:  # bounded: a long-lived server must not grow this forever
            self.sizes.append(size)


class BatchQueue:
    """Collects submitted items into batches and runs them on worker threads.

    Args:
        run_batch: ``(key, items) -> results``, one result per item in order; called on a worker
            thread. If it raises, every item of the batch fails with :class:`BatchFailed`.
        max_batch: the most items in one batch.
        wait_s: how long the first item of a batch waits for more (0: take only what is queued).
        workers: threads running batches at once.
        max_queued: items that may wait; more are refused with :class:`QueueFull`.
        expected: exception types ``run_batch`` raises for bad input; not logged as errors.
    """

    def __init__(
        self,
        run_batch: Callable[[Hashable, list[Any]], Sequence[Any]],
        max_batch: int = 32,
        wait_s: float = 0.005,
        workers: int = 1,
        max_queued: int = 1024,
        expected: tuple[type[BaseException], ...] = (),
    ) -> None:
        if max_batch < 1 or workers < 1 or wait_s < 0:
            raise ValueError("max_batch and workers must be >= 1 and wait_s >= 0")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.workers = workers
        self.max_queued = max_queued
        self.expected = expected
        self.stats = BatchStats()
        self._pending: list[_Pending] = []
        self._running: set[asyncio.Task] = set()
        self._closed = False
        self._started = False

    async def start(self) -> None:
        """Start the collector on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self.workers)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="aiayn-model")
        self._collector = asyncio.create_task(self._collect())
        self._started = True

    async def submit(self, key: Hashable, item: Any, alone: bool = False) -> Any:
        """Queue ``item`` and wait for its result.

        Args:
            key: items batch together only when their keys are equal.
            item: what ``run_batch`` gets.
            alone: run it as a batch of its own (work that cannot share a batch).

        Raises:
            QueueClosed: the queue is shutting down.
            QueueFull: too many items are waiting.
            BatchFailed: its batch raised.
        """
        if self._closed or not self._started:
            raise QueueClosed("the server is shutting down")
        if len(self._pending) >= self.max_queued:
            raise QueueFull(f"{len(self._pending)} requests are waiting; try again later")
        future = self._loop.create_future()
        self._pending.append(_Pending(key, item, alone, self._loop.time(), future))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Take no more items, fail those still waiting, and wait for the running batches."""
        if not self._started or self._closed:
            self._closed = True
            return
        self._closed = True
        self._arrived.set()
        await self._collector
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(QueueClosed("the server is shutting down"))
        self._pending.clear()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)

    # ---- the collector ---------------------------------------------------------------------------

    async def _collect(self) -> None:
        while True:
            await self._slots.acquire()  # a free worker first: meanwhile, requests pile up
            batch = await self._next_batch()
            if batch is None:
                self._slots.release()
                return
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _wait_arrival(self, timeout: float | None) -> bool:
        """Wait for the next submission (True) or ``timeout`` seconds (False)."""
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _next_batch(self) -> list[_Pending] | None:
        """The next batch to run, or None once closed."""
        while True:
            # A client that went away cancelled its future: its item is not worth decoding.
            self._pending = [p for p in self._pending if not p.future.done()]
            if self._closed:
                return None
            if self._pending:
                break
            await self._wait_arrival(None)
        first = self._pending[0]
        if first.alone:
            return [self._pending.pop(0)]
        deadline = first.arrived + self.wait_s
        while True:
            batch = [p for p in self._pending if p.key == first.key and not p.alone]
            batch = batch[: self.max_batch]
            remaining = deadline - self._loop.time()
            if len(batch) >= self.max_batch or remaining <= 0 or self._closed:
                break
            if not await self._wait_arrival(remaining):
                batch = [p for p in self._pending if p.key == first.key and not p.alone]
                batch = batch[: self.max_batch]
                break
        chosen = set(map(id, batch))
        self._pending = [p for p in self._pending if id(p) not in chosen]
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        key = batch[0].key
        try:
            self.stats.record(len(batch))
            results = await self._loop.run_in_executor(
                self._executor, self.run_batch, key, [p.item for p in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except Exception as e:
            if not isinstance(e, self.expected):
                log.error("a batch of %d request(s) failed", len(batch), exc_info=e)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(BatchFailed(e))
        else:
            for pending, result in zip(batch, results):
                if not pending.future.done():
                    pending.future.set_result(result)
        finally:
            self._slots.release()
