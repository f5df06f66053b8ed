"""Access control: the shared token, same-origin rules and the Host allow-list.

* Every REST route except ``/api/health`` and every websocket needs the token,
  as ``Authorization: Bearer <token>`` or the ``gradwatch_token`` cookie set by
  ``GET /login?token=`` (HttpOnly, SameSite=Strict). Compared in constant time,
  never logged.
* A websocket whose ``Origin`` is not this server is refused at the handshake (HTTP 403).
* A state-changing REST call authenticated by the cookie is refused (403) when
  ``Sec-Fetch-Site`` or ``Origin`` show it comes from another site.
* The ``Host`` header must be one of the allowed hosts (DNS-rebinding guard).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from gradwatch.protocol import CloseCode

COOKIE_NAME = "gradwatch_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

TokenSource = Literal["header", "cookie"]


def token_matches(presented: str | None, expected: str) -> bool:
    if not presented:
        return False
    return secrets.compare_digest(presented.encode(), expected.encode())


def presented_token(headers: Headers, cookies: dict[str, str]) -> tuple[str | None, TokenSource | None]:
    """The token a request carries, and where: the Authorization header wins over the cookie."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), "header"
        return None, None
    cookie = cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, "cookie"
    return None, None


def split_host(host_header: str) -> str:
    """``Host`` header without its port, lower-case; IPv6 brackets removed."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def same_origin(origin: str, host_header: str) -> bool:
    """``Origin`` (``scheme://host[:port]``) names the host:port the request was sent to."""
    parts = urlsplit(origin)
    return (
        parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc.lower() == host_header.strip().lower()
    )


def foreign_origin(websocket: WebSocket) -> bool:
    """A websocket handshake whose ``Origin`` is present and not this server (refused with HTTP 403)."""
    origin = websocket.headers.get("origin")
    return origin is not None and not same_origin(origin, websocket.headers.get("host", ""))


def cross_site(headers: Headers) -> bool:
    """True when browser-supplied headers show the request comes from another site."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    return origin is not None and not same_origin(origin, headers.get("host", ""))


def require_token(request: Request) -> TokenSource:
    """FastAPI dependency for every protected REST route."""
    expected: str = request.app.state.token
    token, source = presented_token(request.headers, request.cookies)
    if source is None or not token_matches(token, expected):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong token: send 'Authorization: Bearer <token>' or open /login?token=<token> "
            "(the token is printed by 'gradwatch serve' and stored in ~/.gradwatch/token)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if source == "cookie" and request.method not in SAFE_METHODS and cross_site(request.headers):
        raise HTTPException(
            status_code=403,
            detail="cross-site request refused: send it from the gradwatch page itself or use an Authorization header",
        )
    return source


class HostCheckMiddleware:
    """Refuse requests whose ``Host`` is not allowed (400 for HTTP, 403 handshake refusal for websockets)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(h.lower() for h in allowed_hosts)
        self.any = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any:
            await self.app(scope, receive, send)
            return
        host = split_host(Headers(scope=scope).get("host", ""))
        if host in self.allowed:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            code = int(CloseCode.POLICY_VIOLATION)
            await send({"type": "websocket.close", "code": code, "reason": "host not allowed"})
            return
        msg = "Invalid host header: start gradwatch serve with --allowed-host <name> to allow it"
        await PlainTextResponse(msg, status_code=400)(scope, receive, send)
