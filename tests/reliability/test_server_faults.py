"""Server-side faults with a real ``gradwatch serve``: SIGKILL while streaming, stalled browsers, run identity."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time

import httpx
import pytest
from fittools import get
from simtrainer import (
    closed_with,
    hello,
    open_browser,
    record,
    recv_json,
    recv_until,
    run,
    send_steps,
    start_trainer,
    taken,
)
from waiting import async_wait_until
from websockets.asyncio.client import ClientConnection, connect

from gradwatch.protocol import CloseCode, dumps


@pytest.mark.timeout(60)
def test_sigkill_while_streaming_keeps_the_database_intact(gradwatch_server):
    """kill -9 in the middle of a stream: integrity_check is ok and only the last ~1 s of steps can be missing."""
    srv = gradwatch_server()
    sent_at: dict[int, float] = {}

    async def body() -> tuple[int, float]:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("crash", bn_layers=["bn"]))
        await ws.send(dumps({"type": "gap", "from_step": 0, "to_step": 0, "dropped": 1}))
        step = 1
        killed_at = 0.0
        started = time.monotonic()
        while True:
            now = time.monotonic()
            if now - started > 3.0 and not killed_at:
                srv.kill()  # SIGKILL while frames are in flight and the writer holds unflushed steps
                killed_at = time.monotonic()
                break
            await send_steps(ws, [record(s, n_bn=1) for s in range(step, step + 5)])
            for s in range(step, step + 5):
                sent_at[s] = time.monotonic()
            step += 5
            await asyncio.sleep(0.01)  # a trainer's pace
        return run_id, killed_at

    run_id, killed_at = run(body())
    assert len(sent_at) > 500
    with sqlite3.connect(srv.db) as db:  # before the server reopens it: what the crash left on disk
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {s for (s,) in db.execute("SELECT step FROM steps WHERE run_id = ?", (run_id,))}
    srv.start()
    steps = get(srv, f"/api/runs/{run_id}/metrics")["step"]
    assert set(steps) == stored
    assert steps == list(range(1, len(steps) + 1))  # a prefix: nothing lost in the middle
    missing = [s for s in sent_at if s not in stored]
    assert all(sent_at[s] > killed_at - 1.0 for s in missing), "steps sent more than 1 s before the kill were lost"
    detail = get(srv, f"/api/runs/{run_id}")
    assert detail["status"] == "disconnected" and detail["gaps"] == [{"from_step": 0, "to_step": 0, "dropped": 1}]
    with sqlite3.connect(srv.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.timeout(150)
def test_stalled_browsers_slow_neither_trainers_nor_other_browsers(gradwatch_server):
    # "Never blocks", not "fast enough": no timing is asserted (that belongs in bench/). While two
    # viewers that never read are still connected, every frame the trainers sent is taken and REST
    # answers; a server whose ingest waited for its viewers would hang there until the bound.
    srv = gradwatch_server()
    n_vars = 2000  # ~50 KB per steps message: the stalled viewers' sockets fill within the first frames
    names = [f"layer{i}/kernel" for i in range(n_vars)]
    # The first frames carry 40 records each (~0.9 MB): they fill the stalled viewers' socket buffers at once.
    # Up to `held` frames stay below viewer_queue_size (1000): the stalled viewers are still connected there.
    # Then more single-record frames than that: their queues overflow and they are closed.
    big, held, frames = 12, 400, 1112

    async def stalled_viewer() -> ClientConnection:
        # A viewer that never reads: a tiny receive buffer, and the client stops reading once a message is queued.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
        # No keepalive pings: their pongs wait behind the unread frames, and after 20 s the client
        # would give up on its own (no close frame) on a slow machine.
        return await connect(
            srv.browser_url,
            sock=sock,
            max_queue=1,
            compression=None,
            ping_interval=None,
            additional_headers={"Cookie": f"gradwatch_token={srv.token}"},
        )

    async def body() -> tuple[list[int | None], int, list[int]]:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("busy", variables=names))
        other, other_id = await start_trainer(srv.trainer_url, srv.token, hello("other"))
        stalled = [await stalled_viewer() for _ in range(2)]
        # Takes frames off the socket as they come, even while this loop is busy sending.
        fast = await open_browser(srv.browser_url, srv.token, max_queue=None)
        for b in (*stalled, fast):
            await b.send(dumps({"type": "subscribe", "run_id": run_id}))
        await recv_until(fast, "runs")
        got = 0

        async def read_fast() -> None:
            nonlocal got
            while got < frames:
                if (await recv_json(fast, timeout=60))["type"] == "steps":
                    got += 1

        async def send(steps: range) -> None:
            for step in steps:
                # A viewer that keeps up is one within a few hundred frames of the trainer
                # (the server drops it at viewer_queue_size = 1000): on a loaded machine this
                # loop could otherwise outrun its own reader, which shares the loop.
                while step - got > 200:
                    await asyncio.sleep(0.005)
                if step < big:
                    await send_steps(ws, [record(step * 40 + i, n_vars=n_vars) for i in range(40)])
                else:
                    await send_steps(ws, [record(big * 40 + step, n_vars=n_vars)])
                await send_steps(other, [record(step)])

        reader = asyncio.create_task(read_fast())
        await send(range(held))
        # the stalled viewers are connected (their queues hold fewer than 1000 frames): nothing waits for them
        await taken(ws, timeout=60)
        await taken(other, timeout=60)
        async with httpx.AsyncClient(headers=srv.headers, timeout=60) as client:
            r = await client.get(f"{srv.url}/api/runs/{other_id}/metrics")
        assert r.status_code == 200
        stored = r.json()["step"]
        await send(range(held, frames))
        await asyncio.wait_for(reader, 60)
        codes = [(await closed_with(b, timeout=60))[0] for b in stalled]
        await fast.close()
        await ws.close()
        await other.close()
        return codes, got, stored

    codes, got, stored = run(body(), timeout=140)
    assert stored == list(range(held))
    assert codes == [CloseCode.TOO_SLOW, CloseCode.TOO_SLOW]
    assert got == frames  # the reading viewer missed nothing


def test_two_trainers_with_the_same_name_are_two_runs(shared_server):
    srv = shared_server

    async def body() -> tuple[int, int]:
        a, id_a = await start_trainer(srv.trainer_url, srv.token, hello("same-name"))
        b, id_b = await start_trainer(srv.trainer_url, srv.token, hello("same-name"))
        await send_steps(a, [record(s, global_norm=1.0) for s in range(5)])
        await send_steps(b, [record(s, global_norm=2.0) for s in range(3)])
        await taken(a)
        await taken(b)
        for ws in (a, b):
            await ws.send(dumps({"type": "status", "state": "finished", "step": 4}))
            await ws.close()
        return id_a, id_b

    id_a, id_b = run(body())
    assert id_a != id_b
    runs = {r["id"]: r for r in get(srv, "/api/runs")}
    assert runs[id_a]["name"] == runs[id_b]["name"] == "same-name"
    assert runs[id_a]["step"] == 4 and runs[id_b]["step"] == 2
    assert get(srv, f"/api/runs/{id_a}/metrics")["global_norm"] == [1.0] * 5  # not mixed
    assert get(srv, f"/api/runs/{id_b}/metrics")["global_norm"] == [2.0] * 3


def test_reconnect_after_restart_continues_the_same_run(gradwatch_server):
    srv = gradwatch_server()

    async def first() -> int:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("continued"))
        await send_steps(ws, [record(s) for s in range(10)])
        await taken(ws)
        return run_id

    run_id = run(first())
    srv.restart()  # SIGTERM, clean shutdown: the trainer's socket is closed under it
    assert get(srv, f"/api/runs/{run_id}")["status"] == "disconnected"

    async def second() -> tuple[int, dict]:
        ws, again = await start_trainer(srv.trainer_url, srv.token, hello("continued", run_id=run_id))
        state = get(srv, f"/api/runs/{again}")
        await send_steps(ws, [record(s) for s in range(10, 20)])
        await ws.send(dumps({"type": "status", "state": "finished", "step": 19}))
        await taken(ws)
        await ws.close()
        return again, state

    again, state = run(second())
    assert again == run_id and state["status"] == "running"
    assert [r["id"] for r in get(srv, "/api/runs")] == [run_id]
    assert get(srv, f"/api/runs/{run_id}/metrics")["step"] == list(range(20))
    assert get(srv, f"/api/runs/{run_id}")["status"] == "finished"


def test_run_that_ends_while_paused(shared_server):
    srv = shared_server

    async def body() -> tuple[int, int, dict, dict]:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("ends-paused"))
        await send_steps(ws, [record(s) for s in range(3)])
        await ws.send(dumps({"type": "status", "state": "paused", "step": 3}))
        await taken(ws)
        paused = get(srv, f"/api/runs/{run_id}")
        cmd = httpx.post(
            f"{srv.url}/api/runs/{run_id}/commands",
            json={"type": "set_clip", "threshold": 1.0},
            headers=srv.headers,
            timeout=5,
        ).json()
        await recv_json(ws)  # the command reached the trainer, which ends before applying it
        await ws.send(dumps({"type": "status", "state": "finished", "step": 3}))
        await taken(ws)
        await ws.close()
        ended = await async_wait_until(  # a run that ends is no longer paused
            lambda: (d := get(srv, f"/api/runs/{run_id}"))["paused"] is False and d, message="the run unpaused"
        )
        return run_id, cmd["id"], paused, ended

    run_id, cmd_id, paused, ended = run(body())
    assert paused["status"] == "paused" and paused["paused"] is True
    assert ended["status"] == "finished" and ended["paused"] is False and ended["step"] == 2
    cmd = next(c for c in get(srv, f"/api/runs/{run_id}/commands") if c["id"] == cmd_id)
    assert cmd["state"] == "rejected" and cmd["detail"] == "run finished before it applied"
    r = httpx.post(f"{srv.url}/api/runs/{run_id}/commands", json={"type": "resume"}, headers=srv.headers, timeout=5)
    assert r.status_code == 409 and "finished" in r.json()["detail"]
