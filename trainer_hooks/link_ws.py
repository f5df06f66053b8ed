"""The websocket link strategy: connect (with backoff), say hello, let the transport send, reconnect after
any failure; a receiver thread per connection turns server frames into commands and mark answers.

The server's refusals that retrying cannot fix (token, protocol, a bad message) end monitoring for the
run (``PermanentError``); anything else is retried, and the reports wait in the transport's buffer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from gradwatch.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    CloseCode,
    CommandMessage,
    Marked,
    TrainerHello,
    Welcome,
    parse_server_message,
)
from gradwatch.tokens import proves_token

from .link import LinkHost

log = logging.getLogger("gradwatch.trainer")

#: First and largest wait between connection attempts (doubling in between).
BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0
_PERMANENT_CLOSE = {CloseCode.UNAUTHORIZED, CloseCode.PROTOCOL_MISMATCH, CloseCode.BAD_MESSAGE}


class PermanentError(Exception):
    """The server refused us for a reason retrying cannot fix (token, protocol)."""


class WebsocketLink:
    """Runs the connection to ``host.url`` until the host stops (``run``, on the sender thread).

    ``prove_server``: the default local server, not one the user named: the token goes only to one that
    proves it knows it. ``connect_fn`` is injectable for tests of the transport alone.
    """

    def __init__(
        self,
        host: LinkHost,
        hello: Callable[[int | None], TrainerHello],
        on_command: Callable[[CommandMessage], None],
        token: str | None,
        connect_timeout: float,
        connect_fn: Callable[..., ClientConnection] = connect,
        prove_server: bool = False,
        spool_path: str | None = None,
    ) -> None:
        self.host = host
        self._hello = hello
        self._on_command = on_command
        self._token = token
        self._connect_timeout = connect_timeout
        self._connect_fn = connect_fn
        self._prove_server = prove_server
        self._spool_path = spool_path  # named in the warning when the server cannot be reached

    def run(self) -> None:
        host = self.host
        backoff = BACKOFF_MIN
        while not host.stopping:
            handshake_done = False
            try:
                with self._open() as ws:
                    host.hold(ws)
                    self._handshake(ws)
                    handshake_done, backoff = True, BACKOFF_MIN
                    while not host.stopping:
                        host.pump(ws)
            except PermanentError as err:
                host.fail(str(err))
                return
            except Exception as err:
                if handshake_done:
                    log.info("gradwatch: connection to %s lost (%s); reconnecting", host.url, err)
                else:
                    spool = "" if self._spool_path is None else f", then spooled to {self._spool_path} (gradwatch sync)"
                    host.warn(
                        f"gradwatch: cannot reach the server at {host.url} ({err}); training continues, reports are "
                        f"buffered (up to {host.max_buffer_bytes // 2**20} MiB, across fits) and sent when it is back"
                        + spool
                    )
            finally:
                host.detach()
            host.wait_retry(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _open(self) -> ClientConnection:
        url = self.host.url
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        if self._token and self._prove_server and not proves_token(url, self._token, self._connect_timeout):
            raise ConnectionError(
                "it did not prove it knows the token, so the token was not sent; pass server=... "
                "to name the server to trust"
            )
        try:
            return self._connect_fn(
                url,
                additional_headers=headers,
                open_timeout=self._connect_timeout,
                close_timeout=1.0,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                proxy=None,
            )
        except InvalidStatus as err:
            code = err.response.status_code
            if code in (401, 403):
                raise PermanentError(
                    f"the server at {url} refused the token (HTTP {code}); pass token=... or set GRADWATCH_TOKEN "
                    "to the token `gradwatch serve` printed"
                ) from err
            raise

    def _handshake(self, ws: ClientConnection) -> None:
        host = self.host
        try:
            ws.send(self._hello(host.run_id).model_dump_json())
            reply = parse_server_message(ws.recv(timeout=self._connect_timeout))
        except ConnectionClosed as err:
            rcvd = err.rcvd
            if rcvd is not None and rcvd.code in _PERMANENT_CLOSE:
                raise PermanentError(f"the server refused this trainer: {rcvd.reason} (code {rcvd.code})") from err
            raise
        if not isinstance(reply, Welcome) or reply.protocol != PROTOCOL_VERSION:
            raise PermanentError(f"unexpected handshake reply from {host.url}: {reply!r}")
        if host.run_id is not None:
            log.warning("gradwatch: reconnected to %s", host.url)
        host.attach(ws, reply.run_id)
        threading.Thread(target=self._receive, args=(ws,), name="gradwatch-receiver", daemon=True).start()

    def _receive(self, ws: ClientConnection) -> None:
        host = self.host
        try:
            for raw in ws:
                try:
                    message = parse_server_message(raw)
                except ValidationError as err:
                    log.warning("gradwatch: ignoring a malformed server message: %s", err.errors()[:1])
                    continue
                if isinstance(message, CommandMessage):
                    self._on_command(message)
                elif isinstance(message, Marked):
                    host.confirmed(message.id)
        except Exception as err:
            log.debug("gradwatch: receiver stopped: %s", err)
        finally:
            host.lost(ws)
