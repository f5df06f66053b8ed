"""Trainer websocket refusals: every bad frame closes with a clear reason, stores nothing, harms no one else."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from simtrainer import (
    closed_with,
    hang_up,
    hello,
    open_trainer,
    record,
    recv_json,
    run,
    send_steps,
    start_trainer,
    taken,
)
from websockets.exceptions import ConnectionClosed

from gradwatch.protocol import MAX_FRAME_BYTES, PROTOCOL_VERSION, CloseCode, dumps


def runs(srv) -> list[dict]:
    return httpx.get(srv.url + "/api/runs", headers=srv.headers, timeout=5).json()


@pytest.mark.parametrize(
    ("first", "code", "needle"),
    [
        (hello(protocol=PROTOCOL_VERSION + 1), CloseCode.PROTOCOL_MISMATCH, f"protocol version {PROTOCOL_VERSION + 1}"),
        (hello(protocol=0), CloseCode.PROTOCOL_MISMATCH, f"this server speaks {PROTOCOL_VERSION}"),
        ({"type": "hello", "protocol": 99, "whatever": True}, CloseCode.PROTOCOL_MISMATCH, "99"),
        ({"type": "hello"}, CloseCode.PROTOCOL_MISMATCH, "None"),
        ("{this is not json", CloseCode.BAD_MESSAGE, "malformed JSON"),
        ("[1, 2, 3]", CloseCode.BAD_MESSAGE, "hello"),
        ({"type": "steps", "records": [record(0)]}, CloseCode.BAD_MESSAGE, "'steps'"),
        ({**hello(), "variables": "dense"}, CloseCode.BAD_MESSAGE, "variables"),
        (hello(run_name=""), CloseCode.BAD_MESSAGE, "run_name"),
        (hello(clip={"mode": "sideways"}), CloseCode.BAD_MESSAGE, "clip.mode"),
        (hello(surprise=1), CloseCode.BAD_MESSAGE, "surprise"),
    ],
)
def test_bad_hello(shared_server, first, code, needle):
    srv = shared_server

    async def body():
        before = len(runs(srv))
        ws = await open_trainer(srv.trainer_url, srv.token)
        await ws.send(first if isinstance(first, str) else dumps(first))
        got = await closed_with(ws)
        return before, got

    before, (got_code, reason) = run(body())
    assert got_code == code
    assert needle in reason
    assert len(reason.encode()) <= 123
    assert len(runs(srv)) == before  # no run created


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("{nope", "bad message"),
        ('{"type": "explode"}', "explode"),
        (dumps({"type": "steps", "records": []}), "records"),
        (dumps({"type": "steps", "records": [{**record(5), "step": "five"}]}), "step"),
        (dumps({"type": "steps", "records": [{**record(5), "step": -1}]}), "step"),
        (dumps({"type": "steps", "records": [record(5, global_norm="nan")]}), "global_norm"),
        (dumps({"type": "steps", "records": [record(5, grad_norm=[1.0])]}), "grad_norm has 1 entries, expected 3"),
        (dumps({"type": "steps", "records": [record(5, grad_nan=[0, 0, 0, 0])]}), "grad_nan"),
        (dumps({"type": "steps", "records": [record(5, bn=[[1.0] * 8])]}), "bn must be 0 rows"),
        (dumps({"type": "steps", "records": [record(5), record(6, clipped="yes")]}), "clipped"),
        (dumps({"type": "ack", "id": 1, "state": "maybe"}), "state"),
        (dumps({"type": "status", "state": "sleeping", "step": 1}), "state"),
        (dumps({"type": "gap", "from_step": 1}), "to_step"),
        (dumps(hello()), "hello"),
        (b"\x00\x01binary", "binary"),
    ],
)
def test_bad_frame_after_hello(shared_server, frame, needle):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        other, other_id = await start_trainer(srv.trainer_url, srv.token, hello("bystander"))
        await send_steps(ws, [record(0), record(1)])
        await ws.send(frame)
        code, reason = await closed_with(ws)
        await send_steps(other, [record(0)])  # the other trainer is unaffected
        metrics = httpx.get(f"{srv.url}/api/runs/{run_id}/metrics", headers=srv.headers, timeout=5).json()
        other_metrics = httpx.get(f"{srv.url}/api/runs/{other_id}/metrics", headers=srv.headers, timeout=5).json()
        status = httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=5).json()["status"]
        await other.close()
        return code, reason, metrics, other_metrics, status

    code, reason, metrics, other_metrics, status = run(body())
    assert code == CloseCode.BAD_MESSAGE, reason
    assert needle in reason, reason
    assert metrics["step"] == [0, 1]  # nothing of the bad frame stored
    assert other_metrics["step"] == [0]
    assert status == "disconnected"


def test_frame_larger_than_limit_is_refused(shared_server):
    srv = shared_server

    async def body():
        ws, _ = await start_trainer(srv.trainer_url, srv.token)
        try:
            await ws.send("x" * (MAX_FRAME_BYTES + 10))
            code, _ = await closed_with(ws)
        except ConnectionClosed as e:  # the refusal may arrive while still sending
            code = e.rcvd.code if e.rcvd else None
        ok, _ = await start_trainer(srv.trainer_url, srv.token)  # server still fine
        await ok.close()
        return code

    assert run(body()) == 1009  # websocket "message too big"


def test_silent_trainer_is_closed_after_hello_timeout(tmp_path):
    from gradwatch.server.config import ServerConfig
    from gradwatch.server.serve import GradwatchServer

    server = GradwatchServer(
        ServerConfig(port=0, db_path=tmp_path / "t.db", token="t" * 32, hello_timeout=0.3, log_level="warning")
    ).start()

    async def body():
        ws = await open_trainer(server.url.replace("http://", "ws://") + "/ws/trainer", "t" * 32)
        return await closed_with(ws)

    try:
        code, reason = run(body())
    finally:
        server.stop()
    assert code == CloseCode.BAD_MESSAGE and "no hello" in reason


def test_reconnect_with_other_variables_is_refused(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        await hang_up(srv, ws, run_id)
        ws2 = await open_trainer(srv.trainer_url, srv.token)
        await ws2.send(dumps(hello(run_id=run_id, variables=["a"])))
        return await closed_with(ws2)

    code, reason = run(body())
    assert code == CloseCode.BAD_MESSAGE and "other variables" in reason


def test_newer_connection_replaces_older_one(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        ws2, again = await start_trainer(srv.trainer_url, srv.token, hello(run_id=run_id))
        code, _ = await closed_with(ws)
        cmd = httpx.post(
            f"{srv.url}/api/runs/{run_id}/commands", json={"type": "pause"}, headers=srv.headers, timeout=5
        ).json()
        msg = await recv_json(ws2)
        await ws2.close()
        return run_id, again, code, cmd, msg

    run_id, again, code, cmd, msg = run(body())
    assert again == run_id and code == 1000
    assert msg["id"] == cmd["id"]


def test_reconnect_during_the_old_connections_teardown_keeps_streaming(shared_server):
    # A trainer whose connection drops reconnects at once (trainer_hooks/transport.py); the server may
    # still be tearing the old connection down, flushing the writer. Here another run's records fill
    # the writer just before the drop, so that flush takes a while; the new connection must come out
    # of it live: its steps taken, its run "running", not closed 1011 or marked disconnected.
    srv = shared_server

    async def body() -> list[tuple[int | None, str, str]]:
        busy, _ = await start_trainer(srv.trainer_url, srv.token, hello("flood"))
        out = []
        for attempt in range(5):
            ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello(f"race-{attempt}"))
            await send_steps(ws, [record(0)])
            for chunk in range(10):
                base = (attempt * 10 + chunk) * 1000
                await send_steps(busy, [record(base + i) for i in range(1000)])
            await ws.close()
            ws2, again = await start_trainer(srv.trainer_url, srv.token, hello(f"race-{attempt}", run_id=run_id))
            assert again == run_id
            await send_steps(ws2, [record(1), record(2)])
            await taken(ws2, timeout=60)
            await asyncio.sleep(0.5)  # stays: the race is over once the teardown ended, which REST does not show
            await send_steps(ws2, [record(3)])
            try:
                await taken(ws2, timeout=60)
                code, reason = None, ""
            except ConnectionClosed as e:
                code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, "")
            status = httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=30).json()["status"]
            out.append((code, reason, status))
            await ws2.close()
            # The flood is drained before the next one: uvicorn pings every 20 s, and the pong queues behind
            # every frame the server has not read yet. Left to pile up over five attempts, that backlog kept the
            # pong late past its 20 s on a loaded machine and the server dropped the flooding connection.
            await taken(busy, timeout=120)
        await busy.close()
        return out

    results = run(body(), timeout=240)
    assert results == [(None, "", "running")] * 5
