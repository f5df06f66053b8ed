"""Batched step writer: ingest appends to memory, a task commits every ``flush_interval``.

Records are handed to the store's database thread in one transaction per
flush, so a ``kill -9`` loses at most about one interval of steps. The task
sleeps on an event while nothing is buffered (no timer: an idle server stays
asleep) and commits ``flush_interval`` after the first record arrives. Readers call
``flush()`` first; because the store runs its calls in order on one thread,
anything they read afterwards includes every step received before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gradwatch.protocol import StepRecord

from .store import Store

log = logging.getLogger("gradwatch.server.writer")

#: Errors that say a record itself cannot be stored (retrying cannot help), unlike a locked or full disk.
_UNSTORABLE = (OverflowError, ValueError, TypeError)


class StepWriter:
    def __init__(self, store: Store, flush_interval: float, max_buffered: int) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self._buffer: list[tuple[int, list[StepRecord]]] = []
        self._buffered = 0
        self._lock = asyncio.Lock()
        #: Set while records wait in the buffer: wakes the commit task.
        self._waiting = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gradwatch-step-writer")

    async def add(self, run_id: int, records: list[StepRecord]) -> None:
        self._buffer.append((run_id, records))
        self._buffered += len(records)
        self._waiting.set()
        if self._buffered >= self.max_buffered:  # back-pressure: the trainer waits for the disk
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            batch, self._buffer, self._buffered = self._buffer, [], 0
            try:
                await self.store.call(self.store.insert_steps, batch)
            except _UNSTORABLE as err:
                # A record the store cannot hold would fail every retry and hold back every run's
                # steps behind it: store the frames one by one and drop only the bad ones.
                log.error("a batch of steps could not be stored (%s); storing its frames one by one", err)
                await self._insert_separately(batch)
            except BaseException:
                self._requeue(batch)  # keep them for the next attempt
                raise

    async def _insert_separately(self, batch: list[tuple[int, list[StepRecord]]]) -> None:
        for i, item in enumerate(batch):
            try:
                await self.store.call(self.store.insert_steps, [item])
            except _UNSTORABLE as err:
                log.error("dropped %d steps of run %d that cannot be stored: %s", len(item[1]), item[0], err)
            except BaseException:
                self._requeue(batch[i:])
                raise

    def _requeue(self, batch: list[tuple[int, list[StepRecord]]]) -> None:
        self._buffer = batch + self._buffer
        self._buffered += sum(len(r) for _, r in batch)
        self._waiting.set()  # retried one interval from now

    async def _loop(self) -> None:
        while True:
            await self._waiting.wait()
            await asyncio.sleep(self.flush_interval)
            self._waiting.clear()  # records added from here on wake the next round
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing steps to %s failed; will retry", self.store.path)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
