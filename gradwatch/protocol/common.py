"""What both websocket links share: the protocol version, the paths, the frame limit, close codes, base models."""

from __future__ import annotations

from enum import IntEnum
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

PROTOCOL_VERSION = 3

#: Largest websocket frame either side accepts. A step record of 2,000
#: variables is about 60 KB; a batch of records stays well under this.
MAX_FRAME_BYTES = 4 * 1024 * 1024

TRAINER_PATH = "/ws/trainer"
BROWSER_PATH = "/ws/browser"


def trainer_ws_url(server: str) -> str:
    """``http://host:port`` (or ws://, https://, wss://) → the trainer websocket URL."""
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"server={server!r} is not a URL like 'http://127.0.0.1:8765'")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + TRAINER_PATH, "", ""))


class CloseCode(IntEnum):
    """Websocket close codes used by gradwatch (4000-4999 is the private range)."""

    UNAUTHORIZED = 4401
    FORBIDDEN_ORIGIN = 4403
    PROTOCOL_MISMATCH = 4426
    BAD_MESSAGE = 4400
    TOO_SLOW = 4408  # a viewer fell too far behind; it should reconnect and backfill
    #: The server cannot write its database (disk full, I/O error): nothing it acknowledged is lost; the trainer
    #: keeps what it has not sent and reconnects (refused again until the store writes again).
    STORAGE_UNAVAILABLE = 4507
    # The standard codes gradwatch sends (RFC 6455, 7.4.1):
    SERVER_SHUTDOWN = 1001
    #: The request broke a server policy: a Host header not allowed (DNS rebinding guard, ``server/auth.py``).
    POLICY_VIOLATION = 1008
    #: The server failed unexpectedly; the trainer reconnects and resends what was not acknowledged.
    INTERNAL_ERROR = 1011
    #: Not now: a run file's sync while that run's trainer is connected (``server/matching.py``).
    TRY_AGAIN_LATER = 1013


def version_mismatch_reason(got: object) -> str:
    return (
        f"protocol version {got!r} is not supported; this server speaks {PROTOCOL_VERSION}. "
        "Upgrade gradwatch on both sides."
    )


# A message a peer sends: unknown fields refused, immutable once parsed.
class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# What the server sends the page (and REST returns): unknown fields refused.
class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")
