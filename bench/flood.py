"""REST latency while one trainer floods the server with frames (issue 17): ``python -m bench.flood [frames]``.

One connection sends ``frames`` one-record steps frames as fast as it can while another client polls
``GET /api/runs`` every 50 ms; prints the worst and the median answer time. The throttle
(``server/throttle.py``) is what keeps the worst case low. A figure, not a test: it depends on the machine.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time

import httpx
from websockets.asyncio.client import connect

from gradwatch.protocol import PROTOCOL_VERSION, dumps

from ._server import BenchServer


def record(step: int) -> dict[str, object]:
    return {
        "step": step,
        "epoch": 0,
        "time": 1.7e9 + step,
        "loss": 1.0,
        "lr": 0.001,
        "global_norm": 1.0,
        "clip_mode": "global_norm",
        "clip_threshold": None,
        "clip_scale": 1.0,
        "clipped": False,
        "clipped_fraction": None,
        "steps_per_sec": 10.0,
        "grad_norm": [1.0, 2.0, 3.0],
        "grad_nan": [0, 0, 0],
        "grad_inf": [0, 0, 0],
        "weight_nonfinite": 0,
        "loss_nonfinite": False,
        "bn": [],
    }


async def flood(ws_url: str, token: str, frames: int) -> None:
    hello = {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "run_name": "flood",
        "variables": ["a", "b", "c"],
        "clip": {"mode": "global_norm", "threshold": None},
    }
    async with connect(
        ws_url + "/ws/trainer",
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        close_timeout=120,
    ) as ws:
        await ws.send(json.dumps(hello))
        await ws.recv()
        for step in range(frames):
            await ws.send(dumps({"type": "steps", "records": [record(step)]}))


def main(argv: list[str] | None = None) -> int:
    frames = int((argv if argv is not None else sys.argv[1:] or ["20000"])[0])
    latencies: list[float] = []
    with BenchServer() as srv:
        headers = {"Authorization": f"Bearer {srv.token}"}
        done = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=srv.url, headers=headers, timeout=120) as client:
                while not done.is_set():
                    t = time.perf_counter()
                    client.get("/api/runs")
                    latencies.append(time.perf_counter() - t)
                    time.sleep(0.05)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            asyncio.run(flood(srv.ws_url, srv.token, frames))
        finally:
            done.set()
            poller.join()
    latencies.sort()
    print(
        f"{frames} frames: GET /api/runs worst {max(latencies):.3f} s, median "
        f"{latencies[len(latencies) // 2]:.3f} s over {len(latencies)} requests"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
