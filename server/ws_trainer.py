"""The trainer websocket (``protocol.TRAINER_PATH``): handshake, then steps/gap/ack/status/probe/nonfinite_origin in."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from pydantic import ValidationError
from starlette.websockets import WebSocket

from gradwatch.protocol import (
    Ack,
    CloseCode,
    Gap,
    Mark,
    NonfiniteOrigin,
    Probe,
    Snapshots,
    Status,
    Steps,
    TrainerHello,
    VariableSet,
    parse_trainer_hello,
    parse_trainer_message,
)

from .auth import foreign_origin, presented_token, token_matches
from .commands import TrainerLink
from .errors import ProtocolError
from .service import Gradwatch
from .throttle import Throttle
from .wsutil import Disconnected, check_handshake, close, describe, receive_text

log = logging.getLogger("gradwatch.server.trainer")


async def _hello(websocket: WebSocket, timeout: float) -> TrainerHello:
    try:
        text = await receive_text(websocket, timeout)
    except asyncio.TimeoutError:
        raise ProtocolError(CloseCode.BAD_MESSAGE, f"no hello within {timeout:g} s") from None
    check_handshake(text)
    try:
        hello = parse_trainer_hello(text)
    except ValidationError as e:
        raise ProtocolError(CloseCode.BAD_MESSAGE, f"bad hello: {describe(e)}") from None
    return hello


async def _dispatch(gw: Gradwatch, link: TrainerLink, text: str) -> None:
    try:
        msg = parse_trainer_message(text)
    except ValidationError as e:
        raise ProtocolError(CloseCode.BAD_MESSAGE, f"bad message: {describe(e)}") from None
    if isinstance(msg, Steps):
        await gw.ingest.steps(link, msg.records, len(text))
    elif isinstance(msg, Gap):
        await gw.ingest.add_gap(link, msg)
    elif isinstance(msg, Ack):
        await gw.ingest.handle_ack(link, msg)
    elif isinstance(msg, Status):
        await gw.ingest.handle_status(link, msg)
    elif isinstance(msg, Probe):
        await gw.ingest.add_probe(link, msg)
    elif isinstance(msg, NonfiniteOrigin):
        await gw.ingest.nonfinite_origin(link, msg)
    elif isinstance(msg, Snapshots):
        await gw.ingest.snapshots(link, msg)
    elif isinstance(msg, VariableSet):
        await gw.ingest.variable_set(link, msg)
    elif isinstance(msg, Mark):  # frames are handled in order: all before it were taken
        gw.ingest.answer_mark(link, msg)


async def trainer_endpoint(websocket: WebSocket) -> None:
    gw: Gradwatch = websocket.app.state.gradwatch
    if foreign_origin(websocket):
        await websocket.close()  # before accept: the handshake is answered HTTP 403, no socket is opened
        return
    await websocket.accept()
    token, source = presented_token(websocket.headers, {})  # trainers use the header, never the cookie
    if source is None or not token_matches(token, websocket.app.state.token):
        await close(websocket, CloseCode.UNAUTHORIZED, "missing or wrong token: send 'Authorization: Bearer <token>'")
        return
    link: TrainerLink | None = None
    try:
        hello = await _hello(websocket, gw.config.hello_timeout)
        link = await gw.ingest.open_run(hello, websocket)
        log.info("trainer connected: run %d (%s)", link.run_id, hello.run_name)
        throttle = Throttle(gw.config.trainer_frames_per_sec, gw.config.trainer_bytes_per_sec)
        while True:
            text = await receive_text(websocket)
            await throttle.take(len(text))
            await _dispatch(gw, link, text)
    except Disconnected:
        pass
    except ProtocolError as e:
        log.warning("closing trainer connection%s: %s", f" of run {link.run_id}" if link else "", e.reason)
        await close(websocket, e.code, e.reason)
    except sqlite3.OperationalError as e:  # the store itself failed (disk full, I/O): the trainer retries later
        log.warning(
            "closing trainer connection%s: the database failed: %s", f" of run {link.run_id}" if link else "", e
        )
        await close(
            websocket,
            CloseCode.STORAGE_UNAVAILABLE,
            f"the server cannot write its database ({e}); keep the reports and reconnect later",
        )
    except Exception:
        log.exception("internal error on a trainer connection")
        await close(websocket, CloseCode.INTERNAL_ERROR, "internal server error; see the server log")
    finally:
        if link is not None:
            await gw.ingest.trainer_gone(link)
            log.info("trainer of run %d disconnected", link.run_id)
