"""A server that accepts TCP and never answers, answers slowly, or stops reading: training never waits.

The per-step host cost of the callback is measured on every step; its maximum
is a hang detector with a generous bound (``HANG``), not a performance target.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fittools import Pace, TimedMonitor, data, tiny_model
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from gradwatch.protocol import TRAINER_PATH, Welcome

HANG = 0.5
STEPS = 160  # 20 epochs of 8 steps at 10 ms


def fit(url: str, **kwargs: Any) -> tuple[TimedMonitor, float]:
    x, y = data(64)
    model = tiny_model()
    mon = TimedMonitor(server=url, token="t" * 32, **kwargs)
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model.fit(x, y, batch_size=8, epochs=STEPS // 8, verbose=0, callbacks=[mon, Pace(0.01, lambda: False)])
        mon.close()  # what interpreter exit does: bounded by flush_timeout (fit itself never waits)
    elapsed = time.monotonic() - started
    assert int(model.optimizer.iterations.numpy()) == STEPS
    return mon, elapsed


def sender_ends(mon: TimedMonitor, timeout: float) -> bool:
    assert mon.session is not None
    thread = mon.session.transport._thread
    assert thread is not None
    thread.join(timeout)
    return not thread.is_alive()


@contextlib.contextmanager
def blackhole() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP listener that accepts every connection and never reads or writes a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for s in accepted:
            s.close()


@contextlib.contextmanager
def fake_server(handler: Any, delay_upgrade: float = 0.0, rcvbuf: int | None = None) -> Iterator[str]:
    """A websocket server on loopback running ``handler(connection)``; optionally slow to upgrade."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf is not None:  # a small receive window so a server that stops reading stalls the sender quickly
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def process_request(connection: ServerConnection, request: Any) -> None:
        time.sleep(delay_upgrade)
        return None

    server = serve(handler, sock=sock, process_request=process_request, max_queue=1, compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.timeout(90)
def test_server_that_never_answers():
    with blackhole() as (url, accepted):
        mon, elapsed = fit(url, flush_timeout=1.0)
        assert accepted, "the trainer never tried to connect"
    assert mon.worst < HANG, f"a step waited {mon.worst:.3f} s in the callback"
    # 160 paced steps ≈ 2-4 s, plus at most flush_timeout (1 s) + 2 s join at close()
    assert elapsed < 30
    assert sender_ends(mon, 6.0)  # a pending connect gives up after its 5 s open timeout
    assert mon.session is not None and mon.session.transport.run_id is None


@pytest.mark.timeout(90)
def test_server_that_answers_slowly():
    frames: list[dict[str, Any]] = []

    def handler(ws: ServerConnection) -> None:
        hello = json.loads(ws.recv())
        time.sleep(1.0)  # the welcome comes late
        ws.send(Welcome(run_id=1).model_dump_json())
        with contextlib.suppress(Exception):
            while True:
                frames.append(json.loads(ws.recv()))
                time.sleep(0.2)  # and it reads slowly
        assert hello["type"] == "hello"

    with fake_server(handler, delay_upgrade=1.5) as url:
        mon, elapsed = fit(url, flush_timeout=2.0)
    assert mon.worst < HANG, f"a step waited {mon.worst:.3f} s in the callback"
    assert elapsed < 30
    assert "steps" in [f["type"] for f in frames]  # it did get through, slowly (after step 0's probe)
    assert sender_ends(mon, 3.0)


def congested_connect(url: str, **kwargs: Any) -> Any:
    """The transport's own ``connect``, over a socket with a tiny send buffer (a congested link)."""
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.settimeout(kwargs.get("open_timeout", 5.0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(None)
    kwargs.pop("proxy", None)
    return connect(url, sock=sock, **kwargs)


@pytest.mark.timeout(90)
def test_server_that_stops_reading_cannot_hold_on_train_end():
    release = threading.Event()

    def handler(ws: ServerConnection) -> None:
        ws.recv()
        ws.send(Welcome(run_id=1).model_dump_json())
        release.wait(60)  # never reads again: its receive window fills, the trainer's send() blocks

    with fake_server(handler, rcvbuf=4096) as url:
        try:
            mon, elapsed = fit(url, flush_timeout=1.0, transport_options={"connect_fn": congested_connect})
            assert mon.worst < HANG, f"a step waited {mon.worst:.3f} s in the callback"
            assert elapsed < 30
            assert mon.session is not None
            assert mon.session.transport.sent < STEPS  # the sender really was stuck in send()
            # close() gave up after flush_timeout and cut the socket: the sender thread is gone
            assert sender_ends(mon, 3.0)
        finally:
            release.set()


def test_trainer_path_is_the_protocol_path():
    from gradwatch.trainer_hooks.session import trainer_ws_url

    assert trainer_ws_url("http://127.0.0.1:1").endswith(TRAINER_PATH)
