"""``gradwatch sync``: upload run files (offline runs, spooled reports) into a server.

A file is replayed through the server's own trainer websocket: its hello (with
the session's uid), then its messages as written. The server continues the run
it already has for that uid and keeps only what is new (server/replay.py), so a
second sync of the same file adds nothing. No TensorFlow needed: the protocol,
websockets and the standard library.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.sync.client import connect

from .protocol import MAX_FRAME_BYTES, Steps, Welcome, parse_server_message, trainer_ws_url
from .runfile import RunFileError, open_run_file


class SyncError(Exception):
    """A file could not be synced; the message names the file and the reason."""


@dataclass
class Synced:
    path: Path
    run_id: int
    run_name: str
    steps: int  # step records in the file that reached the server (new or already there)
    messages: int
    skipped: list[str] = field(default_factory=list)


def sync_file(path: Path, server: str, token: str | None, timeout: float = 60.0) -> Synced:
    """Replay ``path`` into ``server`` and wait (at most ``timeout`` s) until the server has stored it."""
    try:
        run_file = open_run_file(path)
    except RunFileError as err:
        raise SyncError(str(err)) from None
    url = trainer_ws_url(server)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    steps = messages = 0
    last_step: int | None = None
    try:
        with connect(
            url,
            additional_headers=headers,
            open_timeout=10,
            close_timeout=timeout,
            max_size=MAX_FRAME_BYTES,
            compression=None,
            proxy=None,
        ) as ws:
            ws.send(run_file.hello.model_dump_json())
            reply = parse_server_message(ws.recv(timeout=10))
            if not isinstance(reply, Welcome):
                raise SyncError(f"{path}: unexpected reply from {server}: {reply!r}")
            for text, message in run_file.messages():
                ws.send(text)
                messages += 1
                if isinstance(message, Steps):
                    steps += len(message.records)
                    top = max(r.step for r in message.records)
                    last_step = top if last_step is None else max(last_step, top)
    except InvalidStatus as err:
        code = err.response.status_code
        hint = "; pass --token or set GRADWATCH_TOKEN" if code in (401, 403) else ""
        raise SyncError(f"{path}: the server at {server} refused the connection (HTTP {code}){hint}") from None
    except ConnectionClosed as err:
        reason = err.rcvd.reason if err.rcvd is not None else "no reason given"
        raise SyncError(f"{path}: the server at {server} closed the connection: {reason}") from None
    except (OSError, InvalidURI, TimeoutError) as err:
        raise SyncError(f"{path}: cannot reach the server at {server} ({err})") from None
    _wait_stored(server, token, reply.run_id, last_step, time.monotonic() + timeout)
    return Synced(path, reply.run_id, run_file.hello.run_name, steps, messages, run_file.skipped)


def _get(server: str, token: str | None, path: str) -> dict[str, object]:
    request = urllib.request.Request(
        server.rstrip("/") + path, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, object] = json.load(response)
    return body


def _wait_stored(server: str, token: str | None, run_id: int, last_step: int | None, deadline: float) -> None:
    """The websocket closes before the server has worked through what was sent: wait until it has.

    Done when the server noticed the end of the connection (it stores every step before it
    does) and the file's last step is readable.
    """
    while True:
        try:
            run = _get(server, token, f"/api/runs/{run_id}")
            settled = run.get("status") not in ("running", "paused", "idle")
            if settled and last_step is not None:
                metrics = _get(server, token, f"/api/runs/{run_id}/metrics?since_step={last_step}")
                settled = last_step in (metrics.get("step") or [])  # type: ignore[operator]
            if settled:
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass  # retried until the deadline
        if time.monotonic() > deadline:
            raise SyncError(f"run {run_id}: the server at {server} did not confirm the upload in time")
        time.sleep(0.1)
