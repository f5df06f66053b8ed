"""What every HTTP request meets before the application: the token before any body, a bounded body,
and the page's security headers on every response.

A request to a protected route that carries a body is refused (401) on its headers alone when
its token is missing or wrong: the body is never read, so refusing stays cheap whatever its size.
An authenticated body is read up to ``max_body`` bytes (413 past it, or at once when
``Content-Length`` says so) before the route sees it. The routes' own ``require_token`` still runs
(cross-site checks included); this only makes sure nothing is spent on a stranger first.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import presented_token, token_matches

#: Routes that need no token (their bodies, if any, are still bounded).
PUBLIC_PATHS = frozenset({"/", "/login", "/api/health", "/docs", "/redoc", "/openapi.json"})
#: The page's sources: its own files only; Plotly injects <style> elements (hence 'unsafe-inline' for
#: styles). Framing only from loopback pages (a notebook on another port), never another site.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self' http://localhost:* http://127.0.0.1:* http://[::1]:*"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
]
UNAUTHORIZED = json.dumps(
    {
        "detail": "missing or wrong token: send 'Authorization: Bearer <token>' or open "
        "/login?token=<token>; the body was not read"
    }
).encode()


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/static/")


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuardMiddleware:
    def __init__(self, app: ASGIApp, token: str, max_body: int) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        has_body = (
            scope["method"] not in ("GET", "HEAD", "OPTIONS")
            or length not in (None, "0")
            or "transfer-encoding" in headers
        )
        if has_body and not _public(scope["path"]):
            token, source = presented_token(headers, cookie_parser(headers.get("cookie", "")))
            if source is None or not token_matches(token, self.token):
                await _respond(send, 401, UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
                return
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _respond(send, 413, self._too_large())
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        if not has_body:
            await self.app(scope, receive, secured)
            return
        body, more = b"", True
        while more:  # bounded: the route gets the body at once, or a 413 past max_body
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, secured)  # the client left: let the app see it
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await _respond(send, 413, self._too_large())
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, secured)

    def _too_large(self) -> bytes:
        return json.dumps({"detail": f"request body larger than {self.max_body} bytes"}).encode()
