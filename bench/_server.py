"""A real `gradwatch serve` subprocess on a free loopback port, for the benchmarks."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchServer:
    """``with BenchServer() as srv:`` starts the server, waits for health, always stops it.

    ``cpus`` pins the server process (all its threads) to those cores; ``db`` serves an
    existing database instead of a fresh one; ``profile`` runs it under cProfile (its event-loop
    thread) and writes the stats there when it stops.
    """

    def __init__(self, cpus: Iterable[int] | None = None, db: Path | None = None, profile: str | None = None) -> None:
        self.port = free_port()
        self.token = secrets.token_urlsafe(16)
        self.dir = Path(tempfile.mkdtemp(prefix="gradwatch-bench-"))
        self.db = db if db is not None else self.dir / "b.db"
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.cpus = set(cpus) if cpus is not None else None
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> BenchServer:
        env = dict(os.environ, GRADWATCH_TOKEN=self.token, GRADWATCH_TOKEN_FILE=str(self.dir / "token"))
        entry = ["-m", "bench._serve_profiled", self.profile] if self.profile else ["-m", "gradwatch.cli"]
        cmd = [sys.executable, *entry, "serve", "--port", str(self.port)]
        cmd += ["--db", str(self.db), "--log-level", "warning"]
        cpus = self.cpus
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, preexec_fn=pin)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError("gradwatch serve did not become healthy within 30 s")

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None:
            if self.profile and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGUSR1)  # bench._serve_profiled writes its stats
                time.sleep(2.0)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
