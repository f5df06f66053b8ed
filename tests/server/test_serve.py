"""GradwatchServer in-process, the CLI, and the page files."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys

import httpx
import pytest
from gradwatch.server.config import ServerConfig
from gradwatch.server.serve import GradwatchServer


def test_port_zero_and_generated_token(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADWATCH_TOKEN", raising=False)
    token_file = tmp_path / "sub" / "token"
    out = io.StringIO()
    server = GradwatchServer(
        ServerConfig(port=0, db_path=tmp_path / "g.db", token_file=token_file, log_level="warning"), out=out
    )
    assert server.port is None and not token_file.exists()  # the constructor only stores
    with server:
        assert server.port and server.port > 0
        token = token_file.read_text().strip()
        assert token == server.token and len(token) >= 32
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert f"http://127.0.0.1:{server.port}/login?token={token}" in out.getvalue()
        assert httpx.get(server.url + "/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url + "/api/health", timeout=2)


def test_env_token_is_used_and_not_written(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADWATCH_TOKEN", "e" * 40)
    out = io.StringIO()
    with GradwatchServer(
        ServerConfig(port=0, db_path=tmp_path / "g.db", token_file=tmp_path / "tok", log_level="warning"), out=out
    ) as server:
        assert server.token == "e" * 40
    assert not (tmp_path / "tok").exists()


def test_non_loopback_bind_warns(tmp_path):
    out = io.StringIO()
    with GradwatchServer(
        ServerConfig(host="0.0.0.0", port=0, db_path=tmp_path / "g.db", token="x" * 32, log_level="warning"), out=out
    ) as server:
        assert httpx.get(server.url + "/api/health", timeout=5).status_code == 200
    assert "WARNING" in out.getvalue() and "not loopback" in out.getvalue()


def test_busy_port_fails_clearly(tmp_path):
    with GradwatchServer(
        ServerConfig(port=0, db_path=tmp_path / "a.db", token="x" * 32, log_level="critical"), out=io.StringIO()
    ) as first:
        second = GradwatchServer(
            ServerConfig(port=first.port or 0, db_path=tmp_path / "b.db", token="x" * 32, log_level="critical"),
            out=io.StringIO(),
        )
        with pytest.raises(RuntimeError, match="failed to start"):
            second.start()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve", "--port", "99999"], "port=99999"),
        (["serve", "--allowed-host", "http://x/"], "allowed_hosts"),
    ],
)
def test_cli_rejects_bad_options(args, needle):
    r = subprocess.run([sys.executable, "-m", "gradwatch.cli", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert needle in r.stderr


def test_cli_help():
    r = subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0
    for option in ("--host", "--port", "--db", "--token-file", "--allowed-host"):
        assert option in r.stdout


def test_page_files(shared_server):
    srv = shared_server
    plotly = httpx.get(srv.url + "/static/plotly.min.js", timeout=10)
    assert plotly.status_code == 200 and len(plotly.content) > 100_000
    assert "javascript" in plotly.headers["content-type"]
    index = httpx.get(srv.url + "/", timeout=5)
    assert index.status_code in (200, 404)  # the page is written by another team
    if index.status_code == 200:
        assert "html" in index.headers["content-type"]
    for bad in (
        "/static/__init__.py",
        "/static/../server/app.py",
        "/static/%2e%2e/pyproject.toml",
        "/static/.hidden.js",
        "/static/nope.js",
    ):
        assert httpx.get(srv.url + bad, timeout=5).status_code == 404, bad


def test_openapi_documents_the_routes(shared_server):
    spec = httpx.get(shared_server.url + "/openapi.json", timeout=5).json()
    paths = spec["paths"]
    for path in (
        "/api/health",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/metrics",
        "/api/runs/{run_id}/commands",
        "/login",
    ):
        assert path in paths, path
    assert "RunDetail" in spec["components"]["schemas"] and "Metrics" in spec["components"]["schemas"]


def test_idle_server_sends_date_header_and_stops_promptly(tmp_path):
    """The server waits for exit on an event (no 10 Hz timer): responses still carry a current Date and the
    Server header, and stop() returns at once."""
    import email.utils
    import time

    server = GradwatchServer(
        ServerConfig(port=0, db_path=tmp_path / "g.db", token="x" * 32, log_level="warning"), out=io.StringIO()
    )
    with server:
        first = httpx.get(server.url + "/api/health", timeout=5)
        time.sleep(1.2)  # stays: the Date header moves on only when a second has passed
        second = httpx.get(server.url + "/api/health", timeout=5)
        assert first.headers["server"] == "uvicorn"
        dates = [email.utils.parsedate_to_datetime(r.headers["date"]).timestamp() for r in (first, second)]
        assert abs(dates[1] - time.time()) < 2.5 and dates[1] > dates[0]
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 3.0
