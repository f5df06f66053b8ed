"""Fan-out to browsers: one bounded queue and one sender task per viewer.

Messages are encoded once by the caller and the same text is queued for
every viewer. ``put_nowait`` never waits, so a slow viewer cannot slow the
trainer or the other viewers; when its queue is full (``queue_size`` messages
or ``queue_bytes`` bytes, whichever comes first: a wide model's messages are
large) it is closed with ``CloseCode.TOO_SLOW`` and should reconnect and
backfill over REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket

from gradwatch.protocol import CloseCode

log = logging.getLogger("gradwatch.server.hub")

#: How long a viewer that fell behind may take to read what is already on the wire before the close frame can
#: be written (the server's send waits for the socket to drain). Generous: giving up leaves the socket open with
#: no close frame, so a slow but live viewer would wait forever instead of reconnecting; a stalled one costs only
#: the one message already buffered.
CLOSE_GRACE_S = 120.0

#: Sentinel put on a queue to make its sender close the socket.
_CLOSE = object()


class Viewer:
    def __init__(self, websocket: WebSocket, queue_size: int, queue_bytes: int) -> None:
        self.websocket = websocket
        self.queue_bytes = queue_bytes
        #: Bytes of the texts in ``queue`` (the same string shared by many viewers counts for each).
        self.queued_bytes = 0
        self.run_id: int | None = None
        #: Runs whose live steps this viewer also wants (``protocol.Compare``).
        self.compared: frozenset[int] = frozenset()
        self.queue: asyncio.Queue[str | object] = asyncio.Queue(maxsize=queue_size)
        self.closed = False
        self.close_code: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sender(), name="gradwatch-viewer-sender")

    def offer(self, text: str) -> bool:
        """Queue ``text``; False (and the viewer is being closed) if it fell behind."""
        if self.closed:
            return False
        if self.queued_bytes + len(text) > self.queue_bytes and self.queued_bytes:
            log.warning("viewer fell %d bytes behind; closing it with %d", self.queued_bytes, CloseCode.TOO_SLOW)
            self.close(CloseCode.TOO_SLOW, "too slow: reconnect and reload history over REST")
            return False
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("viewer fell %d messages behind; closing it with %d", self.queue.maxsize, CloseCode.TOO_SLOW)
            self.close(CloseCode.TOO_SLOW, "too slow: reconnect and reload history over REST")
            return False
        self.queued_bytes += len(text)
        return True

    def close(self, code: int, reason: str) -> None:
        """Stop sending and close the socket from a separate task (closing may itself block)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        if self._task is not None:
            self._task.cancel()
        self._closer = asyncio.create_task(self._close(code, reason), name="gradwatch-viewer-close")

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.websocket.close(code=code, reason=reason), timeout=CLOSE_GRACE_S)

    async def _sender(self) -> None:
        try:
            while True:
                item = await self.queue.get()
                if not isinstance(item, str):
                    return
                self.queued_bytes -= len(item)
                await self.websocket.send_text(item)
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away; the receive loop notices and unregisters
            self.closed = True

    async def stop(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class Hub:
    def __init__(self, queue_size: int, queue_bytes: int) -> None:
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.viewers: set[Viewer] = set()

    def add(self, websocket: WebSocket) -> Viewer:
        viewer = Viewer(websocket, self.queue_size, self.queue_bytes)
        self.viewers.add(viewer)
        viewer.start()
        return viewer

    async def remove(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        await viewer.stop()

    def broadcast(self, text: str) -> None:
        """To every viewer (run list changes)."""
        for viewer in list(self.viewers):
            viewer.offer(text)

    def publish(self, run_id: int, text: str, *, compared: bool = False) -> None:
        """To the viewers subscribed to ``run_id`` (steps, gaps, commands), and with ``compared`` (steps) to those
        comparing it; a viewer that does both gets the text once."""
        for viewer in list(self.viewers):
            if viewer.run_id == run_id or (compared and run_id in viewer.compared):
                viewer.offer(text)

    def has_subscribers(self, run_id: int) -> bool:
        """Anyone who wants ``run_id``'s steps (subscribed or comparing)."""
        return any((v.run_id == run_id or run_id in v.compared) and not v.closed for v in self.viewers)

    def close_all(self, code: int, reason: str) -> None:
        for viewer in list(self.viewers):
            viewer.close(code, reason)
