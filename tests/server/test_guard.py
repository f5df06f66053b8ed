"""Bounded before authentication (issue 17): the token is checked before a body is read, bodies are
limited, odd static paths are a 404, and the page carries its security headers. A real server."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

BIG = 60 << 20  # what the attacker announces; only a few bytes are ever sent


def raw_request(srv: Any, head: str, body: bytes = b"") -> str:
    """Send ``head`` (+ ``body``) on a raw socket; the status line the server answers with.

    The server must answer without waiting for the rest of the announced body (the socket
    would otherwise wait until the 30 s bound and the test fails).
    """
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


@pytest.mark.parametrize("auth", ["", "Authorization: Bearer wrong-token-123\n", "Cookie: gradwatch_token=nope\n"])
def test_a_stranger_body_is_refused_unread(shared_server: Any, auth: str) -> None:
    head = (
        f"POST /api/runs/1/commands HTTP/1.1\nHost: 127.0.0.1\n{auth}Content-Type: application/json\n"
        f"Content-Length: {BIG}\n"
    )
    assert raw_request(shared_server, head, b'{"type": "pa').startswith("HTTP/1.1 401")
    chunked = f"PATCH /api/runs/1 HTTP/1.1\nHost: 127.0.0.1\n{auth}Transfer-Encoding: chunked\n"
    assert raw_request(shared_server, chunked, b"ffffff\r\nab").startswith("HTTP/1.1 401")


def test_an_authenticated_body_is_bounded(shared_server: Any) -> None:
    srv = shared_server
    auth = f"Authorization: Bearer {srv.token}\n"
    head = f"POST /api/runs/1/commands HTTP/1.1\nHost: 127.0.0.1\n{auth}Content-Length: {BIG}\n"
    assert raw_request(srv, head, b"{").startswith("HTTP/1.1 413")
    # chunked, no length announced: refused once past the bound, not read to the end
    r = httpx.patch(srv.url + "/api/runs/1", headers=srv.headers, content=iter([b"x" * (1 << 20)] * 3), timeout=30)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    ok = httpx.patch(srv.url + "/api/runs/999999", headers=srv.headers, json={"note": "n"}, timeout=10)
    assert ok.status_code == 404  # a small body still reaches its route


@pytest.mark.parametrize("path", ["/static/app.js%00.py", "/static/%00", "/static/a%00b.js"])
def test_a_nul_in_a_static_path_is_a_404(shared_server: Any, path: str) -> None:
    assert httpx.get(shared_server.url + path, timeout=10).status_code == 404


def test_the_page_carries_security_headers(shared_server: Any) -> None:
    for path in ("/", "/static/app.js", "/api/health"):
        r = httpx.get(shared_server.url + path, timeout=10)
        assert r.status_code == 200
        assert r.headers["x-content-type-options"] == "nosniff"
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'self' http://localhost:*" in csp and "script-src 'self';" in csp
        assert "*.example" not in csp and " * " not in csp
