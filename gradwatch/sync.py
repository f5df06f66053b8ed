"""``gradwatch sync``: upload run files (offline runs, spooled reports) into a server.

A file is replayed through the server's own trainer websocket: its hello (with the session's
uid, marked ``replay``), then its messages as written. The server continues the run that uid
created and keeps only what is new (server/replay.py), so a second sync of the same file adds
nothing; it refuses a file naming another run or a finished one, and answers 1013 while the
run's trainer is connected. No TensorFlow needed: the protocol, websockets and the standard library.

A line the server refuses closes the connection (4400) after every line before it was taken
and none after it. A ``mark`` every ``MARK_EVERY`` lines, answered once all before it were
taken, bounds where it can be; it is found by bisection over fresh connections (each adds
only what the run lacks, so resending is harmless), named and skipped, and the rest goes on.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from .protocol import MAX_FRAME_BYTES, CloseCode, Mark, Marked, Welcome, parse_server_message, trainer_ws_url
from .runfile import Line, RunFile, RunFileError, open_run_file

#: Close codes that refuse one frame, not the file: that line is skipped, the rest is sent.
REFUSED_FRAME = (CloseCode.BAD_MESSAGE, 1009)
#: Lines sent between two barriers (``mark``): a refused line is searched for among these only.
MARK_EVERY = 256
#: How long a 1013 ("try again later") is retried: our own previous connection may still be ending.
RETRY_1013_SECONDS = 3.0


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


class _Replay:
    """One file's upload: connections to the server, each replaying a stretch of lines."""

    def __init__(self, run_file: RunFile, server: str, token: str | None, timeout: float) -> None:
        self.file = run_file
        self.server = server
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.hello = run_file.hello.model_copy(update={"replay": True}).model_dump_json()
        self.run_id: int | None = None
        self.marks = 0

    def run(self) -> list[Line]:
        """Send every valid line, skipping (and naming) those the server refuses; the lines it took."""
        taken: list[Line] = []
        backlog: list[Line] = []
        fresh = self.file.messages()
        while True:
            pending = chain(((line, self.file.text(line)) for line in backlog), fresh)
            confirmed, suspect, refused = self._send(pending)
            taken += confirmed
            if refused is None:
                return taken
            if not suspect:
                raise SyncError(f"{self.file.path}: the server at {self.server} closed the connection: {refused}")
            bad = self._first_refused(suspect)
            self.file.skipped.append(f"line {suspect[bad].number}: refused by the server ({refused})")
            taken += suspect[:bad]
            backlog = suspect[bad + 1 :]

    def _send(self, lines: Iterator[tuple[Line, str]]) -> tuple[list[Line], list[Line], str | None]:
        """One connection: send ``lines``, a ``mark`` after every ``MARK_EVERY`` of them and at the end.

        Returns the lines the server confirmed, those sent since its last confirmation, and the
        reason it refused one of those (None: it took them all).
        """
        confirmed: list[Line] = []
        suspect: list[Line] = []
        with self._connect() as ws:
            try:
                for line, text in lines:
                    suspect.append(line)
                    ws.send(text)
                    if len(suspect) >= MARK_EVERY:
                        self._barrier(ws)
                        confirmed, suspect = confirmed + suspect, []
                self._barrier(ws)
            except ConnectionClosed as err:
                return confirmed, suspect, self._refusal(err)
        return confirmed + suspect, [], None

    def _barrier(self, ws: ClientConnection) -> None:
        """Send a ``mark`` and wait for its ``marked``: the server took every frame before it."""
        self.marks += 1
        ws.send(Mark(type="mark", id=self.marks).model_dump_json())
        while True:
            try:
                reply = parse_server_message(ws.recv(timeout=self.timeout))
            except TimeoutError:
                raise SyncError(f"{self.file.path}: the server at {self.server} stopped answering") from None
            if isinstance(reply, Marked) and reply.id == self.marks:
                return  # anything else (a pending command of the run) is not for a replay

    def _first_refused(self, suspect: list[Line]) -> int:
        """Index in ``suspect`` of the line the server refused: every line before it was taken."""
        lo, hi = 0, len(suspect)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            _, _, refused = self._send((line, self.file.text(line)) for line in suspect[lo:mid])
            lo, hi = (lo, mid) if refused is not None else (mid, hi)
        return lo

    def _refusal(self, err: ConnectionClosed) -> str:
        """The reason the server refused a frame; raises for a close that ends the whole sync."""
        rcvd = err.rcvd
        if rcvd is not None and rcvd.code in REFUSED_FRAME:
            return rcvd.reason or f"close code {rcvd.code}"
        what = f"({rcvd.code}): {rcvd.reason or 'no reason given'}" if rcvd is not None else "without a close frame"
        raise SyncError(f"{self.file.path}: the server at {self.server} closed the connection {what}")

    def _connect(self) -> ClientConnection:
        """A connection that said hello and got its welcome (a 1013 is retried for a moment)."""
        deadline = time.monotonic() + RETRY_1013_SECONDS
        path, server = self.file.path, self.server
        while True:
            try:
                ws = connect(
                    trainer_ws_url(server),
                    additional_headers=self.headers,
                    open_timeout=10,
                    close_timeout=self.timeout,
                    max_size=MAX_FRAME_BYTES,
                    compression=None,
                    proxy=None,
                )
            except InvalidStatus as err:
                code = err.response.status_code
                hint = "; set GRADWATCH_TOKEN or pass --token-file" if code in (401, 403) else ""
                raise SyncError(f"{path}: the server at {server} refused the connection (HTTP {code}){hint}") from None
            except (OSError, InvalidURI, TimeoutError) as err:
                raise SyncError(f"{path}: cannot reach the server at {server} ({err})") from None
            try:
                ws.send(self.hello)
                reply = parse_server_message(ws.recv(timeout=10))
            except ConnectionClosed as err:
                ws.close()
                closed = err.rcvd.code if err.rcvd is not None else None
                reason = err.rcvd.reason if err.rcvd is not None else "no reason given"
                if closed == 1013 and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise SyncError(f"{path}: the server at {server} refused the file ({closed}): {reason}") from None
            except TimeoutError:
                ws.close()
                raise SyncError(f"{path}: the server at {server} did not answer the hello") from None
            if not isinstance(reply, Welcome) or (self.run_id is not None and reply.run_id != self.run_id):
                ws.close()
                raise SyncError(f"{path}: unexpected reply from {server}: {reply!r}")
            self.run_id = reply.run_id
            return ws


def sync_file(path: Path, server: str, token: str | None, timeout: float = 60.0) -> Synced:
    """Replay ``path`` into ``server`` and wait (at most ``timeout`` s) until the server has stored it."""
    try:
        run_file = open_run_file(path)
    except RunFileError as err:
        raise SyncError(str(err)) from None
    upload = _Replay(run_file, server, token, timeout)
    taken = upload.run()
    assert upload.run_id is not None
    tops = [line.top_step for line in taken if line.top_step is not None]
    _wait_stored(server, token, upload.run_id, max(tops, default=None), time.monotonic() + timeout)
    steps = sum(line.steps for line in taken)
    return Synced(path, upload.run_id, run_file.hello.run_name, steps, len(taken), run_file.skipped)


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
