"""The browser websocket (``protocol.BROWSER_PATH``): run list, live steps of one run (and of compared runs),
command updates."""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError
from starlette.websockets import WebSocket

from gradwatch.protocol import (
    BrowserHello,
    CloseCode,
    Compare,
    ServerHello,
    Subscribe,
    page_message_text,
    parse_browser_message,
)

from .auth import foreign_origin, presented_token, token_matches
from .errors import ProtocolError
from .hub import Viewer
from .service import Gradwatch
from .wsutil import Disconnected, check_handshake, close, describe, receive_text

log = logging.getLogger("gradwatch.server.browser")


async def _handle(gw: Gradwatch, viewer: Viewer, text: str) -> None:
    try:
        data = json.loads(text)
    except ValueError:
        raise ProtocolError(CloseCode.BAD_MESSAGE, "malformed JSON") from None
    if isinstance(data, dict) and data.get("type") == "hello":
        check_handshake(text)  # a page of another protocol version gets 4426
    try:
        msg = parse_browser_message(text)
    except ValidationError as e:
        raise ProtocolError(CloseCode.BAD_MESSAGE, f"bad message: {describe(e)}") from None
    if isinstance(msg, Subscribe):
        viewer.run_id = msg.run_id
        if msg.run_id is not None:
            run = await gw.queries.run_message(msg.run_id)
            if run is not None:
                viewer.offer(run)
    elif isinstance(msg, Compare):
        viewer.compared = frozenset(msg.run_ids)
    elif isinstance(msg, BrowserHello):
        pass  # version already checked


async def browser_endpoint(websocket: WebSocket) -> None:
    gw: Gradwatch = websocket.app.state.gradwatch
    if foreign_origin(websocket):
        await websocket.close()  # before accept: the handshake is answered HTTP 403, no socket is opened
        return
    await websocket.accept()
    token, source = presented_token(websocket.headers, websocket.cookies)
    if source is None or not token_matches(token, websocket.app.state.token):
        await close(websocket, CloseCode.UNAUTHORIZED, "missing or wrong token: open /login?token=<token> first")
        return
    # Snapshot first, then register and queue hello + runs with no await in
    # between, so no broadcast can overtake the greeting the protocol promises.
    snapshot = await gw.queries.runs_message()
    viewer = gw.hub.add(websocket)
    try:
        viewer.offer(page_message_text(ServerHello()))
        viewer.offer(snapshot)
        while not viewer.closed:
            await _handle(gw, viewer, await receive_text(websocket))
    except Disconnected:
        pass
    except ProtocolError as e:
        log.info("closing browser connection: %s", e.reason)
        await gw.hub.remove(viewer)
        await close(websocket, e.code, e.reason)
    except Exception:
        log.exception("internal error on a browser connection")
        await close(websocket, CloseCode.INTERNAL_ERROR, "internal server error; see the server log")
    finally:
        await gw.hub.remove(viewer)
