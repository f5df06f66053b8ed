"""The server's own errors: a peer breaking the protocol, and a REST request naming a run it cannot act on."""

from __future__ import annotations


class ProtocolError(Exception):
    """A peer broke the protocol; the connection is closed with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RunNotFound(LookupError):
    pass


class RunFinished(Exception):
    pass
