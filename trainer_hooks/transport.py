"""The trainer's link to the server: a buffer, and a sender thread that drives one link strategy.

The training thread only ever calls ``put_record`` / ``put_control``, which
append to an in-memory buffer under a lock and return: no I/O, no waiting,
nothing that can raise. A sender thread owns the link: the websocket
(``link_ws.py``: connects with backoff, says hello, reconnects after any
failure) or, in offline mode, the run file (``link_offline.py``); this module
chooses it and sends the buffer into it (``pump``).

When the server is away the buffer holds up to ``max_buffer_bytes`` of
records; past that the oldest are dropped and an explicit ``gap`` message is
sent on reconnect, so the charts show the hole instead of hiding it.
Acknowledgements and status changes are small and rare: they are never dropped.

A record handed to the socket is not yet a record on the server's disk (it
may sit in a kernel buffer, in a stalled server's queue, or in its batched
writer for up to its flush interval when the server is killed). So every
``MARK_EVERY`` seconds the sender asks the server to confirm what it has
committed (a ``mark``); sent records are kept (at most a quarter of
``max_buffer_bytes``) until then, and sent again after every reconnect; the
server replaces a step it already has, so this is idempotent and a crash of
the server leaves no silent hole.
See docs/reliability.md for every bound.

Given a ``RunFile`` (spool.py), the records the buffer cannot hold are written
to it instead of being dropped (``spill.py``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from websockets.sync.client import ClientConnection, connect

from gradwatch.protocol import CommandMessage, Mark, Status, TrainerHello, dumps
from gradwatch.records import GAP_NAMES

from .link import Link
from .link_offline import OfflineLink
from .link_ws import WebsocketLink
from .outbox import MAX_BATCH, Outbox
from .spill import Spill
from .spool import RunFile

log = logging.getLogger("gradwatch.trainer")

#: Seconds between two ``mark`` requests while records flow.
MARK_EVERY = 0.2
#: Records wait at most this long for company before they are sent: one frame per
#: ~LINGER instead of one per step spares both processes (and the 2 cores they may
#: share with training) most of the per-frame work. Commands' acks never wait.
LINGER = 0.03


class Transport:
    """Buffered, reconnecting websocket sender; safe to call from the training thread.

    ``encode`` turns a buffered payload into a ``StepRecord`` dict on the
    sender thread, so the training thread never serialises anything.
    ``connect_fn`` is injectable for tests of the transport alone (``link_ws.py``).
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        hello: Callable[[int | None], TrainerHello],
        on_command: Callable[[CommandMessage], None],
        encode: Callable[[Any], dict[str, Any]],
        max_buffer_bytes: int = 64 * 2**20,
        connect_timeout: float = 5.0,
        connect_fn: Callable[..., ClientConnection] = connect,
        linger: float = LINGER,
        run_file: RunFile | None = None,
        offline: bool = False,
        prove_server: bool = False,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self._prepare = prepare  # run on the sender thread before the first hello (must not raise)
        self.linger = linger
        self._encode = encode
        self.max_buffer_bytes = max_buffer_bytes
        if offline and run_file is None:
            raise ValueError("an offline transport needs the run_file it writes to")
        self.run_file = run_file  # the spool (online) or the whole run (offline); written on the sender thread
        self.offline = offline
        # guarded by self._cond; online with a run file, overflow spills to it instead of being dropped
        self.outbox = Outbox(max_buffer_bytes, spill=run_file is not None and not offline, keep_sent=not offline)
        self._last_mark = 0.0  # monotonic time of the last mark sent (sender thread only)
        self._conn: ClientConnection | None = None  # the open connection, for close() to cut a stuck send
        self._cond = threading.Condition()
        self._stop = False  # set once close() has given up waiting, ends the sender
        self._thread: threading.Thread | None = None
        self._ws: Link | None = None
        self.run_id: int | None = None
        self.connected = threading.Event()
        self._warned = False
        self._failed: str | None = None
        self._status: Status | None = None  # the last state the trainer reported, re-sent after a reconnect
        self._spill = (
            None if run_file is None or offline else Spill(run_file, self.outbox, self._cond, hello, encode, self.warn)
        )
        self._link: WebsocketLink | OfflineLink
        if offline and run_file is not None:
            self._link = OfflineLink(self, hello, run_file)
        else:
            spool = None if run_file is None else str(run_file.path)
            self._link = WebsocketLink(self, hello, on_command, token, connect_timeout, connect_fn, prove_server, spool)

    @property
    def dropped(self) -> int:
        """Records dropped because the buffer was full."""
        return self.outbox.dropped

    @property
    def sent(self) -> int:
        return self.outbox.sent

    @property
    def spooled(self) -> int:
        """Records written to the spool file because the buffer could not hold them."""
        return 0 if self._spill is None else self._spill.spooled

    # ------------------------------------------------------------------ training thread

    def put_record(self, step: int, payload: Any, nbytes: int) -> None:
        with self._cond:
            if self._failed is not None:
                return  # monitoring is off for this run: keep nothing
            if self.outbox.add_record(step, payload, nbytes, time.monotonic()):
                self._cond.notify()

    def put_control(self, message: BaseModel) -> None:
        """Queue a small message (ack, status, probe, origin) that is never dropped.

        Acks and the rest go out before any waiting steps (a command's confirmation
        never waits for a batch); a status goes out only after every step buffered
        before it, so "paused at N" or "finished" never arrives ahead of step N.
        """
        with self._cond:
            self.outbox.add_control(message)
            if isinstance(message, Status):
                self._status = message
            self._cond.notify()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gradwatch-sender", daemon=True)
        self._thread.start()

    def drain(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the buffer to empty, without closing; True if it did.

        Waits only while connected: with the server away nothing could go out anyway.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self.outbox.pending() and self._ws is not None and self._failed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(0.01, left))
            return not self.outbox.pending()

    def close(self, timeout: float) -> bool:
        """Deliver what is buffered within ``timeout`` seconds, then disconnect. True if all was sent.

        What is still buffered afterwards is ``undelivered``; the caller says so (once, for every run).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self.outbox.pending() and self._failed is None and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            delivered = not self.outbox.pending()
            self._stop = True
            self._cond.notify_all()
            conn = self._conn
        if not delivered and conn is not None:
            # A server that stopped reading leaves the sender blocked in send(); cut the socket so
            # the thread ends now instead of whenever the kernel gives up.
            with contextlib.suppress(OSError):
                conn.socket.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
        return delivered

    @property
    def closed(self) -> bool:
        """``close`` was called: nothing more goes out."""
        return self._stop

    @property
    def undelivered(self) -> int:
        """Records and messages still buffered (after ``close``: never to be delivered)."""
        with self._cond:
            return 0 if self._failed is not None else self.outbox.pending_count()

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        try:
            if self._prepare is not None:
                self._prepare()
            self._link.run()
        finally:
            if self.run_file is not None:
                self._write_spilled()  # what overflowed last still goes to disk
                self.run_file.close()

    # ------------------------------------------------------------------ for the link strategies (``link.LinkHost``)

    @property
    def stopping(self) -> bool:
        return self._stop

    def hold(self, conn: ClientConnection) -> None:
        with self._cond:
            self._conn = conn

    def attach(self, link: Link, run_id: int | None = None) -> None:
        with self._cond:
            self._ws = link
            if run_id is not None:
                reconnect = self.run_id is not None
                self.run_id = run_id
                # Whatever was sent shortly before the last connection ended may not have reached the
                # server's disk: send it again first (the server replaces steps it already has).
                self.outbox.reconnected()
                # The server calls a reconnected run "running"; unless a newer status is on its way,
                # say again what it is (idle between two fits, paused, interrupted).
                if reconnect and self._status is not None and not self.outbox.has_status():
                    self.outbox.add_control(self._status)
        self.connected.set()

    def detach(self) -> None:
        with self._cond:
            self._ws = self._conn = None
            self.connected.clear()

    def lost(self, link: Link) -> None:
        with self._cond:
            if self._ws is link:
                self._ws = None
                self.connected.clear()
            self._cond.notify_all()

    def confirmed(self, mark_id: int) -> None:
        with self._cond:
            self.outbox.confirmed(mark_id)

    def wait_retry(self, seconds: float) -> None:
        wake = time.monotonic() + seconds
        while not self._stop and time.monotonic() < wake:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stop or bool(self.outbox.spilled), timeout=max(0.0, wake - time.monotonic())
                )
            self._write_spilled()

    def _write_spilled(self) -> None:
        if self._spill is not None:  # online with a run file
            self._spill.write()

    def pump(self, ws: Link) -> None:
        self._write_spilled()
        box = self.outbox
        with self._cond:
            self._cond.wait_for(
                lambda: box.pending() or bool(box.spilled) or self._stop or self._ws is None, timeout=0.5
            )
            if box.records and not self._stop:
                deadline = box.records[0].queued + self.linger
                self._cond.wait_for(
                    lambda: bool(box.control) or len(box.records) >= MAX_BATCH or self._stop or self._ws is None,
                    timeout=max(0.0, deadline - time.monotonic()),
                )
            if self._ws is None:
                raise ConnectionError("the receiver saw the connection close")
            gap, resend, batch = box.take()
        try:
            self._send_controls(ws)
            if gap is not None:
                ws.send(dumps({"type": "gap", **dict(zip(GAP_NAMES, gap, strict=True))}))
                gap = None
            items = resend + batch
            if items:
                ws.send(dumps({"type": "steps", "records": [self._encode(item.payload) for item in items]}))
        except BaseException:
            with self._cond:
                box.not_sent(gap)
            raise
        if items:
            now = time.monotonic()
            with self._cond:
                box.delivered(now, resend, batch)
                mark = box.next_mark() if not self.offline and now - self._last_mark >= MARK_EVERY else None
                self._cond.notify_all()
            if mark is not None:
                self._last_mark = now
                ws.send(Mark(type="mark", id=mark).model_dump_json())
            self._send_controls(ws)  # a status that waited for these steps

    def _send_controls(self, ws: Link) -> None:
        """Send every queued control message whose preceding steps have left the buffer."""
        with self._cond:
            ready = self.outbox.ready_controls()
        for entry in ready:
            ws.send(entry[1].model_dump_json())
            with self._cond:
                self.outbox.control.remove(entry)

    def fail(self, reason: str) -> None:
        self.warn(f"gradwatch: {reason}; monitoring is off for this run, training continues")
        with self._cond:
            self._failed = reason
            self.outbox.clear()
            self._cond.notify_all()

    def warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        else:
            log.debug(message)
