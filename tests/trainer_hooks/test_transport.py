"""The trainer's transport when the server is absent: bounded, non-blocking, explicit about loss."""

from __future__ import annotations

import json
import socket
import threading
import time
import warnings
from typing import Any

from gradwatch.trainer_hooks.transport import Transport
from websockets.sync.server import ServerConnection, serve

from gradwatch.protocol import PROTOCOL_VERSION, Ack, ClipSetting, Status, TrainerHello, Welcome


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket closes


def make_transport(max_bytes: int = 1000, url: str | None = None) -> Transport:
    def hello(run_id):
        return TrainerHello(
            type="hello", protocol=PROTOCOL_VERSION, run_name="t", run_id=run_id, variables=["a"], clip=ClipSetting()
        )

    return Transport(
        url or f"ws://127.0.0.1:{closed_port()}/ws/trainer",
        "token",
        hello=hello,
        on_command=lambda m: None,
        encode=lambda p: p,
        max_buffer_bytes=max_bytes,
        connect_timeout=0.5,
    )


def test_put_never_blocks_and_overflow_drops_the_oldest_with_a_gap():
    t = make_transport(max_bytes=1000)
    for step in range(50):
        t.put_record(step, {"step": step}, nbytes=100)
    assert t.dropped == 40
    assert [item.step for item in t.outbox.records] == list(range(40, 50))
    assert t.outbox.gap == [0, 39, 40]


def test_unreachable_server_warns_once_and_close_is_bounded():
    t = make_transport()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.start()
        for step in range(5):
            t.put_record(step, {"step": step}, nbytes=10)
        time.sleep(1.5)  # stays, the scenario: several reconnect attempts happen here
        started = time.monotonic()
        delivered = t.close(timeout=0.5)
        elapsed = time.monotonic() - started
    assert not delivered
    assert elapsed < 3.0
    ours = [w for w in caught if "gradwatch" in str(w.message)]
    assert 1 <= len(ours) <= 2  # one for the outage, one for what could not be delivered
    assert "cannot reach the server" in str(ours[0].message)


def test_status_follows_the_steps_before_it_and_acks_do_not_wait():
    frames: list[dict[str, Any]] = []
    got_all = threading.Event()

    def handler(ws: ServerConnection) -> None:  # a minimal server: welcome, then record what arrives
        json.loads(ws.recv())
        ws.send(Welcome(run_id=1).model_dump_json())
        for raw in ws:
            frames.append(json.loads(raw))
            if frames[-1]["type"] == "status":
                got_all.set()

    with serve(handler, "127.0.0.1", 0, compression=None) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        t = make_transport(max_bytes=10**6, url=f"ws://127.0.0.1:{server.socket.getsockname()[1]}/ws/trainer")
        for step in range(3):
            t.put_record(step, {"step": step}, nbytes=10)
        t.put_control(Status(type="status", state="paused", step=2))
        t.put_control(Ack(type="ack", id=1, state="applied", applied_step=3))
        t.put_record(3, {"step": 3}, nbytes=10)
        t.start()
        assert got_all.wait(10), frames
        assert t.close(5)
        server.shutdown()
    kinds = [f["type"] for f in frames]
    assert kinds.index("ack") < kinds.index("steps")  # a confirmation never waits behind a batch
    before_status = [r["step"] for f in frames[: kinds.index("status")] if f["type"] == "steps" for r in f["records"]]
    assert {0, 1, 2} <= set(before_status)  # "paused at 2" arrives after steps 0..2
