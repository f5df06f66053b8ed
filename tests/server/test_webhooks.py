"""Alert webhooks against a real local HTTP receiver that fails, stalls and recovers (real server process)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from gradwatch.server.alerts.engine import Alert
from gradwatch.server.config import ServerConfig
from gradwatch.server.webhooks import RetryPolicy, WebhookSender
from simtrainer import hello, record, run, send_steps, start_trainer
from waiting import async_wait_until, wait_until

WAIT = 30.0  # upper bound for anything to happen; never a speed claim


class Receiver:
    """A webhook endpoint on a free port. ``script`` says how to answer each request in turn
    (an int status, or ``"stall"``: hold the request until ``release()``, then answer 200); later
    requests get 200. Every request body is kept, with the answer it got."""

    def __init__(self, script: list[int | str] | None = None) -> None:
        self.script = list(script or [])
        self.got: list[tuple[Any, int | str]] = []
        self.stalled = threading.Event()
        self._release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    answer = receiver.script.pop(0) if receiver.script else 200
                    receiver.got.append((body, answer))
                if answer == "stall":
                    receiver.stalled.set()
                    receiver._release.wait(WAIT)
                    answer = 200
                self.send_response(int(answer))
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self._release.set()

    def delivered(self) -> list[Any]:
        with self.lock:
            return [body for body, answer in self.got if answer in (200, "stall")]

    def wait_delivered(self, n: int) -> list[Any]:
        return wait_until(lambda: len(d := self.delivered()) >= n and d, WAIT, message=f"{n} webhook posts delivered")

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(script: list[int | str] | None = None) -> Receiver:
        made.append(Receiver(script))
        return made[-1]

    yield make
    for r in made:
        r.close()


def nan(step: int) -> dict[str, Any]:
    return record(
        step, global_norm="NaN", grad_norm=[1.0, "NaN", 1.0], grad_nan=[0, 2, 0], loss="NaN", loss_nonfinite=True
    )


def nonfinite_states(srv: Any, run_id: int) -> list[str]:
    r = httpx.get(f"{srv.url}/api/runs/{run_id}/alerts", headers=srv.headers, timeout=10)
    return [a["state"] for a in r.json() if a["kind"] == "nonfinite"]


def last_step(srv: Any, run_id: int) -> int | None:
    r = httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=10)
    return r.json()["step"]


def test_fails_stalls_recovers_without_blocking_ingest(gradwatch_server: Any, receiver: Any) -> None:
    hook = receiver([500, 503, "stall"])  # two failures (retried with backoff), then a POST held open
    srv = gradwatch_server(extra_args=["--webhook", hook.url, "--webhook-timeout", "60"])

    async def body() -> tuple[int, int | None]:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("hooked"))
        await send_steps(ws, [record(s) for s in range(5)] + [nan(5), nan(6)])  # raises nonfinite
        assert await asyncio.to_thread(hook.stalled.wait, WAIT), hook.got
        # The receiver holds the third attempt open: ingest and the rules go on regardless.
        await send_steps(ws, [record(s) for s in range(7, 60)])  # clear 50 steps after step 6: resolved at 56
        await asyncio.to_thread(  # the healthy batch is evaluated alone: episode 1 is resolved before the NaN
            wait_until, lambda: nonfinite_states(srv, run_id) == ["resolved"], WAIT, message="episode 1 resolved"
        )
        await send_steps(ws, [nan(60)])  # the condition returns: episode 2 opens (resolved again at 110)
        for s in range(61, 300, 40):
            await send_steps(ws, [record(t) for t in range(s, min(s + 40, 300))])
        stored = await asyncio.to_thread(last_step, srv, run_id)
        queued_while_stalled = len(hook.got)
        hook.release()
        await ws.close()
        return run_id, stored, queued_while_stalled

    run_id, stored, during = run(body())
    assert stored == 299 and during == 3  # everything stored while the POST hung; nothing else sent yet
    raised, resolved, reopened, resolved_again = hook.wait_delivered(4)
    assert [b["alert"]["kind"] for b, _ in hook.got[:3]] == ["nonfinite"] * 3  # the same body, retried
    assert (raised["event"], raised["alert"]["count"], raised["run_name"], raised["run_id"]) == (
        "raised",
        1,
        "hooked",
        run_id,
    )
    assert raised["text"].startswith("gradwatch: CRITICAL nonfinite (dense/bias) raised on run 'hooked'")
    assert raised["alert"]["message"] in raised["text"] and f"/#run={run_id}" in raised["text"]
    assert (resolved["event"], resolved["alert"]["id"], resolved["alert"]["resolved_step"]) == (
        "resolved",
        raised["alert"]["id"],
        56,
    )
    assert resolved["text"].startswith(
        f"gradwatch: CRITICAL nonfinite (dense/bias) resolved on run 'hooked' (#{run_id}) at step 56: "
        "clear since step 6"
    )
    assert (reopened["event"], reopened["alert"]["count"], reopened["alert"]["state"]) == (
        "reopened",
        2,
        "open",
    )
    assert reopened["alert"]["id"] != raised["alert"]["id"] and "episode 2" in reopened["text"]
    assert (resolved_again["event"], resolved_again["alert"]["id"]) == ("resolved", reopened["alert"]["id"])
    assert "secret-path" not in srv.log()  # the webhook's path is a secret: never logged


def test_min_severity_critical_posts_only_critical_alerts(gradwatch_server: Any, receiver: Any) -> None:
    hook = receiver()
    srv = gradwatch_server(extra_args=["--webhook", hook.url, "--webhook-min-severity", "critical"])

    async def body() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("clipped"))
        clipped = [record(s, clip_threshold=0.5, clipped=True, clip_scale=0.1) for s in range(120)]
        for i in range(0, 120, 30):
            await send_steps(ws, clipped[i : i + 30])
        await send_steps(ws, [nan(120)])
        await ws.close()
        return run_id

    run_id = run(body())
    hook.wait_delivered(1)
    alerts = httpx.get(f"{srv.url}/api/runs/{run_id}/alerts", headers=srv.headers, timeout=10).json()
    time.sleep(0.5)  # stays: an absence (no warning posted) needs time in which a post could have come
    posted = {b["alert"]["kind"]: b["alert"]["severity"] for b, _ in hook.got}
    assert "clip_saturated" in {a["kind"] for a in alerts}  # the warning was raised ...
    assert "clip_saturated" not in posted and posted["nonfinite"] == "critical"  # ... but not posted
    assert set(posted.values()) == {"critical"}


def test_a_full_queue_drops_the_oldest_and_a_refusal_is_final(receiver: Any) -> None:
    hook = receiver([400, "stall"])

    def alert(i: int) -> Alert:
        return Alert(1, "nonfinite", "critical", i, i, None, [], {"x": float("nan")}, f"alert {i}", [])

    async def body() -> WebhookSender:
        sender = WebhookSender(hook.url, queue_size=3, retry=RetryPolicy(timeout=30, backoff=0.01))
        sender.start()
        sender.offer(alert(0), "raised", None)  # refused with 400: not retried
        sender.offer(alert(1), "raised", None)  # held by the stall
        assert await asyncio.to_thread(hook.stalled.wait, WAIT)
        for i in range(2, 7):  # 5 more into a queue of 3 (one of them the stalled one): the oldest go
            sender.offer(alert(i), "raised", "r")
        hook.release()
        await async_wait_until(lambda: not sender.pending, WAIT, message="the queue sent")
        await sender.stop()
        return sender

    sender = run(body())
    steps = [b["alert"]["step"] for b, _ in hook.got]
    assert steps == [0, 1, 4, 5, 6] and hook.got[0][1] == 400
    assert hook.got[1][0]["alert"]["evidence"]["x"] == "NaN"  # wire spelling, valid JSON
    assert (sender.delivered, sender.failed, sender.dropped) == (4, 1, 3)


def test_bad_webhook_settings_are_refused_clearly(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"webhook_url 'not a url' is not an http\(s\) URL"):
        ServerConfig(webhook_url="not a url", db_path=tmp_path / "x.db")
    with pytest.raises(ValueError, match="webhook_min_severity='loud'"):
        ServerConfig(webhook_url="http://127.0.0.1:9/x", webhook_min_severity="loud", db_path=tmp_path / "x.db")
    done = subprocess.run(
        [sys.executable, "-m", "gradwatch.cli", "serve", "--webhook", "ftp://h/secret", "--db", str(tmp_path / "y.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "ftp://h/..." in done.stderr and "secret" not in done.stderr


def _alert(i: int) -> Alert:
    return Alert(1, "nonfinite", "critical", i, i, None, [], {}, f"alert {i}", [])


def _deliver_one(url: str, policy: RetryPolicy) -> WebhookSender:
    async def body() -> WebhookSender:
        sender = WebhookSender(url, retry=policy)
        sender.start()
        sender.offer(_alert(0), "raised", None)
        await async_wait_until(lambda: sender.delivered + sender.failed, WAIT, message="one attempt's outcome")
        await sender.stop(grace=0.0)
        return sender

    return run(body())


class _Raw:
    """A TCP receiver with a scripted answer: ``drip`` sends one byte per 0.2 s (for up to WAIT s)."""

    def __init__(self, answer: bytes, drip: bool = False) -> None:
        import socket as socketlib

        self.sock = socketlib.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.requests: list[bytes] = []

        def serve() -> None:
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                with conn:
                    conn.settimeout(WAIT)
                    self.requests.append(conn.recv(65536))
                    try:
                        if drip:
                            end = time.monotonic() + WAIT
                            for byte in answer * 1000:
                                if time.monotonic() > end:
                                    break
                                conn.sendall(bytes([byte]))
                                time.sleep(0.2)  # the drip is the scenario: a peer that answers slowly
                        else:
                            conn.sendall(answer)
                    except OSError:
                        pass

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def test_a_slow_drip_receiver_cannot_hold_delivery_past_the_timeout() -> None:
    drip = _Raw(b"HTTP/1.1 200 OK\r\n", drip=True)  # a byte every 0.2 s: no single read ever times out
    try:
        t0 = time.monotonic()
        sender = _deliver_one(drip.url, RetryPolicy(timeout=1.0, attempts=1))
        assert sender.failed == 1 and sender.delivered == 0
        assert time.monotonic() - t0 < WAIT / 2  # bounded by the POST's timeout, not by the receiver's patience
    finally:
        drip.close()


def test_redirects_are_not_followed() -> None:
    target = _Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    moved = _Raw(f"HTTP/1.1 302 Found\r\nLocation: {target.url}\r\nContent-Length: 0\r\n\r\n".encode())
    try:
        sender = _deliver_one(moved.url, RetryPolicy(timeout=5.0, attempts=1))
    finally:
        moved.close()
        target.close()
    assert sender.failed == 1 and target.requests == []  # no GET (nor POST) to wherever it pointed


def test_credentials_in_the_url_are_sent_as_basic_auth_never_logged(caplog: Any) -> None:
    raw = _Raw(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
    url = raw.url.replace("http://", "http://hook-user:s3cr%40t@")
    try:
        with caplog.at_level("INFO", logger="gradwatch.webhooks"):
            sender = _deliver_one(url, RetryPolicy(timeout=5.0, attempts=2, backoff=0.01))
    finally:
        raw.close()
    assert sender.failed == 1 and len(raw.requests) == 2
    assert b"Authorization: Basic aG9vay11c2VyOnMzY3JAdA==" in raw.requests[0]  # hook-user:s3cr@t
    assert caplog.records and "s3cr" not in caplog.text and "hook-user" not in caplog.text


@pytest.mark.parametrize("bad", ["http://127.0.0.1:9/x\r\nX-Evil: 1", "http://127.0.0.1:9/a b", "http://h/\n"])
def test_control_characters_in_the_url_are_refused(tmp_path: Any, bad: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        ServerConfig(webhook_url=bad, db_path=tmp_path / "x.db")
