"""Dynamic batching: requests from many clients become few, well-packed model calls.

Texts are queued as they arrive, untouched: the event loop only parses HTTP and JSON. One worker
takes queued texts in arrival order until a batch is full (`max_batch_size`) or the oldest text has
waited `max_wait_ms`, and hands the batch to a thread, which tokenises it in one call (the
`tokenizers` library encodes a batch in parallel, without the GIL), keeps the texts that fit the
token budget, gives back the rest, already tokenised, to the queue (at once, for a free slot to take), and runs
the model. While a batch runs, new arrivals queue up, so under load batches fill without any waiting.
A text the tokenizer rejects fails its own request only. Where the backend runs several calls at once
(`concurrency`, OpenVINO's streams), that many batches are in flight: a request that arrives while
one batch computes starts at once on a free stream instead of waiting for it.

Such a backend is slower on a lone text than the same model with every thread on one call (`run_alone`),
so a batch runs there, holding every slot, when the machine is quiet: nothing in flight, no more than
`alone_up_to` texts queued, and no request arrived during the last QUIET_BATCHES batches. The last
condition matters: the event loop needs a core whenever a request comes in, and a call split over every
core waits for its slowest thread (on 2 cores at half load, running alone whenever nothing was in flight
took the served median from 6.7 to 19 ms). So a client alone gets the whole CPU; overlapping ones keep
to the streams.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from fastsentiment.errors import InputError

# The token budget of a gathered batch where none is given: this many per text of a model call (1,024 on a CPU, whose
# model calls take 8 texts; 32,768 on a CUDA GPU's 256). It bounds how long a short request waits behind a large one:
# on the 2-core AVX-512 EPYC a short request sent while a request of 96 texts of 512 tokens ran waited 0.22 s (median)
# at 1,024 and 0.50 s at 2,048 (docs/benchmarks.md, note 22), against the whole 4 s of the large request at the former 16,384.
TOKENS_PER_CALL_TEXT = 128

# Batches in a row without an arrival during their computation before a batch may run alone: one quiet batch
# happens often at half load too, where running alone cost more than it gave (10.3 against 6.7 ms median).
QUIET_BATCHES = 4


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int = 64
    max_batch_tokens: int | None = None  # None: TOKENS_PER_CALL_TEXT per text of a model call
    max_wait_ms: float = 0.0  # no waiting: under load, batches form while the previous one runs (as in TEI)
    max_queue: int = 2048
    # Smaller requests go first under load; texts passed over for longer than this get up to half of each batch.
    max_deferral_ms: float = 500.0


class QueueFull(Exception):
    """The queue has no room for a request; the client should retry later."""


Encode = Callable[[list[str]], list[Sequence[int]]]
RunBatch = Callable[[list[Sequence[int]]], np.ndarray]


@dataclass
class _Item:
    text: str
    future: asyncio.Future
    request_size: int = 1  # model inputs in the item's request: smaller requests go first
    arrived: float = field(default_factory=time.perf_counter)
    # Set by the worker thread, and kept when the item goes back to the queue.
    ids: Sequence[int] | None = None
    error: Exception | None = None


@dataclass
class _Outcome:
    done: list[_Item]
    results: list[np.ndarray | Exception]


class DynamicBatcher:
    def __init__(
        self,
        encode: Encode,
        run_batch: RunBatch,
        settings: BatchSettings,
        on_batch: Callable[[int, float], None] = lambda size, seconds: None,
        concurrency: int = 1,
        run_alone: RunBatch | None = None,
        alone_up_to: int = 1,
        name_text: Callable[[int], str] = lambda index: f"text {index + 1}",
        call_size: int = 8,
    ) -> None:
        """`call_size`: texts per model call of `run_batch` (the default token budget is made of it)."""
        if settings.max_batch_tokens is None:
            settings = replace(settings, max_batch_tokens=TOKENS_PER_CALL_TEXT * call_size)
        self._encode = encode
        self._name_text = name_text  # what a refusal calls a request's text, by its place in the request
        self._run_batch = run_batch
        self._run_alone = run_alone
        self._alone_up_to = alone_up_to
        self.settings = settings
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._concurrency = max(1, concurrency)
        self._executor = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="fastsentiment-batch")
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self._running: set[asyncio.Task] = set()  # batches in flight
        self._computing = 0  # of those, batches whose model call has not returned (a slot held)
        self._arrivals = 0  # requests submitted so far
        self._quiet_batches = QUIET_BATCHES  # batches in a row during which no request arrived

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._worker = self._loop.create_task(self._work())

    async def submit(self, texts: Sequence[str] | Sequence[Sequence[int]]) -> np.ndarray:
        """Queue all of one request's texts (all or none) and wait for their logits. Token-id sequences (the
        windows of long documents) are queued as they are; texts are tokenised by the worker."""
        if len(self._queue) + len(texts) > self.settings.max_queue:
            raise QueueFull(f"queue full ({len(self._queue)} texts waiting)")
        loop = asyncio.get_running_loop()
        size = len(texts)
        items = [
            _Item(text, loop.create_future(), size)
            if isinstance(text, str)
            else _Item("", loop.create_future(), size, ids=text)
            for text in texts
        ]
        self._queue.extend(items)
        self._arrivals += 1
        self._wakeup.set()
        try:
            if len(items) == 1:  # the common case, without gather's bookkeeping
                try:
                    return (await items[0].future)[None, :]
                except InputError as error:
                    raise self._named(items, error) from None
            results = await asyncio.gather(*(item.future for item in items), return_exceptions=True)
            failed = next((result for result in results if isinstance(result, BaseException)), None)
            if failed is not None:  # the first of the request's texts that failed, whichever batch finished first
                raise self._named(items, failed) if isinstance(failed, InputError) else failed
            return np.stack(results)
        except BaseException:
            for item in items:  # the client went away or one text failed: the others need not be computed
                item.future.cancel()
            self._forget(items)
            raise

    def _forget(self, items: list[_Item]) -> None:
        """Take a finished request's texts out of the queue now: left there until a slot took them, they counted
        against max_queue and refused live requests with 503 (queue full) while every slot was busy."""
        gone = {id(item) for item in items}
        kept = [item for item in self._queue if id(item) not in gone]
        if len(kept) != len(self._queue):
            self._queue.clear()
            self._queue.extend(kept)

    def _named(self, items: list[_Item], error: InputError) -> InputError:
        """A text the worker refused, named by its place in the request."""
        index = next((index for index, item in enumerate(items) if item.error is error), None)
        return error if index is None else InputError(f"{self._name_text(index)}: {error}")

    async def drain(self) -> None:
        """Finish every queued item, then stop the worker."""
        while self._queue or self._running:
            await asyncio.sleep(0.005)
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        slots = asyncio.Semaphore(self._concurrency)
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await slots.acquire()
            if not self._queue:  # emptied while every slot was busy: its requests' clients went away
                slots.release()
                continue
            await self._wait_for_batch()
            alone = (
                self._run_alone is not None
                and self._quiet_batches >= QUIET_BATCHES
                and not self._computing
                and len(self._queue) <= self._alone_up_to
            )
            batch, overdue = self._take_batch()
            if not batch:
                slots.release()
                continue
            held = 1
            if alone:  # nothing in flight: the other slots are free, and stay taken until this batch is done
                for _ in range(self._concurrency - 1):
                    await slots.acquire()
                held = self._concurrency
            run = self._run_alone if alone else self._run_batch
            self._computing += 1
            task = asyncio.get_running_loop().create_task(self._run(batch, overdue, run, slots, held))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Item], overdue: int, run: RunBatch, slots: asyncio.Semaphore, held: int) -> None:
        started, arrivals = time.perf_counter(), self._arrivals
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._compute, batch, overdue, run
            )
        except Exception as error:  # a failing batch fails its own requests only
            outcome = _Outcome(batch, [error] * len(batch))
        finally:
            self._computing -= 1
            self._quiet_batches = self._quiet_batches + 1 if self._arrivals == arrivals else 0
            for _ in range(held):
                slots.release()
        for item, result in zip(outcome.done, outcome.results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, Exception):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
        if outcome.done:
            self._on_batch(len(outcome.done), time.perf_counter() - started)

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

    def _take_batch(self) -> tuple[list[_Item], int]:
        """Up to max_batch_size live items, smallest requests first (then by arrival), so that one request of
        hundreds of inputs (a long document's windows) shares the model with short ones instead of going first;
        but texts passed over for longer than max_deferral_ms come first, up to half of the batch (and half of its
        tokens: `_within_token_budget`), oldest first, so that under sustained load such a request still advances
        instead of waiting until its client gives up. Also how many of the batch's first items are those.

        The order applies whenever a request of several texts waits, not only when more texts wait than a batch
        takes: the token budget, not the count, is what a request of long texts runs into."""
        live = [item for item in self._queue if not item.future.done()]  # done: cancelled, the client went away
        size = self.settings.max_batch_size
        overdue: list[_Item] = []
        if any(item.request_size > 1 for item in live):
            overdue_since = time.perf_counter() - self.settings.max_deferral_ms / 1000
            overdue = sorted((item for item in live if item.arrived < overdue_since), key=lambda item: item.arrived)
            overdue = overdue[: max(1, size // 2)]
            first = {id(item) for item in overdue}
            others = sorted(
                (item for item in live if id(item) not in first), key=lambda item: (item.request_size, item.arrived)
            )
            live = overdue + others
        batch, rest = live[:size], live[size:]
        rest.sort(key=lambda item: item.arrived)
        self._queue.clear()
        self._queue.extend(rest)
        return batch, min(len(overdue), len(batch))

    # ---- on the worker thread ------------------------------------------------------------
    def _compute(self, batch: list[_Item], overdue: int, run: RunBatch) -> _Outcome:
        self._tokenise([item for item in batch if item.ids is None and item.error is None])
        fitting, leftover = self._within_token_budget(batch, overdue)
        if leftover:  # back to the queue now, not after the model call: a free slot takes them meanwhile
            self._loop.call_soon_threadsafe(self._give_back, leftover)
        runnable = [item for item in fitting if item.error is None]
        try:
            logits = run([item.ids for item in runnable]) if runnable else []
        except Exception as error:  # the model failed: every text of this batch fails, the server goes on
            rows: dict[int, np.ndarray | Exception] = {id(item): error for item in runnable}
        else:
            rows = {id(item): row for item, row in zip(runnable, logits, strict=True)}
        results = [item.error or rows[id(item)] for item in fitting]
        return _Outcome(fitting, results)

    def _give_back(self, leftover: list[_Item]) -> None:
        """Texts a batch took but had no budget for, ahead of the queue (they arrived before what is there); not those
        whose request ended meanwhile (`_forget` did not find them queued)."""
        self._queue.extendleft(reversed([item for item in leftover if not item.future.done()]))
        self._wakeup.set()

    def _tokenise(self, items: list[_Item]) -> None:
        if not items:
            return
        try:
            for item, ids in zip(items, self._encode([item.text for item in items]), strict=True):
                item.ids = ids
        except Exception:  # one text the tokenizer rejects must not fail its neighbours: encode one by one
            for item in items:
                try:
                    item.ids = self._encode([item.text])[0]
                except InputError as error:
                    item.error = error
                except Exception as error:
                    item.error = InputError(f"the text cannot be tokenised: {error}")

    def _within_token_budget(self, batch: list[_Item], overdue: int) -> tuple[list[_Item], list[_Item]]:
        """The texts, in the batch's order, whose tokens together fit `max_batch_tokens`, and the rest. The budget
        bounds how long a batch holds its slot, so that a short request waits for about one batch at most: a batch's
        work is its tokens, since it runs as length-sorted calls that pad little. Where the batch holds overdue texts
        (its first `overdue`) and others, each group has half of the budget: the overdue texts at least one text
        (so that they advance), the others as many as fit their half (so that one overdue text longer than its half
        does not shut a short request out, nor a long one double the batch). Texts count their own tokens: a call
        padded to a multiple (`--pad-to-multiple-of`) computes up to that many less one more per text."""
        budget = self.settings.max_batch_tokens
        mixed = 0 < overdue < len(batch)
        budgets = (budget // 2, budget - budget // 2) if mixed else (budget, budget)  # (overdue, others)
        used, taken = [0, 0], [0, 0]
        fitting: list[_Item] = []
        leftover: list[_Item] = []
        for index, item in enumerate(batch):
            group = 0 if index < overdue else 1
            cost = 0 if item.ids is None else len(item.ids)  # not tokenised (refused): costs the model nothing
            first_of_its_group = not taken[group] and (group == 0 or not mixed)
            if first_of_its_group or used[group] + cost <= budgets[group]:
                fitting.append(item)
                used[group] += cost
                taken[group] += 1
            else:
                leftover.append(item)
        return fitting, leftover
