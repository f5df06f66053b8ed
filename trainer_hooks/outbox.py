"""What the trainer has yet to deliver: records, control messages, the gap, the re-send window.

A plain data structure with the delivery rules and no I/O; ``Transport`` owns
the lock that guards it and the threads that drain it.

- Records are kept up to ``max_bytes``; past that the oldest are dropped and
  counted into one pending ``gap`` (``[from_step, to_step, dropped]``).
- A control message is never dropped. An ack goes out before any waiting
  record; a ``Status`` only after every record buffered before it.
- With ``spill``, the records past ``max_bytes`` go to ``spilled`` instead, for the
  sender to write to a run file on disk (spool.py); what the disk budget refuses
  comes back through ``lose`` into the gap.
- Sent records are kept (at most a quarter of ``max_bytes``) and queued
  again, first, after a reconnect, until the server confirms them: it answers
  a ``mark`` once the frames before it are committed to its database. A server
  that takes frames late (stalled, throttling, its disk full) is waited for.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from gradwatch.protocol import Status

#: Records per ``steps`` frame at most; keeps frames far below MAX_FRAME_BYTES.
MAX_BATCH = 64


@dataclass
class Item:
    step: int
    nbytes: int
    payload: Any
    queued: float = 0.0  # time.monotonic() when it was buffered
    seq: int = 0  # order of buffering, from 1


class Outbox:
    def __init__(self, max_bytes: int, spill: bool = False, keep_sent: bool = True) -> None:
        self.max_bytes = max_bytes
        self.spill = spill
        self.keep_sent = keep_sent  # False: nothing to re-send (an offline run file is its own record)
        self.spilled: collections.deque[Item] = collections.deque()  # past max_bytes, to write to disk
        self.records: collections.deque[Item] = collections.deque()
        # Taken for the frame on the wire: out of the overflow's reach (the server may already have
        # them, so dropping one would report it lost while it is stored), back to ``records`` if it fails.
        self.sending: list[Item] = []
        # (seq of the last record buffered before it, message): a status waits for those records.
        self.control: collections.deque[tuple[int, BaseModel]] = collections.deque()
        self.gap: list[int] | None = None  # [from_step, to_step, dropped] not yet reported
        self.resend: collections.deque[Item] = collections.deque()  # to send first on this connection
        self.dropped = 0
        self.sent = 0
        self._seq = 0
        self._bytes = 0
        # Sent, kept for re-sending after a reconnect: (the mark that will confirm it, item), in send order.
        self._recent: collections.deque[tuple[int, Item]] = collections.deque()
        self._recent_bytes = 0
        self._marks = 0  # marks sent so far; the next covers what is sent from now on

    @property
    def queued_bytes(self) -> int:
        """Bytes of the records buffered now (at most ``max_bytes``, or one record)."""
        return self._bytes

    def add_record(self, step: int, payload: Any, nbytes: int, now: float) -> bool:
        """Buffer a record, dropping the oldest past the budget; True if the sender should wake."""
        self._seq += 1
        self.records.append(Item(step, nbytes, payload, now, self._seq))
        self._bytes += nbytes
        while self._bytes > self.max_bytes and len(self.records) > 1:
            old = self.records.popleft()
            self._bytes -= old.nbytes
            if self.spill:
                self.spilled.append(old)
            else:
                self.lose(old)
        # The sender only needs waking for the first record (it then lingers), a full batch or a spill.
        return len(self.records) == 1 or len(self.records) >= MAX_BATCH or len(self.spilled) == 1

    def lose(self, item: Item) -> None:
        """``item`` will never be delivered: count it into the pending gap."""
        self.dropped += 1
        if self.gap is None:
            self.gap = [item.step, item.step, 0]
        self.gap[1] = item.step
        self.gap[2] += 1

    def take_spilled(self) -> list[Item]:
        """The records to write to disk now (at most one frame's worth)."""
        return [self.spilled.popleft() for _ in range(min(MAX_BATCH, len(self.spilled)))]

    def add_control(self, message: BaseModel) -> None:
        self.control.append((self._seq if isinstance(message, Status) else 0, message))

    def pending(self) -> bool:
        return bool(self.records or self.sending or self.control or self.gap or self.resend)

    def has_status(self) -> bool:
        """A ``Status`` waits to be sent."""
        return any(isinstance(message, Status) for _, message in self.control)

    def pending_count(self) -> int:
        return len(self.records) + len(self.sending) + len(self.control) + len(self.resend)

    def take(self) -> tuple[list[int] | None, list[Item], list[Item]]:
        """The gap (now taken over: drops from here on start a new one), re-sends and records for one frame.

        The records move to ``sending`` until ``delivered`` or ``not_sent``.
        """
        assert not self.sending, "one frame at a time"
        gap, self.gap = self.gap, None
        resend = [self.resend[i] for i in range(min(MAX_BATCH, len(self.resend)))]
        batch = [self.records.popleft() for _ in range(min(MAX_BATCH - len(resend), len(self.records)))]
        self._bytes -= sum(item.nbytes for item in batch)
        self.sending = batch
        return gap, resend, batch

    def not_sent(self, gap: list[int] | None) -> None:
        """The frame did not go out: its records are buffered again, first, and ``gap`` is reported on
        the next connection, merged with any newer drops."""
        self.records.extendleft(reversed(self.sending))
        self._bytes += sum(item.nbytes for item in self.sending)
        self.sending = []
        if gap is not None:
            self.gap = gap if self.gap is None else [gap[0], self.gap[1], gap[2] + self.gap[2]]

    def delivered(self, now: float, resend: list[Item], batch: list[Item]) -> None:
        """``resend`` and ``batch`` went out (at ``now``): forget them, but keep them for a re-send."""
        for item in resend:
            if self.resend and self.resend[0] is item:
                self.resend.popleft()
        self.sending = []
        if self.keep_sent:
            for item in (*resend, *batch):
                self._recent.append((self._marks + 1, item))
                self._recent_bytes += item.nbytes
        self._trim()
        self.sent += len(batch)

    def next_mark(self) -> int:
        """The id of a ``mark`` to send now: its answer confirms everything sent before it."""
        self._marks += 1
        return self._marks

    def confirmed(self, mark: int) -> None:
        """The server answered ``mark``: what was sent before it is on its disk."""
        while self._recent and self._recent[0][0] <= mark:
            self._recent_bytes -= self._recent.popleft()[1].nbytes

    def _trim(self) -> None:
        """Past the budget, the oldest kept for a re-send are forgotten (most likely stored already)."""
        budget = max(1, self.max_bytes // 4)
        while self._recent and self._recent_bytes > budget:
            self._recent_bytes -= self._recent.popleft()[1].nbytes

    def ready_controls(self) -> list[tuple[int, BaseModel]]:
        """Control messages whose preceding records have left the buffer."""
        first = (self.sending or self.records or [Item(0, 0, None, seq=self._seq + 1)])[0].seq
        return [entry for entry in self.control if entry[0] < first]

    def reconnected(self) -> None:
        """A new connection: what the last one sent and the server may not have committed goes out again first."""
        again = {id(item): item for item in (*(i for _, i in self._recent), *self.resend)}
        self.resend = collections.deque(sorted(again.values(), key=lambda i: i.step))
        self._recent.clear()
        self._recent_bytes = 0

    def clear(self) -> None:
        self.records.clear()
        self.sending.clear()
        self.spilled.clear()
        self.control.clear()
        self.resend.clear()
        self._recent.clear()
        self._bytes = self._recent_bytes = 0
