"""A real `gradwatch serve` subprocess on a free loopback port, for the benchmarks."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchServer:
    """``with BenchServer() as srv:`` starts the server, waits for health, always stops it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.token = secrets.token_urlsafe(16)
        self.dir = Path(tempfile.mkdtemp(prefix="gradwatch-bench-"))
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BenchServer:
        env = dict(os.environ, GRADWATCH_TOKEN=self.token, GRADWATCH_TOKEN_FILE=str(self.dir / "token"))
        cmd = [sys.executable, "-m", "gradwatch.cli", "serve", "--port", str(self.port)]
        cmd += ["--db", str(self.dir / "b.db"), "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
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
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
