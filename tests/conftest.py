"""Shared fixtures. ``gradwatch_server`` starts a real ``gradwatch serve`` process.

Usage::

    def test_something(gradwatch_server):
        srv = gradwatch_server()                 # started and healthy
        httpx.get(srv.url + "/api/runs", headers=srv.headers)
        websockets.connect(srv.ws_url + "/ws/trainer", additional_headers=srv.headers)
        srv.kill(); srv.restart()               # SIGKILL, then start again on the same port and db

The factory takes optional keyword arguments:

* ``extra_args``: more ``gradwatch serve`` arguments, e.g. ``["--allowed-host", "example.test"]``;
* ``env``: extra environment variables for the server process;
* ``db``: database path (default ``<tmp_path>/x.db``; pass another server's ``.db`` to share history).

``shared_server`` is one already started ``ServerProcess`` per test module,
for tests that only create their own runs and never stop or restart it.

Each call starts one more server (own free port). Every server is stopped at
teardown, whatever the test did. The returned ``ServerProcess`` has:

``url`` (``http://127.0.0.1:PORT``), ``ws_url`` (``ws://127.0.0.1:PORT``),
``trainer_url`` / ``browser_url`` (``ws_url`` + the protocol paths), ``token``,
``headers`` (``{"Authorization": "Bearer <token>"}``), ``db`` (Path),
``port``, ``token_file`` (Path; the env var ``GRADWATCH_TOKEN_FILE`` of the
server points there), ``log_path`` / ``log()`` (the server's stdout+stderr),
``stop()`` (SIGTERM, clean shutdown), ``kill()`` (SIGKILL), ``restart()``
(start again on the same port and db; stops first if still running),
``running``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gradwatch.protocol import BROWSER_PATH, TRAINER_PATH

# pytest runs in importlib mode (see pyproject): this folder goes on sys.path so every test can
# `from waiting import wait_until`, the one way tests wait for a condition.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A ``gradwatch serve`` subprocess on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        db: Path | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.db = db or workdir / "x.db"
        self.token = secrets.token_urlsafe(24)
        self.token_file = workdir / "token"
        self.log_path = workdir / "server.log"
        self.extra_args = list(extra_args or [])
        self.env = {
            **os.environ,
            "GRADWATCH_TOKEN": self.token,
            "GRADWATCH_TOKEN_FILE": str(self.token_file),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    # -- addresses
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def trainer_url(self) -> str:
        return self.ws_url + TRAINER_PATH

    @property
    def browser_url(self) -> str:
        return self.ws_url + BROWSER_PATH

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- life cycle
    def start(self) -> ServerProcess:
        if self.running:
            raise RuntimeError("already running")
        cmd = [
            sys.executable,
            "-m",
            "gradwatch.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gradwatch serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"gradwatch serve not healthy within {START_TIMEOUT:g} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM and wait for the clean shutdown (SIGKILL after STOP_TIMEOUT)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (crash simulation)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()


@contextlib.contextmanager
def _server_factory(base: Path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def start(**kwargs: Any) -> ServerProcess:
        srv = ServerProcess(base / f"server{len(servers)}", **kwargs)
        servers.append(srv)
        for attempt in range(3):  # the free port may be taken between probing and binding
            try:
                return srv.start()
            except RuntimeError:
                if attempt == 2 or "address already in use" not in srv.log().lower():
                    raise
                srv.port = free_port()
        raise AssertionError("unreachable")

    try:
        yield start
    finally:
        for srv in servers:
            srv.stop()


@pytest.fixture(autouse=True)
def _run_files_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Monitors spool (and write offline runs) under a temporary folder, never the user's ~/.gradwatch/runs."""
    monkeypatch.setenv("GRADWATCH_LOG_DIR", str(tmp_path_factory.mktemp("gradwatch-runs")))


@pytest.fixture
def gradwatch_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``gradwatch_server(extra_args=None, env=None, db=None) -> ServerProcess`` (started, healthy)."""
    with _server_factory(tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a whole test module, for tests that only add their own runs (faster than one per test)."""
    with _server_factory(tmp_path_factory.mktemp("shared")) as start:
        yield start()
