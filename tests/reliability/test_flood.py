"""A trainer flooding the server with frames is throttled (``server/throttle.py``): REST is answered while the
flood is still being taken in, and the flood itself is stored whole."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from readcheck import failed_reads, stored_steps
from simtrainer import hello, record, run, run_status, start_trainer
from waiting import wait_until

from gradwatch.protocol import dumps

FRAMES = 5000  # the default bucket takes 1,000 frames a second after a burst of 1,000


def test_rest_answers_during_a_flood(gradwatch_server: Any) -> None:
    srv = gradwatch_server()

    async def body() -> tuple[int, int, int]:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("flood"))
        frames = [dumps({"type": "steps", "records": [record(s)]}) for s in range(FRAMES)]

        async def flood() -> None:
            for frame in frames:
                await ws.send(frame)

        sender = asyncio.create_task(flood())
        async with httpx.AsyncClient(base_url=srv.url, headers=srv.headers, timeout=120) as client:
            deadline = time.monotonic() + 60
            seen = -1
            while seen < FRAMES // 4 and time.monotonic() < deadline:  # the flood is under way
                runs = (await client.get("/api/runs")).json()
                seen = next(r["step"] for r in runs if r["id"] == run_id) or -1
            runs = (await client.get("/api/runs")).json()  # asked in the middle of the flood
            during = next(r["step"] for r in runs if r["id"] == run_id)
        await sender
        await ws.close()
        return run_id, seen, during

    run_id, seen, during = run(body(), 120)
    assert seen >= FRAMES // 4
    # Answered before the flood was all taken in: the server did not hand its loop to one connection.
    assert during < FRAMES - 1, during
    wait_until(  # the server works through what is queued on the socket, then sees the close
        lambda: run_status(srv, run_id) != "running", 60, interval=0.1, message="the flood's connection to end"
    )
    assert stored_steps(srv, run_id) == list(range(FRAMES))
    assert failed_reads(srv, [run_id]) == []
