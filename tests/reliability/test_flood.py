"""A trainer flooding the server with frames is throttled (``server/throttle.py``): REST is answered while the
flood is still being taken in, and the flood itself is stored whole."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from readcheck import failed_reads, stored_steps
from simtrainer import closed_with, hello, open_browser, record, recv_until, run, send_steps, start_trainer

from gradwatch.protocol import CloseCode, dumps

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
    deadline = time.monotonic() + 60  # the server works through what is queued on the socket, then sees the close
    while httpx.get(f"{srv.url}/api/runs/{run_id}", headers=srv.headers, timeout=10).json()["status"] == "running":
        assert time.monotonic() < deadline, "the flood's connection never ended"
        time.sleep(0.1)
    assert stored_steps(srv, run_id) == list(range(FRAMES))
    assert failed_reads(srv, [run_id]) == []


def test_a_page_that_never_reads_is_closed_by_bytes(gradwatch_server: Any) -> None:
    """A page's queue is bounded in bytes as well as messages: 60 steps messages of ~1 MB (a wide model) are far
    fewer than the 1,000-message bound, but past 32 MiB the page that stopped reading is closed with 4408."""
    srv = gradwatch_server()
    variables = [f"layer{i}/kernel" for i in range(2000)]

    async def body() -> tuple[int | None, str]:
        ws, run_id = await start_trainer(srv.trainer_url, srv.token, hello("wide", variables=variables))
        page = await open_browser(srv.browser_url, srv.token, max_queue=1)
        await recv_until(page, "runs")
        await page.send(dumps({"type": "subscribe", "run_id": run_id}))
        await recv_until(page, "run")
        for first in range(0, 60 * 50, 50):  # the page reads nothing from here on
            await send_steps(ws, [record(s, n_vars=len(variables)) for s in range(first, first + 50)])
        await ws.close()
        return await closed_with(page, timeout=60)

    code, reason = run(body(), 120)
    # The 4408 frame sits behind the bytes the page never read, so the page may only see the socket end.
    assert code in (CloseCode.TOO_SLOW, None), (code, reason)
    assert "bytes behind; closing it with 4408" in srv.log()
