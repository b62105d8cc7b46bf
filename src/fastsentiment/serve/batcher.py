"""Dynamic batching: requests from many clients become few, well-packed model calls.

Texts are tokenized on arrival and queued as items. One worker takes items in arrival order until
a batch is full (count or padded-token budget) or the oldest item has waited `max_wait_ms`, runs
the batch on a thread (the event loop never blocks on the model), and resolves each item's future.
While a batch runs, new arrivals queue up, so under load batches fill without any waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int = 64
    max_batch_tokens: int = 16384
    max_wait_ms: float = 0.0  # no waiting: under load, batches form while the previous one runs (as in TEI)
    max_queue: int = 2048


class QueueFull(Exception):
    """The queue has no room for a request; the client should retry later."""


@dataclass
class _Item:
    ids: Sequence[int]
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[list[Sequence[int]]], np.ndarray],
        settings: BatchSettings,
        on_batch: Callable[[int, float], None] = lambda size, seconds: None,
    ) -> None:
        self._run_batch = run_batch
        self.settings = settings
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastsentiment-batch")
        self._worker: asyncio.Task | None = None
        self._busy = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def submit(self, sequences: list[Sequence[int]]) -> np.ndarray:
        """Queue all of one request's texts (all or none) and wait for their logits."""
        if len(self._queue) + len(sequences) > self.settings.max_queue:
            raise QueueFull(f"queue full ({len(self._queue)} texts waiting)")
        loop = asyncio.get_running_loop()
        items = [_Item(ids, loop.create_future()) for ids in sequences]
        self._queue.extend(items)
        self._wakeup.set()
        try:
            return np.stack(await asyncio.gather(*(item.future for item in items)))
        except asyncio.CancelledError:
            for item in items:  # the client went away: its queued texts need not be computed
                item.future.cancel()
            raise

    async def drain(self) -> None:
        """Finish every queued item, then stop the worker."""
        while self._queue or self._busy:
            await asyncio.sleep(0.005)
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._wait_for_batch()
            batch = self._take_batch()
            if not batch:
                continue
            self._busy = True
            started = time.perf_counter()
            try:
                logits = await loop.run_in_executor(self._executor, self._run_batch, [item.ids for item in batch])
            except Exception as error:  # a failing batch fails its own requests only
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
            else:
                for item, row in zip(batch, logits, strict=True):
                    if not item.future.done():
                        item.future.set_result(row)
            finally:
                self._busy = False
            self._on_batch(len(batch), time.perf_counter() - started)

    async def _wait_for_batch(self) -> None:
        """Give a lone request up to max_wait_ms for company, unless a full batch is already here."""
        deadline = self._queue[0].arrived + self.settings.max_wait_ms / 1000
        while len(self._queue) < self.settings.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        longest = 0
        while self._queue and len(batch) < self.settings.max_batch_size:
            item = self._queue[0]
            if item.future.done():  # cancelled by a client that disconnected
                self._queue.popleft()
                continue
            padded = (len(batch) + 1) * max(longest, len(item.ids))
            if batch and padded > self.settings.max_batch_tokens:
                break
            longest = max(longest, len(item.ids))
            batch.append(self._queue.popleft())
        return batch
