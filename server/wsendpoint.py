"""The skeleton both websocket endpoints share: Origin check, accept, token check, the endpoint's
conversation, then the close its ending calls for.

A foreign ``Origin`` is refused before accept (the handshake is answered HTTP 403); a missing or wrong
token gets ``UNAUTHORIZED``; a peer breaking the protocol gets its ``ProtocolError``'s code and reason,
anything unexpected ``INTERNAL_ERROR``; a peer that left first gets nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.websockets import WebSocket

from gradwatch.protocol import CloseCode

from .auth import foreign_origin, presented_token, token_matches
from .errors import ProtocolError
from .service import Gradwatch
from .wsutil import Disconnected, close


class Conversation(Protocol):
    """One authenticated connection's exchange, as the endpoint drives it."""

    async def run(self) -> None:
        """Talk until the peer leaves (``Disconnected``) or breaks the protocol (``ProtocolError``)."""
        ...

    async def refusing(self, error: ProtocolError) -> None:
        """Say why the connection is about to be closed with ``error`` (before the close)."""
        ...

    async def end(self) -> None:
        """Forget the connection, however it ended."""
        ...


#: Makes the conversation of an accepted, authenticated websocket (before ``Conversation.run``).
Start = Callable[[Gradwatch, WebSocket], Awaitable[Conversation]]


def authenticated_endpoint(
    name: str, start: Start, *, unauthorized: str, cookie: bool
) -> Callable[[WebSocket], Awaitable[None]]:
    """The ASGI websocket endpoint of ``name`` ("browser", "trainer"): ``unauthorized`` is the close reason
    for a missing or wrong token; ``cookie``: the login cookie counts (pages), else only the header."""
    log = logging.getLogger(f"gradwatch.server.{name}")

    async def endpoint(websocket: WebSocket) -> None:
        gw: Gradwatch = websocket.app.state.gradwatch
        if foreign_origin(websocket):
            await websocket.close()  # before accept: the handshake is answered HTTP 403, no socket is opened
            return
        await websocket.accept()
        token, source = presented_token(websocket.headers, websocket.cookies if cookie else {})
        if source is None or not token_matches(token, websocket.app.state.token):
            await close(websocket, CloseCode.UNAUTHORIZED, unauthorized)
            return
        conversation = await start(gw, websocket)
        try:
            await conversation.run()
        except Disconnected:
            pass
        except ProtocolError as e:
            await conversation.refusing(e)
            await close(websocket, e.code, e.reason)
        except Exception:
            log.exception("internal error on a %s connection", name)
            await close(websocket, CloseCode.INTERNAL_ERROR, "internal server error; see the server log")
        finally:
            await conversation.end()

    return endpoint
