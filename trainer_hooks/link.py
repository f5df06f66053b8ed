"""What a link strategy is and what it drives: the contract between ``transport.py`` and its strategies.

A strategy (``link_ws.py``: the websocket, reconnecting; ``link_offline.py``: the run file in offline mode)
runs on the transport's sender thread, establishes its link, then has the transport ``pump`` the buffer
into it until the transport stops. The buffer, its lock and the trainer's state stay in the transport.
"""

from __future__ import annotations

from typing import Protocol

from websockets.sync.client import ClientConnection


class Link(Protocol):
    """Where the sender's messages go: the websocket, or the run file in offline mode."""

    def send(self, message: str, /) -> None: ...


class LinkHost(Protocol):
    """The transport as its link strategies see it (every method is safe from the sender thread)."""

    url: str
    max_buffer_bytes: int

    @property
    def stopping(self) -> bool:
        """``close`` has given up waiting: the strategy ends."""
        ...

    @property
    def run_id(self) -> int | None:
        """The server's run id from the last welcome (None before the first)."""
        ...

    def hold(self, conn: ClientConnection) -> None:
        """``conn`` is being opened: ``close`` may cut it if a send is stuck."""
        ...

    def attach(self, link: Link, run_id: int | None = None) -> None:
        """``link`` is up (``run_id``: the server's welcome, so what it may not have stored is sent again)."""
        ...

    def detach(self) -> None:
        """The strategy's link is down (or never came up)."""
        ...

    def lost(self, link: Link) -> None:
        """The peer ended ``link``: the sender stops using it if it still is."""
        ...

    def pump(self, link: Link) -> None:
        """Send what is buffered into ``link`` (waits a little when nothing is)."""
        ...

    def wait_retry(self, seconds: float) -> None:
        """Wait ``seconds`` before the next attempt, spooling overflow meanwhile; returns early on stop."""
        ...

    def confirmed(self, mark_id: int) -> None:
        """The server committed every record sent before mark ``mark_id``."""
        ...

    def fail(self, reason: str) -> None:
        """Monitoring is off for this run: the strategy gives up for good."""
        ...

    def warn(self, message: str) -> None: ...
