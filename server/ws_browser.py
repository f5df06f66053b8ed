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

from .errors import ProtocolError
from .hub import Viewer
from .service import Gradwatch
from .wsendpoint import authenticated_endpoint
from .wsutil import check_handshake, describe, receive_text

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


class _Page:
    """One page's connection: a viewer of the hub, and the page's subscribe/compare messages."""

    def __init__(self, gw: Gradwatch, websocket: WebSocket, viewer: Viewer, snapshot: str) -> None:
        self.gw, self.websocket, self.viewer, self.snapshot = gw, websocket, viewer, snapshot

    async def run(self) -> None:
        viewer = self.viewer
        viewer.offer(page_message_text(ServerHello()))
        viewer.offer(self.snapshot)
        while not viewer.closed:
            await _handle(self.gw, viewer, await receive_text(self.websocket))

    async def refusing(self, error: ProtocolError) -> None:
        log.info("closing browser connection: %s", error.reason)
        await self.gw.hub.remove(self.viewer)

    async def end(self) -> None:
        await self.gw.hub.remove(self.viewer)


async def _start(gw: Gradwatch, websocket: WebSocket) -> _Page:
    # Snapshot first, then register and queue hello + runs (``_Page.run``) with no await in
    # between, so no broadcast can overtake the greeting the protocol promises.
    snapshot = await gw.queries.runs_message()
    return _Page(gw, websocket, gw.hub.add(websocket), snapshot)


browser_endpoint = authenticated_endpoint(
    "browser", _start, unauthorized="missing or wrong token: open /login?token=<token> first", cookie=True
)
