"""``GradwatchServer``: run the app under uvicorn, in a background thread or in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from typing import Any, TextIO

import uvicorn

from gradwatch.tokens import TOKEN_ENV, default_token_file, generate_token, write_token_file

from .app import create_app
from .config import ServerConfig
from .uvserver import QuietServer

log = logging.getLogger("gradwatch.server")


class _RedactQuery(logging.Filter):
    """Drop query strings from uvicorn's access log: ``/login?token=...`` must never be logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3:
            args = list(record.args)
            path = args[2]
            if isinstance(path, str):
                args[2] = path.split("?", 1)[0]
            record.args = tuple(args)
        return True


class _RedactToken:
    """Replace the token in every log record of this process, whichever logger makes it (handshake
    headers, a token typed into a URL path echoed by a validation error or a traceback): installed
    as the record factory, so no handler or logger configured later can miss it."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.previous = logging.getLogRecordFactory()

    def install(self) -> None:
        logging.setLogRecordFactory(self.make)

    def remove(self) -> None:
        if logging.getLogRecordFactory() == self.make:
            logging.setLogRecordFactory(self.previous)

    def make(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:
            return record
        if self.token in message:
            if isinstance(record.args, tuple):  # keep the args' shape: formatters unpack them (uvicorn's access log)
                record.args = tuple(a.replace(self.token, "<token>") if isinstance(a, str) else a for a in record.args)
            if isinstance(record.msg, str):
                record.msg = record.msg.replace(self.token, "<token>")
            with contextlib.suppress(Exception):
                if self.token in record.getMessage():
                    record.msg, record.args = record.getMessage().replace(self.token, "<token>"), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info).replace(self.token, "<token>")
        if record.stack_info:
            record.stack_info = record.stack_info.replace(self.token, "<token>")
        return record


class GradwatchServer:
    """``GradwatchServer(config)`` only stores the config; ``start()``/``stop()`` or ``serve()`` run it.

    ``start()`` returns once the socket listens (``port`` then holds the real
    port, also when ``config.port`` is 0). The token is ``config.token``, else
    ``$GRADWATCH_TOKEN``, else a new one written to the token file.
    """

    def __init__(self, config: ServerConfig, out: TextIO | None = None) -> None:
        self.config = config
        self.out = out
        self.token: str | None = None
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._redact: _RedactToken | None = None

    # ------------------------------------------------------------------ set-up

    def _resolve_token(self) -> str:
        if self.config.token:
            return self.config.token
        env = os.environ.get(TOKEN_ENV)
        if env:
            return env
        token = generate_token()
        path = write_token_file(token, self.config.token_file or default_token_file())
        self._print(f"gradwatch: generated a new token, saved to {path} (trainers on this machine read it there)")
        return token

    def _print(self, text: str) -> None:
        out = self.out or sys.stdout
        print(text, file=out, flush=True)

    def _uvicorn(self) -> uvicorn.Server:
        self.token = self._resolve_token()
        config = dataclasses.replace(self.config, token=self.token)
        app = create_app(config)
        if not config.is_loopback:
            self._print(
                f"gradwatch: WARNING: listening on {config.host}, not loopback: anyone who can reach this "
                "address can try the token and sees the page over plain HTTP (the token travels unencrypted). "
                "Prefer 127.0.0.1 with an SSH tunnel, or put it behind TLS. Add the names browsers use "
                "with --allowed-host."
            )
        logging.getLogger("uvicorn.access").addFilter(_RedactQuery())
        uv = uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            ws_max_size=config.max_frame_bytes,
            ws_max_queue=config.ws_max_queue,
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=5,
            lifespan="on",
        )
        self._unredact()
        self._redact = _RedactToken(self.token)
        self._redact.install()
        return QuietServer(uv)

    def _announce(self, server: uvicorn.Server) -> None:
        sockets = [s for srv in server.servers for s in srv.sockets]
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.config.port
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        if host in ("0.0.0.0", "::"):
            shown = "127.0.0.1"
        self._print(
            f"gradwatch: serving on http://{shown}:{self.port}  open: http://{shown}:{self.port}/login?token="
            f"{self.token}"
        )

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not started")
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::") else self.config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ running

    def start(self, timeout: float = 20.0) -> GradwatchServer:
        """Run in a background thread; return once listening. Raises RuntimeError if it could not start."""
        if self._thread is not None:
            raise RuntimeError("already started")
        server = self._uvicorn()
        self._server = server

        def run() -> None:
            # uvicorn exits with SystemExit when it cannot bind; start() reports that itself.
            with contextlib.suppress(SystemExit):
                server.run()

        thread = threading.Thread(target=run, name="gradwatch-server", daemon=True)
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive():
                self._thread = None
                raise RuntimeError(
                    f"gradwatch server failed to start on {self.config.host}:{self.config.port} "
                    "(port in use? see the log above)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gradwatch server did not start within {timeout:g} s")
            time.sleep(0.02)
        self._announce(server)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Shut down cleanly (flushes buffered steps) and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("gradwatch server thread did not stop within %g s", timeout)
        self._thread = None
        self._server = None
        self._unredact()

    def _unredact(self) -> None:
        if self._redact is not None:
            self._redact.remove()
            self._redact = None

    def serve(self) -> None:
        """Run in the foreground until Ctrl-C / SIGTERM."""
        server = self._uvicorn()
        self._server = server

        async def main() -> None:
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            if server.started:
                self._announce(server)
            await task

        asyncio.run(main())
        if not server.started:
            raise SystemExit(1)

    def __enter__(self) -> GradwatchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
