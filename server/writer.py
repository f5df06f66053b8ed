"""Batched step writer: ingest appends to memory, a task commits every ``flush_interval``.

Records are handed to the store's database thread in one transaction per
flush, so a ``kill -9`` loses at most about one interval of steps. The task
sleeps on an event while nothing is buffered (no timer: an idle server stays
asleep) and commits ``flush_interval`` after the first record arrives. Readers call
``flush()`` first; because the store runs its calls in order on one thread,
anything they read afterwards includes every step received before.

Failures are isolated. A frame the store rejects (a constraint, a value SQLite cannot hold) is
dropped alone and logged once per cause; the rest of the batch is stored. A failure of the store
itself (disk full, I/O error) keeps every buffered record and marks the writer ``failing``: ingest
then refuses new frames (``CloseCode.STORAGE_UNAVAILABLE``), ``/api/health`` says ``degraded``,
and the task retries frame by frame every interval, so a little freed space already drains part
of the backlog; the first complete write clears the state. ``flush()`` never raises into a reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass

from gradwatch.protocol import StepRecord

from .store import Store

log = logging.getLogger("gradwatch.server.writer")

#: Errors that say a frame itself cannot be stored (retrying cannot help), unlike a locked or full disk.
_UNSTORABLE = (OverflowError, ValueError, TypeError, sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.DataError)
#: Distinct causes logged; past this many, new ones are still counted but not logged.
_MAX_CAUSES = 100

Frame = tuple[int, list[StepRecord], int]  # run id, records, their size on the wire (bytes)


@dataclass(frozen=True)
class WriterHealth:
    #: Why writes fail (``None``: they do not), e.g. ``"database or disk is full"``.
    failing: str | None
    pending_steps: int
    pending_bytes: int
    #: Steps dropped since start because the store rejected them.
    dropped_steps: int


class StepWriter:
    def __init__(self, store: Store, flush_interval: float, max_buffered: int, max_buffered_bytes: int) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.max_buffered_bytes = max_buffered_bytes
        self._buffer: list[Frame] = []
        self._buffered = 0
        self._bytes = 0
        #: Steps taken out of the buffer by a write still under way (still pending for ``health``).
        self._writing = 0
        self._lock = asyncio.Lock()
        # Frames added and frames written (or dropped as unstorable) so far: frames are written in the
        # order they were added (a failed batch goes back to the front), so frame k is on disk once
        # ``_written >= k``. ``written()`` waits on it.
        self._added = 0
        self._written = 0
        self._progress = asyncio.Condition()
        #: Set while records wait in the buffer: wakes the commit task.
        self._waiting = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failing: str | None = None
        self.dropped = 0
        self._causes: set[str] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gradwatch-step-writer")

    def health(self) -> WriterHealth:
        return WriterHealth(self.failing, self._buffered + self._writing, self._bytes, self.dropped)

    async def add(self, run_id: int, records: list[StepRecord], size: int = 0) -> None:
        """Buffer one frame's records (``size``: its bytes on the wire, for the byte bound)."""
        self._buffer.append((run_id, records, size))
        self._added += 1
        self._buffered += len(records)
        self._bytes += size
        self._waiting.set()
        if self._buffered >= self.max_buffered or self._bytes >= self.max_buffered_bytes:
            await self.flush()  # back-pressure: the trainer waits for the disk

    async def flush(self) -> None:
        """Write what is buffered. Never raises: a failure is logged, kept in ``failing``, retried."""
        async with self._lock:
            if not self._buffer:
                return
            batch, self._buffer, self._writing, self._buffered, self._bytes = self._buffer, [], self._buffered, 0, 0
            try:
                await self._write(batch)
            finally:
                self._writing = 0
        async with self._progress:
            self._progress.notify_all()

    async def written(self) -> None:
        """Return once every frame added before this call is committed (or dropped as unstorable): what
        a trainer's ``mark`` is answered after. Waits through a failing store; never forces a flush."""
        target = self._added
        async with self._progress:
            await self._progress.wait_for(lambda: self._written >= target)

    async def _write(self, batch: list[Frame]) -> None:
        if self.failing is None:
            try:
                await self.store.call(self.store.insert_steps, [(r, recs) for r, recs, _ in batch])
                self._written += len(batch)
                return
            except _UNSTORABLE:
                pass  # a frame the store cannot hold would fail every retry: store them one by one, drop it
            except Exception as err:
                self._fail(err)
            except BaseException:
                self._requeue(batch)  # cancelled mid-write (shutdown): kept for stop()'s flush
                raise
        await self._insert_separately(batch)

    async def _insert_separately(self, batch: list[Frame]) -> None:
        for i, (run_id, records, _) in enumerate(batch):
            try:
                await self.store.call(self.store.insert_steps, [(run_id, records)])
                self._written += 1
            except _UNSTORABLE as err:
                self.dropped += len(records)
                self._written += 1
                self._note(f"dropped steps that cannot be stored: {err}", f"(run {run_id}, {len(records)} steps)")
            except Exception as err:
                self._fail(err)
                self._requeue(batch[i:])  # kept, in order, for the next attempt
                return
            except BaseException:
                self._requeue(batch[i:])
                raise
        if self.failing is not None:
            log.warning("writing steps to %s works again (%s before)", self.store.path, self.failing)
            self.failing = None

    def _note(self, cause: str, detail: str = "") -> None:
        """Log ``cause`` the first time it happens (a stream of bad frames must not flood the log)."""
        if cause in self._causes or len(self._causes) >= _MAX_CAUSES:
            return
        self._causes.add(cause)
        log.error("%s %s; further ones are dropped silently (see /api/health)", cause, detail)

    def _fail(self, err: Exception) -> None:
        cause = str(err) or type(err).__name__
        if self.failing != cause:
            log.error(
                "writing steps to %s failed (%s); %d steps kept in memory, retried every %g s; trainers are "
                "refused until it works",
                self.store.path,
                cause,
                self._buffered + self._writing,
                self.flush_interval,
            )
        self.failing = cause

    def _requeue(self, batch: list[Frame]) -> None:
        self._buffer = batch + self._buffer
        self._buffered += sum(len(r) for _, r, _ in batch)
        self._bytes += sum(size for _, _, size in batch)
        self._waiting.set()  # retried one interval from now

    async def _loop(self) -> None:
        while True:
            await self._waiting.wait()
            await asyncio.sleep(self.flush_interval)
            self._waiting.clear()  # records added from here on wake the next round
            await self.flush()

    async def stop(self, retry_for: float = 5.0) -> None:
        """Stop the task and write what is left, retrying a failing store for up to ``retry_for`` seconds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_for
        await self.flush()
        while self._buffer and loop.time() < deadline:
            await asyncio.sleep(self.flush_interval)
            await self.flush()
        if self._buffer:
            log.error(
                "shutting down with %d steps that could not be written to %s (%s): they are lost",
                self._buffered,
                self.store.path,
                self.failing,
            )
