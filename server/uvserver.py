"""``QuietServer``: uvicorn's server without its 10 Hz timer, so an idle gradwatch sleeps in epoll.

uvicorn's ``Server.main_loop`` wakes every 0.1 s to notice ``should_exit`` and, once a second,
to refresh the ``Date`` response header. On the 2-core machines gradwatch shares with training,
those wake-ups were most of an idle server's CPU. Here exit is an event (``should_exit = True``
wakes the loop, from a signal handler or another thread alike) and the ``Date`` header is
computed when a response asks for it (at most once a second), so the headers sent are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from email.utils import formatdate

import uvicorn
from uvicorn.server import ServerState


class _ServerState(ServerState):
    """uvicorn's shared connection state; ``default_headers`` (Date + Server) is computed on read."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._config = config
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []
        super().__init__()

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        now = time.time()
        if int(now) != self._second:  # the same once-a-second resolution as uvicorn's timer
            self._second = int(now)
            date = [(b"date", formatdate(now, usegmt=True).encode())] if self._config.date_header else []
            self._headers = date + self._config.encoded_headers
        return self._headers

    @default_headers.setter
    def default_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        pass  # uvicorn's initial empty list; the getter builds the headers


class QuietServer(uvicorn.Server):
    """A drop-in ``uvicorn.Server`` that waits for exit instead of polling for it."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit_requested = False
        self._wake: Callable[[], None] | None = None
        super().__init__(config)
        self.server_state = _ServerState(config)

    @property
    def should_exit(self) -> bool:
        return self._exit_requested

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exit_requested = value
        wake = self._wake
        if value and wake is not None:
            wake()

    async def main_loop(self) -> None:
        if self.config.limit_max_requests is not None or self.config.callback_notify is not None:
            await super().main_loop()  # those features need uvicorn's timer; gradwatch uses neither
            return
        loop = asyncio.get_running_loop()
        exit_event = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(exit_event.set)

        self._wake = wake  # before the check below: a request in between still sets the event
        try:
            if not self.should_exit:
                await exit_event.wait()
        finally:
            self._wake = None
