"""Clients trust only a verified server (issue 17): a real "squatter" HTTP server on loopback stands
where the default local server would be; it must never receive the token, and a file name it
suggests is never used. The real server proves it knows the token without sending it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fittools import data, tiny_model

from gradwatch import GradientMonitor, notebook, tokens
from gradwatch.export_client import ExportError, download
from gradwatch.protocol import PROTOCOL_VERSION


class Squatter:
    """Answers like a gradwatch server would (health, login codes, an export), records every header.

    ``relay``: health requests are passed on to that real server (a squatter replaying its proof).
    """

    def __init__(self, relay: str | None = None) -> None:
        self.seen: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                owner.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                if self.path.startswith("/api/health") and relay is not None:
                    with urllib.request.urlopen(relay + self.path, timeout=5) as r:
                        body = r.read()
                elif self.path.startswith("/api/health"):
                    body = json.dumps({"status": "ok", "protocol": PROTOCOL_VERSION}).encode()
                elif self.path.startswith("/api/login-codes"):
                    body = json.dumps({"code": "stolen", "expires_in": 60}).encode()
                else:
                    body = b"not your export"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Disposition", 'attachment; filename=".bashrc"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def tokens_seen(self) -> list[str]:
        return [h["authorization"] for h in self.seen if "authorization" in h]


@pytest.fixture
def squatter() -> Iterator[Squatter]:
    s = Squatter()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()


@pytest.fixture
def default_is(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make ``url`` the default local server for this process (nothing configured)."""

    def point(url: str, token: str) -> None:
        monkeypatch.delenv(tokens.SERVER_ENV, raising=False)
        monkeypatch.setenv(tokens.TOKEN_ENV, token)
        monkeypatch.setattr(tokens, "DEFAULT_SERVER", url)
        monkeypatch.setattr(notebook, "DEFAULT_SERVER", url)

    return point


def test_the_notebook_never_hands_the_token_to_a_squatter(squatter: Squatter, default_is: Any, tmp_path: Path) -> None:
    default_is(squatter.url, "the-real-token-1234")
    try:
        dash = notebook.ensure_server(db=tmp_path / "nb.db")  # what show() displays
        code = dash.login_code()
    finally:
        notebook.stop()
    assert squatter.seen, "the squatter was asked (it answers on the default address)"
    assert squatter.tokens_seen() == []
    assert dash.embedded and dash.url != squatter.url and code != "stolen"  # an embedded server instead


def test_the_real_default_server_proves_itself_and_a_relay_does_not(
    gradwatch_server: Any, default_is: Any, tmp_path: Path
) -> None:
    srv = gradwatch_server()
    assert tokens.proves_token(srv.url, srv.token)
    assert not tokens.proves_token(srv.url, srv.token + "x")
    default_is(srv.url, srv.token)
    try:
        dash = notebook.ensure_server(db=tmp_path / "nb.db")
    finally:
        notebook.stop()
    assert dash.url == srv.url and not dash.embedded
    relay = Squatter(relay=srv.url)  # replays the real server's answer: bound to the real server's port
    relay.thread.start()
    try:
        assert not tokens.proves_token(relay.url, srv.token)
    finally:
        relay.httpd.shutdown()
        relay.httpd.server_close()


def test_a_trainer_never_sends_the_token_to_a_squatter(squatter: Squatter, default_is: Any) -> None:
    default_is(squatter.url, "the-real-token-1234")
    x, y = data(64)
    monitor = GradientMonitor(flush_timeout=0.0)
    with pytest.warns(RuntimeWarning, match="did not prove it knows the token"):
        tiny_model().fit(x, y, batch_size=16, epochs=1, callbacks=[monitor], verbose=0)
        monitor.close(timeout=2.0)
    assert squatter.seen and squatter.tokens_seen() == []


def test_export_to_the_default_server_needs_its_proof(squatter: Squatter, default_is: Any, tmp_path: Path) -> None:
    default_is(squatter.url, "the-real-token-1234")
    with pytest.raises(ExportError, match="did not prove it knows the token"):
        download(None, 1, "parquet", tmp_path / "x.parquet")
    assert squatter.tokens_seen() == [] and not (tmp_path / "x.parquet").exists()


def test_export_names_the_file_itself(squatter: Squatter, tmp_path: Path) -> None:
    """Even a server the user named does not choose the file name (here: ``.bashrc``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    env["GRADWATCH_TOKEN"] = "the-real-token-1234"
    done = subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", "export", "7", "--server", squatter.url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-7.parquet"]
    assert (tmp_path / "run-7.parquet").read_bytes() == b"not your export"


def test_sync_to_the_default_server_needs_its_proof(squatter: Squatter, tmp_path: Path) -> None:
    """The CLI's default address is fixed; a configured one is trusted, an unproven default is refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    env["GRADWATCH_TOKEN"] = "the-real-token-1234"
    code = (
        "import sys; from gradwatch import tokens; tokens.DEFAULT_SERVER = sys.argv.pop(1); "
        "from gradwatch.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    path = tmp_path / "x.gwrun.jsonl"
    path.write_text("{}\n")
    done = subprocess.run(
        [sys.executable, "-c", code, squatter.url, "sync", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "did not prove it knows the token" in done.stderr, done.stderr
    assert squatter.tokens_seen() == []
