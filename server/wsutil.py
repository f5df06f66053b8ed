"""Small helpers shared by the two websocket endpoints: receiving frames, decoding hellos, closing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketState

from gradwatch.protocol import PROTOCOL_VERSION, CloseCode, version_mismatch_reason

from .errors import ProtocolError

#: RFC 6455 limits a close reason to 123 bytes of UTF-8.
MAX_REASON_BYTES = 123


class Disconnected(Exception):
    """The peer closed the connection."""


def close_reason(text: str) -> str:
    raw = text.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return text
    return raw[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


def describe(error: ValidationError, limit: int = 3) -> str:
    """A short, human summary of a pydantic error: where, what, and the offending value."""
    parts = []
    for err in error.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        value = repr(err.get("input"))
        if len(value) > 40:
            value = value[:37] + "..."
        parts.append(f"{loc}: {err['msg']} (got {value})")
    more = error.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


async def receive_text(websocket: WebSocket, timeout: float | None = None) -> str:
    """The next text frame; raises ``Disconnected`` or ``ProtocolError`` (binary frame)."""
    message = await asyncio.wait_for(websocket.receive(), timeout) if timeout else await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise Disconnected()
    text = message.get("text")
    if text is None:
        raise ProtocolError(CloseCode.BAD_MESSAGE, "binary frames are not accepted; send JSON text frames")
    return str(text)


def check_handshake(text: str) -> dict[str, Any]:
    """First look at a hello: JSON object of type hello with our protocol version, else ``ProtocolError``.

    The version is checked before the full schema so a peer of another version
    is told exactly that (4426) rather than about some field it spells differently.
    """
    try:
        data = json.loads(text)
    except ValueError:
        raise ProtocolError(CloseCode.BAD_MESSAGE, "malformed JSON; the first message must be a hello") from None
    if not isinstance(data, dict) or data.get("type") != "hello":
        got = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise ProtocolError(CloseCode.BAD_MESSAGE, f"expected a 'hello' message first, got {got!r}")
    version = data.get("protocol")
    if isinstance(version, bool) or version != PROTOCOL_VERSION:
        raise ProtocolError(CloseCode.PROTOCOL_MISMATCH, version_mismatch_reason(version))
    return data


async def close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code=code, reason=close_reason(reason)), timeout=5)
