"""The trainer's transport when the server is absent: bounded, non-blocking, explicit about loss."""

from __future__ import annotations

import socket
import time
import warnings

from gradwatch.trainer_hooks.transport import Transport

from gradwatch.protocol import PROTOCOL_VERSION, ClipSetting, TrainerHello


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket closes


def make_transport(max_bytes: int = 1000) -> Transport:
    def hello(run_id):
        return TrainerHello(
            type="hello", protocol=PROTOCOL_VERSION, run_name="t", run_id=run_id, variables=["a"], clip=ClipSetting()
        )

    return Transport(
        f"ws://127.0.0.1:{closed_port()}/ws/trainer",
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
    assert [item.step for item in t._records] == list(range(40, 50))
    assert t._gap == [0, 39, 40]


def test_unreachable_server_warns_once_and_close_is_bounded():
    t = make_transport()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.start()
        for step in range(5):
            t.put_record(step, {"step": step}, nbytes=10)
        time.sleep(1.5)  # several reconnect attempts happen here
        started = time.monotonic()
        delivered = t.close(timeout=0.5)
        elapsed = time.monotonic() - started
    assert not delivered
    assert elapsed < 3.0
    ours = [w for w in caught if "gradwatch" in str(w.message)]
    assert 1 <= len(ours) <= 2  # one for the outage, one for what could not be delivered
    assert "cannot reach the server" in str(ours[0].message)
