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

from .commands import TrainerLink
from .errors import ProtocolError
from .service import Gradwatch
from .throttle import Throttle
from .wsendpoint import authenticated_endpoint
from .wsutil import check_handshake, describe, receive_text

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


class _Trainer:
    """One trainer's connection: its hello opens the link of its run, then its frames, in order."""

    def __init__(self, gw: Gradwatch, websocket: WebSocket) -> None:
        self.gw, self.websocket = gw, websocket
        self.link: TrainerLink | None = None

    async def run(self) -> None:
        gw = self.gw
        try:
            hello = await _hello(self.websocket, gw.config.hello_timeout)
            self.link = link = await gw.ingest.open_run(hello, self.websocket)
            log.info("trainer connected: run %d (%s)", link.run_id, hello.run_name)
            throttle = Throttle(gw.config.trainer_frames_per_sec, gw.config.trainer_bytes_per_sec)
            while True:
                text = await receive_text(self.websocket)
                await throttle.take(len(text))
                await _dispatch(gw, link, text)
        except sqlite3.OperationalError as e:  # the store itself failed (disk full, I/O): the trainer retries later
            raise ProtocolError(
                CloseCode.STORAGE_UNAVAILABLE,
                f"the server cannot write its database ({e}); keep the reports and reconnect later",
            ) from e

    async def refusing(self, error: ProtocolError) -> None:
        where = f" of run {self.link.run_id}" if self.link else ""
        log.warning("closing trainer connection%s: %s", where, error.reason)

    async def end(self) -> None:
        if self.link is not None:
            await self.gw.ingest.trainer_gone(self.link)
            log.info("trainer of run %d disconnected", self.link.run_id)


async def _start(gw: Gradwatch, websocket: WebSocket) -> _Trainer:
    return _Trainer(gw, websocket)


trainer_endpoint = authenticated_endpoint(
    "trainer",
    _start,
    unauthorized="missing or wrong token: send 'Authorization: Bearer <token>'",
    cookie=False,  # trainers use the header, never the cookie
)
