"""The browser websocket: hello, run list, subscription, live steps, slow viewers."""

from __future__ import annotations

import asyncio

import pytest
from gradwatch.server.config import ServerConfig
from gradwatch.server.serve import GradwatchServer
from simtrainer import (
    closed_with,
    drain,
    hello,
    open_browser,
    record,
    recv_json,
    recv_until,
    run,
    send_steps,
    start_trainer,
)
from websockets.asyncio.client import connect

from gradwatch.protocol import PROTOCOL_VERSION, CloseCode, dumps, parse_page_message


def test_hello_runs_subscribe_and_live_steps(shared_server):
    srv = shared_server

    async def body():
        wa, run_a = await start_trainer(srv.trainer_url, srv.token, hello("a"))
        b = await open_browser(srv.browser_url, srv.token, origin=srv.url)
        first = await recv_json(b)
        runs = await recv_json(b)
        await b.send(dumps({"type": "hello", "protocol": 3}))
        wb, run_b = await start_trainer(srv.trainer_url, srv.token, hello("b"))
        created = await recv_until(b, "run")
        await b.send(dumps({"type": "subscribe", "run_id": run_a}))
        subscribed = await recv_until(b, "run")
        await send_steps(wb, [record(0)])  # other run: not delivered
        await send_steps(wa, [record(0), record(1, global_norm="NaN")])
        steps = await recv_until(b, "steps")
        # Switch away from run a. The server handles one connection's messages in
        # order, so the reply to the second subscription proves both are in effect
        # (a bare unsubscribe has no reply to wait for).
        await b.send(dumps({"type": "subscribe", "run_id": None}))
        await b.send(dumps({"type": "subscribe", "run_id": run_b}))
        while (await recv_until(b, "run"))["run"]["id"] != run_b:
            pass
        await send_steps(wa, [record(2)])  # the run left behind: not delivered
        await wa.send(dumps({"type": "gap", "from_step": 3, "to_step": 4, "dropped": 2}))
        await send_steps(wb, [record(1)])  # the run now watched: delivered
        after = await drain(b)
        for ws in (b, wa, wb):
            await ws.close()
        return run_a, run_b, first, runs, created, subscribed, steps, after

    run_a, run_b, first, runs, created, subscribed, steps, after = run(body())
    for message in (first, runs, created, subscribed, steps, *after):  # every frame is a typed page message
        parse_page_message(dumps(message))
    assert first == {"type": "hello", "protocol": 3}
    assert runs["type"] == "runs" and run_a in [r["id"] for r in runs["runs"]]
    assert created["run"]["id"] == run_b and created["run"]["status"] == "running"
    assert subscribed["run"]["id"] == run_a
    assert steps["run_id"] == run_a
    assert [r["step"] for r in steps["records"]] == [0, 1]
    assert steps["records"][1]["global_norm"] == "NaN"
    assert len(steps["records"][0]["grad_norm"]) == 3
    # After the switch: nothing of run a, run b's step arrives (run-list updates and alerts go to all).
    data = [m for m in after if m["type"] not in ("run", "alert")]
    assert [(m["type"], m["run_id"], [r["step"] for r in m["records"]]) for m in data] == [("steps", run_b, [1])]


def test_gap_reaches_subscribed_browser(shared_server):
    srv = shared_server

    async def body():
        ws, run_id = await start_trainer(srv.trainer_url, srv.token)
        b = await open_browser(srv.browser_url, srv.token)
        await recv_until(b, "runs")
        await b.send(dumps({"type": "subscribe", "run_id": run_id}))
        await recv_until(b, "run")
        await ws.send(dumps({"type": "gap", "from_step": 3, "to_step": 7, "dropped": 5}))
        gap = await recv_until(b, "gap")
        await b.close()
        await ws.close()
        return run_id, gap

    run_id, gap = run(body())
    assert gap == {"type": "gap", "run_id": run_id, "from_step": 3, "to_step": 7, "dropped": 5}


@pytest.mark.parametrize(
    ("message", "code", "needle"),
    [
        (
            {"type": "hello", "protocol": PROTOCOL_VERSION + 1},
            CloseCode.PROTOCOL_MISMATCH,
            f"protocol version {PROTOCOL_VERSION + 1}",
        ),
        ({"type": "hello", "protocol": "1"}, CloseCode.PROTOCOL_MISMATCH, "'1'"),
        ({"type": "subscribe"}, CloseCode.BAD_MESSAGE, "run_id"),
        ({"type": "subscribe", "run_id": "one"}, CloseCode.BAD_MESSAGE, "run_id"),
        ({"type": "dance"}, CloseCode.BAD_MESSAGE, "dance"),
        ("{not json", CloseCode.BAD_MESSAGE, "malformed JSON"),
    ],
)
def test_bad_browser_messages_close_with_code(shared_server, message, code, needle):
    srv = shared_server

    async def body():
        b = await open_browser(srv.browser_url, srv.token)
        await recv_until(b, "runs")
        await b.send(message if isinstance(message, str) else dumps(message))
        return await closed_with(b)

    got_code, reason = run(body())
    assert got_code == code
    assert needle in reason


@pytest.mark.parametrize(
    "limit",
    [
        {"viewer_queue_size": 50},  # messages
        {"viewer_queue_size": 100_000, "viewer_queue_bytes": 2 << 20},
    ],
)  # bytes
def test_slow_viewer_is_closed_without_slowing_others(tmp_path, limit):
    config = ServerConfig(port=0, db_path=tmp_path / "slow.db", token="t" * 32, log_level="warning", **limit)
    n_vars = 4000
    names = [f"layer{i}/kernel" for i in range(n_vars)]

    async def body(url: str, token: str) -> tuple[int | None, int]:
        ws_url = url.replace("http://", "ws://")
        ws, run_id = await start_trainer(ws_url + "/ws/trainer", token, hello(variables=names))
        slow = await connect(
            ws_url + "/ws/browser",
            max_queue=1,
            compression=None,
            additional_headers={"Cookie": f"gradwatch_token={token}"},
        )
        fast = await open_browser(ws_url + "/ws/browser", token)
        for b in (slow, fast):
            await b.send(dumps({"type": "subscribe", "run_id": run_id}))
        await recv_until(fast, "run")
        received = 0

        async def read_fast() -> None:
            nonlocal received
            while received < 300:
                msg = await recv_json(fast)
                if msg["type"] == "steps":
                    received += 1

        reader = asyncio.create_task(read_fast())
        for step in range(300):
            await send_steps(ws, [record(step, n_vars=n_vars)])
            await asyncio.sleep(0.01)  # a trainer's pace; the fast viewer keeps up with it
        await asyncio.wait_for(reader, 30)
        # The slow one has not read yet; its queue overflowed long ago. It stalls a while longer (as a busy
        # machine may stall it): the close frame must still reach it once it reads (once, the server gave up
        # writing it after 5 s and the viewer waited forever).
        await asyncio.sleep(6)
        code, _ = await closed_with(slow, timeout=30)
        await fast.close()
        await ws.close()
        return code, received

    server = GradwatchServer(config).start()
    try:
        code, received = run(body(server.url, server.token or ""), timeout=90)
    finally:
        server.stop()
    assert code == CloseCode.TOO_SLOW
    assert received == 300
