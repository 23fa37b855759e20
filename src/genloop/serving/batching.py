"""Dynamic batching: concurrent requests to one model share one ``session.run``.

Each model has a queue of pending requests and one asyncio task draining it. The task waits for
the oldest pending request's ``max_delay`` to pass or for ``max_batch_rows`` rows to be waiting,
whichever comes first, concatenates the requests along the batch axis, runs the session once in a
worker thread (so the event loop keeps accepting requests meanwhile) and hands each request back
its own rows. A request larger than ``max_batch_rows`` runs alone.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from genloop.serving.sessions import ServedModel


class QueueFull(RuntimeError):
    """More rows are waiting for this model than the server accepts; the client should retry later."""


class ShuttingDown(RuntimeError):
    pass


@dataclass
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    rows: int = 0
    largest_batch_requests: int = 0
    largest_batch_rows: int = 0


# observe(model_name, requests_in_batch, rows_in_batch, run_seconds)
BatchObserver = Callable[[str, int, int, float], None]


class DynamicBatcher:
    def __init__(self, model: ServedModel, max_batch_rows: int, max_delay_ms: float, max_queue_rows: int,
                 observe: BatchObserver | None = None):
        self.model = model
        self.max_batch_rows = max_batch_rows
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue_rows = max_queue_rows
        self.observe = observe
        self.stats = BatchStats()
        self._pending: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        # One worker per model: onnxruntime already spreads one run over intra_op threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{model.name}")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"batcher-{self.model.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._fail(list(self._pending), ShuttingDown("the server is shutting down"))
        self._pending.clear()
        self._queued_rows = 0
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def infer(self, feeds: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """This request's outputs, computed in a batch with whatever else arrives meanwhile."""
        if self._task is None:
            raise ShuttingDown("the model is not being served (server starting or stopping)")
        if self._queued_rows and self._queued_rows + rows > self.max_queue_rows:
            raise QueueFull(f"model {self.model.name!r} has {self._queued_rows} rows waiting "
                            f"(limit {self.max_queue_rows}); retry later")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(feeds, rows, future))
        self._queued_rows += rows
        self._wakeup.set()
        return await future

    async def _drain(self) -> None:
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._pending[0].enqueued + self.max_delay
            while self._queued_rows < self.max_batch_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._run(batch)

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while self._pending:
            item = self._pending[0]
            if batch and rows + item.rows > self.max_batch_rows:
                break
            self._pending.popleft()
            self._queued_rows -= item.rows
            if item.future.done():  # the client went away (request cancelled)
                continue
            batch.append(item)
            rows += item.rows
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        names = self.model.input_names
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {name: np.concatenate([item.feeds[name] for item in batch], axis=0) for name in names}
        rows = sum(item.rows for item in batch)
        started = time.perf_counter()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self.model.run, feeds)
        except asyncio.CancelledError:
            self._fail(batch, ShuttingDown("the server is shutting down"))
            raise
        except Exception as exc:  # an onnxruntime failure fails every request of the batch, not the server
            self._fail(batch, exc)
            return
        seconds = time.perf_counter() - started
        s = self.stats
        s.batches += 1
        s.requests += len(batch)
        s.rows += rows
        s.largest_batch_requests = max(s.largest_batch_requests, len(batch))
        s.largest_batch_rows = max(s.largest_batch_rows, rows)
        if self.observe is not None:
            self.observe(self.model.name, len(batch), rows, seconds)
        offset = 0
        for item in batch:
            if not item.future.done():
                item.future.set_result({k: v[offset:offset + item.rows] for k, v in outputs.items()})
            offset += item.rows
