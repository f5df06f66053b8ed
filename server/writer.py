"""Batched step writer: ingest appends to memory, a task commits every ``flush_interval``.

Records are handed to the store's database thread in one transaction per
flush, so a ``kill -9`` loses at most about one interval of steps. Readers call
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


class StepWriter:
    def __init__(self, store: Store, flush_interval: float, max_buffered: int) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self._buffer: list[tuple[int, list[StepRecord]]] = []
        self._buffered = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gradwatch-step-writer")

    async def add(self, run_id: int, records: list[StepRecord]) -> None:
        self._buffer.append((run_id, records))
        self._buffered += len(records)
        if self._buffered >= self.max_buffered:  # back-pressure: the trainer waits for the disk
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            batch, self._buffer, self._buffered = self._buffer, [], 0
            try:
                await self.store.call(self.store.insert_steps, batch)
            except BaseException:
                self._buffer = batch + self._buffer  # keep them for the next attempt
                self._buffered += sum(len(r) for _, r in batch)
                raise

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
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
