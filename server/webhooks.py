"""Alert webhooks: raised, re-opened and resolved alerts POSTed as JSON to one URL, off the ingest path.

``WebhookSender.offer`` only snapshots the alert into a bounded queue (the oldest entry is
dropped when it is full), so ingest and the alert rules never wait for the receiver. One
background task delivers the queue in order, each POST with a timeout, retried with
exponential backoff on connection errors, timeouts, 429 and 5xx; other 4xx answers are
final (the receiver refuses that body). The body is Slack-compatible (``text``) and carries
the whole alert (see docs/alerts.md, "Webhooks").
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import http.client
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from gradwatch.protocol import ACTION_SEVERITIES, dumps

if TYPE_CHECKING:
    from .alerting import AlertEvent as Event
    from .alerts.engine import Alert
    from .config import ServerConfig

log = logging.getLogger("gradwatch.webhooks")

SEVERITIES: tuple[str, ...] = ACTION_SEVERITIES  # in rising order
USER_AGENT = "gradwatch-webhook/1"


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host, else a ValueError naming it (without its secret path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = f"{parts.scheme}://{parts.netloc}/..." if parts.netloc else repr(url[:40])
        raise ValueError(f"webhook_url {shown} is not an http(s) URL; use e.g. https://hooks.slack.com/services/...")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):  # CR/LF would split the request line (header injection)
        raise ValueError(
            f"webhook_url {redacted(url)} holds spaces or control characters (CR, LF, ...); percent-encode them"
        )
    return url


def redacted(url: str) -> str:
    """The URL for logs: scheme, host and port only (a webhook's path, and any user:password@, are secrets)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}/…"


def payload(alert: Alert, event: Event, run_name: str | None, page_url: str | None) -> dict[str, Any]:
    """The JSON body: ``text`` for Slack/Discord-style receivers, then the structured alert."""
    where = f" ({alert.layer})" if alert.layer else ""
    run = f"{run_name!r} (#{alert.run_id})" if run_name else f"#{alert.run_id}"
    again = f", episode {alert.count}" if event == "reopened" else ""
    if event == "resolved":
        text = (
            f"gradwatch: {alert.severity.upper()} {alert.kind}{where} resolved on run {run} at step "
            f"{alert.resolved_step}: clear since step {alert.last_step} (raised at step {alert.step}: {alert.message})"
        )
    else:
        text = (
            f"gradwatch: {alert.severity.upper()} {alert.kind}{where} {event} on run {run} at step "
            f"{alert.step}{again}: {alert.message}"
        )
    if page_url:
        text += f" {page_url}"
    return {
        "text": text,
        "event": event,
        "run_id": alert.run_id,
        "run_name": run_name,
        "url": page_url,
        "alert": alert.view(),
    }


@dataclass(frozen=True)
class RetryPolicy:
    timeout: float = 5.0  # seconds per POST
    attempts: int = 6  # per alert, the first included
    backoff: float = 0.5  # seconds before the first retry, doubling
    backoff_max: float = 30.0


def _post(url: str, body: bytes, timeout: float) -> int:
    """POST ``body``; the status. At most ``timeout`` seconds in all, however slowly the receiver
    drips its answer (a watchdog shuts the socket). Redirects are answers, never followed (they would
    turn the POST into a GET elsewhere); ``user:password@`` in the URL is sent as Basic auth."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname or "", parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Content-Length": str(len(body))}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    watchdog = threading.Timer(timeout, _cut, (conn,))
    watchdog.start()
    try:
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body, headers)
        return int(conn.getresponse().status)  # the body is not read: only the status counts
    except (http.client.HTTPException, OSError) as e:
        raise OSError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
    finally:
        watchdog.cancel()
        conn.close()


def _cut(conn: http.client.HTTPConnection) -> None:
    """The deadline passed: unblock the POST's thread wherever it waits."""
    with contextlib.suppress(OSError, AttributeError):
        conn.sock.shutdown(socket.SHUT_RDWR)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


class WebhookSender:
    """Constructing validates; ``start()`` (inside the event loop) starts the delivery task."""

    def __init__(
        self,
        url: str,
        min_severity: str = "warning",
        page_url: str | None = None,
        queue_size: int = 100,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = check_url(url)
        if min_severity not in SEVERITIES:
            raise ValueError(f"webhook_min_severity={min_severity!r} is not one of {SEVERITIES}")
        self.min_rank = SEVERITIES.index(min_severity)
        self.page_url = page_url.rstrip("/") if page_url else None
        self.retry = retry or RetryPolicy()
        self._queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=queue_size)
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def start(self) -> None:
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="gradwatch-webhooks")

    def offer(self, alert: Alert, event: Event, run_name: str | None) -> None:
        """Queue ``alert`` for delivery if it is severe enough; never blocks, never raises."""
        if alert.severity not in SEVERITIES or SEVERITIES.index(alert.severity) < self.min_rank:
            return
        page = f"{self.page_url}/#run={alert.run_id}" if self.page_url else None
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:  # an alert storm must not flood the log too
                log.warning(
                    "webhook %s is behind: dropped the oldest queued alert (%d dropped so far)",
                    redacted(self.url),
                    self.dropped,
                )
        self._queue.append(payload(alert, event, run_name, page))  # a snapshot: the alert goes on changing
        if self._ready is not None:
            self._ready.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def stop(self, grace: float = 2.0) -> None:
        """Deliver what is queued for up to ``grace`` seconds, then give up on the rest."""
        if self._task is None:
            return
        deadline = time.monotonic() + grace
        while self._queue and time.monotonic() < deadline and not self._task.done():
            await asyncio.sleep(0.05)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._queue:
            log.warning("webhook %s: %d alerts not delivered at shutdown", redacted(self.url), len(self._queue))

    async def _run(self) -> None:
        assert self._ready is not None
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            body = self._queue[0]
            ok = await self._deliver(dumps(body).encode())  # NaN/Infinity in evidence spelt the wire way
            if self._queue and self._queue[0] is body:  # not dropped meanwhile by a full queue
                self._queue.popleft()
            if ok:
                self.delivered += 1
            else:
                self.failed += 1

    async def _deliver(self, body: bytes) -> bool:
        delay = self.retry.backoff
        for attempt in range(1, self.retry.attempts + 1):
            try:
                status = await asyncio.to_thread(_post, self.url, body, self.retry.timeout)
                problem = f"HTTP {status}"
            except (OSError, ValueError) as e:  # refused, reset, timed out, bad answer
                status, problem = 0, type(e).__name__ + (f": {e}" if str(e) else "")
            if 200 <= status < 300:
                return True
            if status and not _retryable(status):
                hint = "; redirects are not followed, give the final URL" if 300 <= status < 400 else ""
                log.warning("webhook %s refused an alert (%s%s); not retrying", redacted(self.url), problem, hint)
                return False
            if attempt < self.retry.attempts:
                log.info("webhook %s: %s; retrying in %.1f s", redacted(self.url), problem, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry.backoff_max)
        log.warning(
            "webhook %s: gave up on an alert after %d attempts (%s)", redacted(self.url), self.retry.attempts, problem
        )
        return False


def webhook_sender(config: ServerConfig) -> WebhookSender | None:
    """The sender ``config`` asks for (``None`` without ``webhook_url``)."""
    if config.webhook_url is None:
        return None
    # A link to the run's page when the bind address is one a receiver's reader can open.
    page = None if config.host in ("0.0.0.0", "::") or config.port == 0 else f"http://{config.host}:{config.port}"
    return WebhookSender(
        config.webhook_url,
        config.webhook_min_severity,
        page_url=page,
        retry=RetryPolicy(timeout=config.webhook_timeout),
    )
